package analyzer

import (
	"fmt"
	"strings"
	"time"
	"unsafe"

	"google.golang.org/protobuf/proto"

	"github.com/containsec/contain/schemas/containv1"
	"github.com/containsec/contain/schemas/kvdoc"
)

// Phase is a baseline's lifecycle state.
type Phase uint8

// Phases: a baseline learns, converges (deviations are scored, low-score
// ones are still absorbed), and may be locked (nothing is learned).
const (
	PhaseLearning Phase = iota + 1
	PhaseConverged
	PhaseLocked
)

func (p Phase) String() string {
	switch p {
	case PhaseLearning:
		return kvdoc.PhaseLearning
	case PhaseConverged:
		return kvdoc.PhaseConverged
	case PhaseLocked:
		return kvdoc.PhaseLocked
	}
	return "unknown"
}

// ParsePhase is the inverse of Phase.String.
func ParsePhase(s string) (Phase, error) {
	switch s {
	case kvdoc.PhaseLearning:
		return PhaseLearning, nil
	case kvdoc.PhaseConverged:
		return PhaseConverged, nil
	case kvdoc.PhaseLocked:
		return PhaseLocked, nil
	}
	return 0, fmt.Errorf("unknown phase %q", s)
}

// Baseline is the learned behaviour of one image. The engine owns it;
// read it through Engine.Snapshot.
type Baseline struct {
	Key   string
	Image string
	Phase Phase
	// Version counts changes (items learned, lifecycle transitions); it
	// depends only on the events seen, so a replay reproduces it.
	Version      uint64
	FirstNs      int64
	LastNs       int64
	ConvergedNs  int64
	Observations uint64
	// Novelty is the moving average of "this event taught something new".
	Novelty float64

	Exec     map[string]uint32 // executable path
	Argv     map[string]uint32 // path + "\x00" + argv shape
	Edges    map[string]uint32 // parent path + "\x00" + child path
	Syscalls map[string]uint32 // syscall name
	Seq      *SeqModel         // syscall sequence model (sequence mode), seqmodel.go
	Peers    map[string]uint32 // "addr:port" of outbound connections
	Ports    map[uint32]uint32 // protocol<<16 | listen port
	Writes   map[string]uint32 // file-write path prefixes
	Reads    map[string]uint32 // sensitive files read
	UIDs     map[uint32]uint32 // effective uids of execs
	// Behaviours learned: reason code + "\x00" + what did it (the
	// executable, or the caller's) + "\x00" + the behaviour's key.
	Behaviours map[string]uint32

	seed      *seed
	sightings map[string]uint32 // deviations seen after convergence
	dirty     bool
}

func newBaseline(key, image string) *Baseline {
	return &Baseline{
		Key: key, Image: image, Phase: PhaseLearning,
		Exec: map[string]uint32{}, Argv: map[string]uint32{}, Edges: map[string]uint32{},
		Syscalls: map[string]uint32{}, Seq: NewSeqModel(), Peers: map[string]uint32{},
		Ports: map[uint32]uint32{}, Writes: map[string]uint32{}, Reads: map[string]uint32{},
		UIDs: map[uint32]uint32{}, Behaviours: map[string]uint32{}, sightings: map[string]uint32{},
	}
}

// Size is the number of items the baseline holds.
func (b *Baseline) Size() int {
	return len(b.Exec) + len(b.Argv) + len(b.Edges) + len(b.Syscalls) + b.Seq.Len() +
		len(b.Peers) + len(b.Ports) + len(b.Writes) + len(b.Reads) + len(b.UIDs) + len(b.Behaviours)
}

type group struct {
	start      int64
	suppressed uint64
}

// container is one container's state. The id's bytes (idBuf) come
// first, then the fields every event reads, so that the lookup by id
// (which compares the bytes) and the event's first reads touch the same
// few cache lines of one allocation; the maps behind them are made on
// their first write (design 034).
type container struct {
	idBuf  [64]byte
	id     string // in idBuf when it fits
	digest string
	ref    string
	base   *Baseline
	lastNs int64
	// seed is compiled from the profile the container's events name
	// (profile_ref, e.g. its compose service's); it takes precedence over
	// the baseline's image profile. seedRef is that reference.
	seed    *seed
	seedRef string
	// written holds paths the container created, wrote, renamed into
	// place or made executable (drift), bounded by maxWritten.
	written map[string]bool
	// fifos is when each process tree last made a FIFO (fifoRelayHit);
	// nil until one does.
	fifos map[uint32]int64
	// rotated holds logs rotated lately (log path -> event time).
	rotated map[string]int64
	// bulk counts destructive file operations per process tree.
	bulk map[uint32]*bulkCounter
	// procs holds each process's executable and latest exec time (by
	// tgid) and each thread's effective uid after its latest event (by
	// pid): procs.go.
	procs procTable
	// groups are the alert groups (alert.go).
	groups map[string]*group
	// group is the container's baseline key from its labels (GroupKey),
	// "" to use its image key.
	group string
	// pod, namespace and labels describe the container for its alerts
	// (from its KIND_CONTAINER event); never scored.
	pod, namespace string
	labels         map[string]string
	// incident is the id of the alert that opened the container's current
	// incident, incidentNs the event time of its latest alert.
	incident   []byte
	incidentNs int64
	// sessions are the exec sessions seen (session tgid).
	sessions map[uint32]bool
	// scan counts distinct endpoints connected to per process tree.
	scan map[uint32]*scanCounter
	// recent holds each process tree's recent alert reasons, for the
	// incident combination (CombineWindow).
	recent map[uint32][]recentReason
	// seqThreads is each thread's sequence state (seqscore.go): the
	// collector cuts a thread's stream into events, the history carries
	// across the cuts; bounded by maxSeqThreads.
	seqThreads map[uint32]*seqThread
}

// bulkCounter holds the event times of a tree's last bulkThreshold
// destructive operations (a ring) and when it last fired.
type bulkCounter struct {
	ring    [bulkThreshold]int64
	next    int
	firedNs int64
}

type scanCounter struct {
	start     int64
	endpoints map[string]bool
	fired     bool
}

type recentReason struct {
	code  string
	score float64
	ns    int64
}

// Bounds of per-container state.
const (
	maxWritten  = 1024
	maxSessions = 1024
	maxTrees    = 256
)

// maxSeqThreads bounds a container's seqThreads; when full it starts over
// (a thread then scores its next syscalls without their history).
const maxSeqThreads = 4096

// Stats counts what the engine did. Plain counters: the Analyzer exports
// them as metrics.
type Stats struct {
	Events     uint64 // events observed
	Learned    uint64 // events seen while learning
	Scored     uint64 // events scored against a converged or locked baseline
	Late       uint64 // events older than their baseline's convergence, learned
	Ignored    uint64 // kinds the analyzer does not score
	Host       uint64 // events without a container
	Invalid    uint64 // events missing what scoring needs (wall time, body)
	Duplicates uint64 // deviating events seen twice (same id)
	Deviations uint64 // events with at least one deviation
	Grouped    uint64 // deviations grouped into an earlier alert
	BelowMin   uint64 // deviations scoring under MinAlertScore
	Alerts     uint64
	Absorbed   uint64 // deviations learned by a converged baseline
	Full       uint64 // items not learned because a set was full
	Images     uint64 // images refused because MaxImages was reached
	Evicted    uint64 // containers evicted from the state table
	Runtime    uint64 // events of the container runtime itself (runc init), neither learned nor scored
	Counts     uint64 // periodic syscall counts, skipped (their syscalls were reported one by one)
	Kernel     uint64 // kernel-entered syscalls (restart_syscall) and interrupted waits after learning, not scored
	Sessions   uint64 // events of exec sessions not scored as the container's own (analyzer.exec_sessions)
	Combined   uint64 // alerts whose score the incident combination raised
}

type deviation struct {
	code    string
	subject string
	msg     string
	mitre   []string
	absorb  func()
}

// Engine is the pure scoring core: it consumes events one at a time and
// returns the alerts they raise. It does no I/O and is not safe for
// concurrent use. Given the same events in the same order it returns the
// same alerts (alert ids derive from the trigger's id).
type Engine struct {
	cfg         Config
	profiles    ProfileFunc
	refProfiles RefProfileFunc
	images      map[string]*Baseline
	containers  map[string]*container
	seen        map[[16]byte]struct{}
	seenRing    [][16]byte
	seenPos     int
	devs        []deviation
	stats       Stats
	alpha       float64
	// scores are the classes' scores, defaults with overrides.
	scores map[string]float64
	// owned are strings copied out of events (own).
	owned map[string]string
	// keyBuf is scratch for building a baseline key to look up: a
	// lookup of string(keyBuf) allocates nothing.
	keyBuf []byte
}

const dedupSize = 8192

// NewEngine makes an engine; profiles may be nil.
func NewEngine(cfg Config, profiles ProfileFunc) (*Engine, error) {
	if err := cfg.validateEngine(); err != nil {
		return nil, err
	}
	e := &Engine{
		cfg:        cfg,
		profiles:   profiles,
		images:     map[string]*Baseline{},
		containers: map[string]*container{},
		owned:      map[string]string{},
		seen:       make(map[[16]byte]struct{}, dedupSize),
		seenRing:   make([][16]byte, dedupSize),
	}
	if cfg.Convergence.WindowEvents > 0 {
		e.alpha = 1 / float64(cfg.Convergence.WindowEvents)
	}
	over, err := parseClassScores(cfg.ClassScores)
	if err != nil {
		return nil, err
	}
	e.scores = ClassScores()
	for code, v := range over {
		e.scores[code] = v
	}
	return e, nil
}

// Stats returns the counters so far.
func (e *Engine) Stats() Stats { return e.stats }

// ImageKey is the baseline key of an event: its image digest, else its
// image reference, else "container:<id>".
func ImageKey(ev *containv1.Event) string {
	switch {
	case ev.ImageDigest != "":
		return ev.ImageDigest
	case ev.ImageRef != "":
		return ev.ImageRef
	}
	return "container:" + ev.ContainerId
}

func imageLabel(ev *containv1.Event, key string) string {
	if ev.ImageRef != "" {
		return ev.ImageRef
	}
	return key
}

func (e *Engine) container(ev *containv1.Event) *container {
	c := e.containers[ev.ContainerId]
	if c != nil && c.base != nil && c.digest == ev.ImageDigest && c.ref == ev.ImageRef {
		return c
	}
	key := BaselineKey(e.cfg.GroupBy, groupOf(c), ev)
	b := e.images[key]
	if b == nil {
		if len(e.images) >= e.cfg.MaxImages {
			e.stats.Images++
			return nil
		}
		key = strings.Clone(key) // kept: ev may point into a payload
		b = newBaseline(key, strings.Clone(imageLabel(ev, key)))
		e.seedBaseline(b, ev.ImageDigest)
		e.images[key] = b
	}
	if c == nil {
		c = e.newContainer(ev)
	}
	if c.digest != ev.ImageDigest || c.ref != ev.ImageRef {
		// Owned once for all the image's containers: compared at every
		// event, shared copies stay in cache.
		c.digest, c.ref = e.own(ev.ImageDigest), e.own(ev.ImageRef)
	}
	c.base = b
	return c
}

// roomIn readies a container's bounded map for one more key: made on
// its first write (most containers never write most of them, design
// 034), emptied when it holds bound keys.
func roomIn[K comparable, V any](m *map[K]V, bound int) {
	if *m == nil {
		*m = make(map[K]V)
	} else if len(*m) >= bound {
		clear(*m)
	}
}

func groupOf(c *container) string {
	if c == nil {
		return ""
	}
	return c.group
}

func (e *Engine) newContainer(ev *containv1.Event) *container {
	if len(e.containers) >= e.cfg.MaxContainers {
		e.evictContainers(ev.WallNs)
	}
	// The id is kept (ev may point into a payload): in the container's
	// own allocation when it fits, where the lookup compares it.
	c := &container{}
	if n := len(ev.ContainerId); n > 0 && n <= len(c.idBuf) {
		copy(c.idBuf[:], ev.ContainerId)
		c.id = unsafe.String(&c.idBuf[0], n)
	} else {
		c.id = strings.Clone(ev.ContainerId)
	}
	e.containers[c.id] = c
	return c
}

func (e *Engine) evictContainers(now int64) {
	horizon := now - int64(e.cfg.GroupWindow) - int64(time.Hour)
	for id, c := range e.containers {
		if c.lastNs < horizon {
			delete(e.containers, id)
			e.stats.Evicted++
		}
	}
	for id := range e.containers {
		if len(e.containers) < e.cfg.MaxContainers*3/4 {
			break
		}
		delete(e.containers, id)
		e.stats.Evicted++
	}
}

// Observe scores one event and returns the alerts it raises (usually
// none). The returned events are new; ev is not modified or retained
// (alerts carry a copy of it).
func (e *Engine) Observe(ev *containv1.Event) []*containv1.Event {
	out := e.observe(ev)
	for i, al := range out {
		out[i] = ownEvent(al)
	}
	return out
}

// ownEvent is a deep copy of ev that shares no string or byte slice
// with it: ev may point into a message's payload (the analyzer decodes
// with bus.DecodeAliased), and an alert outlives the handler call (kept
// pending while publishing fails, in tests' hands).
func ownEvent(ev *containv1.Event) *containv1.Event {
	data, err := ev.MarshalVT()
	if err != nil {
		return proto.Clone(ev).(*containv1.Event)
	}
	var out containv1.Event
	if err := out.UnmarshalVT(data); err != nil {
		return proto.Clone(ev).(*containv1.Event)
	}
	return &out
}

func (e *Engine) observe(ev *containv1.Event) []*containv1.Event {
	e.stats.Events++
	if ev.Kind == containv1.Kind_KIND_COMMIT {
		return e.observeCommit(ev)
	}
	switch ev.Kind {
	case containv1.Kind_KIND_EXEC, containv1.Kind_KIND_SYSCALL, containv1.Kind_KIND_NETWORK, containv1.Kind_KIND_FILE,
		containv1.Kind_KIND_PROCESS, containv1.Kind_KIND_CONTAINER:
	default:
		e.stats.Ignored++
		return nil
	}
	if ev.ContainerId == "" {
		e.stats.Host++
		return nil
	}
	if ev.WallNs <= 0 || ev.Body == nil {
		e.stats.Invalid++
		return nil
	}
	if ev.Kind == containv1.Kind_KIND_CONTAINER {
		e.containerInfo(ev)
		return nil
	}
	if s := ev.GetSyscall(); s != nil && s.Mode == containv1.Syscall_MODE_COUNT {
		e.stats.Counts++
		return nil
	}
	c := e.container(ev)
	if c == nil {
		return nil
	}
	proc := procOf(ev)
	session := false
	switch proc.GetOrigin() {
	case containv1.Origin_ORIGIN_RUNTIME:
		e.stats.Runtime++
		return nil
	case containv1.Origin_ORIGIN_EXEC_SESSION:
		switch e.cfg.ExecSessions {
		case ExecSessionsIgnore:
			e.stats.Sessions++
			return nil
		case ExecSessionsContainer:
		default:
			session = true
		}
	case containv1.Origin_ORIGIN_UNSPECIFIED:
		// Older collectors: the runtime is told apart by its comm.
		if ev.GetProcess() == nil && e.runtimeProcess(c, ev) {
			e.stats.Runtime++
			return nil
		}
	}
	if p := ev.GetProcess(); p != nil {
		e.observeProcess(c, p)
		return nil
	}
	e.applyRef(c, ev.ProfileRef)
	b := c.base
	if ev.WallNs > c.lastNs {
		c.lastNs = ev.WallNs
	}
	e.advance(b, ev.WallNs)
	learn := false
	switch b.Phase {
	case PhaseLearning:
		learn = true
	case PhaseConverged:
		if ev.WallNs < b.ConvergedNs {
			learn = true
			e.stats.Late++
		}
	}
	e.devs = e.devs[:0]
	if session {
		// Neither learned nor scored as the container's own.
		e.stats.Sessions++
		first := e.noteSession(c, b, ev, proc)
		switch e.sessionPolicy() {
		case ExecSessionsAlert, ExecSessionsBehaviours:
		default:
			if !first {
				return nil
			}
			return e.raise(c, b, ev)
		}
		learn = false
	}
	var novel bool
	if _, isExec := ev.Body.(*containv1.Event_Exec); !isExec {
		novel = e.observeApplet(c, b, proc, learn)
	}
	if m := masqueradeComm(proc); m != nil {
		novel = e.behave(b, actor(c, proc), m, learn) || novel
	}
	switch body := ev.Body.(type) {
	case *containv1.Event_Exec:
		novel = e.observeExec(c, b, body.Exec, learn)
		if p := body.Exec.Proc; p != nil && ev.MonoNs != 0 {
			// The exec time tells runc's threads killed by the exec
			// (reported late) from the program (runtimeProcess).
			c.setExecMono(p.Tgid, ev.MonoNs)
		}
	case *containv1.Event_Syscall:
		novel = e.observeSyscall(c, b, body.Syscall, learn)
	case *containv1.Event_Network:
		novel = e.observeNetwork(c, b, seedOf(c, b), body.Network, learn, ev.WallNs)
	case *containv1.Event_File:
		novel = e.observeFile(c, b, seedOf(c, b), body.File, learn, ev.WallNs)
	default:
		e.stats.Invalid++
		return nil
	}
	if proc != nil && proc.Pid != 0 {
		c.setEuid(proc.Pid, proc.Euid)
	}
	if session {
		// scored, never learned
		if e.sessionPolicy() == ExecSessionsBehaviours {
			e.devs = keepSessionBehaviours(e.devs)
		}
	} else if learn {
		e.stats.Learned++
		if novel {
			b.Version++
			b.dirty = true
		}
		if b.Phase == PhaseLearning {
			e.noteNovelty(b, novel, ev.WallNs)
		}
	} else {
		e.stats.Scored++
	}
	if len(e.devs) == 0 {
		return nil
	}
	return e.raise(c, b, ev)
}

func (e *Engine) seenBefore(id []byte) bool {
	if len(id) != 16 {
		return false
	}
	k := [16]byte(id)
	if _, ok := e.seen[k]; ok {
		return true
	}
	old := e.seenRing[e.seenPos]
	if old != ([16]byte{}) {
		delete(e.seen, old)
	}
	e.seenRing[e.seenPos] = k
	e.seenPos = (e.seenPos + 1) % len(e.seenRing)
	e.seen[k] = struct{}{}
	return false
}
