package analyzer

import (
	"crypto/sha256"
	"fmt"
	"math"
	"net/netip"
	"path"
	"sort"
	"strconv"
	"strings"
	"time"

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

// Profile is what an image declares about itself (from its Dockerfile,
// compose service or Kubernetes workload), as a baseline keeps it
// (kvdoc.SeedProfile; DecodeDeclared derives it from the enricher's
// declared profile). A nil list declares nothing; an empty, non-nil list
// declares "none". Declared behaviour is allowed from the first second,
// and behaviour that contradicts a declaration is scored even while
// learning.
type Profile = kvdoc.SeedProfile

// ProfileFunc returns the declared profile of an image digest, or nil.
// The engine calls it once per new baseline, synchronously.
type ProfileFunc func(imageDigest string) *Profile

// RefProfileFunc returns the profile an event's profile_ref names
// ("<image digest>@<profile version>"), or nil when it is not known (yet).
// The engine calls it synchronously when a container's events name a
// profile it has not applied, again on later events while it returns nil.
type RefProfileFunc func(ref string) *Profile

type peerRule struct {
	prefix netip.Prefix
	port   uint32
}

type seed struct {
	p        *Profile
	ports    map[uint32]bool // proto<<16 | port; proto 0 = any
	peers    []peerRule
	writable []string
	users    map[uint32]bool
}

func compileProfile(p *Profile) *seed {
	if p == nil {
		return nil
	}
	s := &seed{p: p}
	if p.ListenPorts != nil {
		s.ports = map[uint32]bool{}
		for _, lp := range p.ListenPorts {
			num, proto, _ := strings.Cut(lp, "/")
			n, err := strconv.ParseUint(num, 10, 16)
			if err != nil {
				continue
			}
			var pr uint32
			switch strings.ToLower(proto) {
			case "tcp":
				pr = uint32(containv1.Network_PROTOCOL_TCP)
			case "udp":
				pr = uint32(containv1.Network_PROTOCOL_UDP)
			}
			s.ports[pr<<16|uint32(n)] = true
		}
	}
	if p.Peers != nil {
		s.peers = []peerRule{}
		for _, peer := range p.Peers {
			if r, ok := parsePeerRule(peer); ok {
				s.peers = append(s.peers, r)
			}
		}
	}
	if p.WritablePaths != nil {
		s.writable = []string{}
		for _, w := range p.WritablePaths {
			if w = path.Clean(w); strings.HasPrefix(w, "/") {
				s.writable = append(s.writable, w)
			}
		}
	}
	if p.Users != nil {
		s.users = map[uint32]bool{}
		for _, u := range p.Users {
			s.users[u] = true
		}
	}
	return s
}

func parsePeerRule(s string) (peerRule, bool) {
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return peerRule{netip.PrefixFrom(ap.Addr().Unmap(), ap.Addr().Unmap().BitLen()), uint32(ap.Port())}, true
	}
	if a, err := netip.ParseAddr(s); err == nil {
		return peerRule{netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()), 0}, true
	}
	pfx, port := s, uint64(0)
	if i := strings.LastIndexByte(s, ':'); i > 0 && strings.Contains(s[:i], "/") {
		var err error
		if port, err = strconv.ParseUint(s[i+1:], 10, 16); err != nil {
			return peerRule{}, false
		}
		pfx = s[:i]
	}
	p, err := netip.ParsePrefix(pfx)
	if err != nil {
		return peerRule{}, false
	}
	return peerRule{p.Masked(), uint32(port)}, true
}

func (s *seed) allowsPeer(a netip.Addr, port uint32) bool {
	for _, r := range s.peers {
		if r.prefix.Contains(a) && (r.port == 0 || r.port == port) {
			return true
		}
	}
	return false
}

func (s *seed) allowsWrite(p string) bool {
	for _, w := range s.writable {
		if w == "/" || p == w || strings.HasPrefix(p, w+"/") {
			return true
		}
	}
	return false
}

func (s *seed) allowsPort(proto, port uint32) bool {
	return s.ports[proto<<16|port] || s.ports[port]
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

type container struct {
	id     string
	digest string
	ref    string
	base   *Baseline
	procs  map[uint32]string // tgid -> executable
	groups map[string]*group
	lastNs int64
	// group is the container's baseline key from its labels (GroupKey),
	// "" to use its image key.
	group string
	// pod, namespace and labels describe the container for its alerts
	// (from its KIND_CONTAINER event); never scored.
	pod, namespace string
	labels         map[string]string
	// seed is compiled from the profile the container's events name
	// (profile_ref, e.g. its compose service's); it takes precedence over
	// the baseline's image profile. seedRef is that reference.
	seed    *seed
	seedRef string
	// incident is the id of the alert that opened the container's current
	// incident, incidentNs the event time of its latest alert.
	incident   []byte
	incidentNs int64
	// execMono is each process's latest exec (monotonic ns), to tell
	// runc's threads killed by the exec (reported late) from the program.
	execMono map[uint32]uint64
	// sessions are the exec sessions seen (session tgid).
	sessions map[uint32]bool
	// written holds paths the container created, wrote, renamed into
	// place or made executable (drift), bounded by maxWritten.
	written map[string]bool
	// euid is each thread's effective uid after its latest event.
	euid map[uint32]uint32
	// bulk counts destructive file operations per process tree.
	bulk map[uint32]*bulkCounter
	// recent holds each process tree's recent alert reasons, for the
	// incident combination (CombineWindow).
	recent map[uint32][]recentReason
	// seqThreads is each thread's sequence state (seqscore.go): the
	// collector cuts a thread's stream into events, the history carries
	// across the cuts; bounded by maxSeqThreads.
	seqThreads map[uint32]*seqThread
}

type bulkCounter struct {
	start int64
	n     int
	fired bool
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

// SetRefProfiles makes the engine prefer, for each container, the profile
// its events' profile_ref names over its image's (f may be nil: image
// profiles only).
func (e *Engine) SetRefProfiles(f RefProfileFunc) { e.refProfiles = f }

// applyRef compiles the profile ref names into c's seed when it is new and
// known.
func (e *Engine) applyRef(c *container, ref string) {
	if ref == "" || ref == c.seedRef || e.refProfiles == nil {
		return
	}
	if p := e.refProfiles(ref); p != nil {
		c.seed, c.seedRef = compileProfile(p), ref
	}
}

// seedOf is the declared profile c is judged against: the one its events
// name, else its baseline's.
func seedOf(c *container, b *Baseline) *seed {
	if c.seed != nil {
		return c.seed
	}
	return b.seed
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
		b = newBaseline(key, imageLabel(ev, key))
		e.seedBaseline(b, ev.ImageDigest)
		e.images[key] = b
	}
	if c == nil {
		c = e.newContainer(ev)
	}
	c.digest, c.ref, c.base = ev.ImageDigest, ev.ImageRef, b
	return c
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
	c := &container{id: ev.ContainerId, procs: map[uint32]string{}, groups: map[string]*group{},
		sessions: map[uint32]bool{}, written: map[string]bool{}, euid: map[uint32]uint32{}, execMono: map[uint32]uint64{},
		bulk: map[uint32]*bulkCounter{}, recent: map[uint32][]recentReason{}}
	e.containers[ev.ContainerId] = c
	return c
}

func (e *Engine) seedBaseline(b *Baseline, digest string) {
	if e.profiles == nil || digest == "" {
		return
	}
	p := e.profiles(digest)
	if p == nil {
		return
	}
	b.seed = compileProfile(p)
	for _, x := range append(append([]string(nil), p.Entrypoint...), p.Executables...) {
		if strings.HasPrefix(x, "/") {
			b.Exec[x] += 0
		}
	}
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

// advance moves a learning baseline to converged when its window ended.
func (e *Engine) advance(b *Baseline, now int64) {
	if b.FirstNs == 0 || now < b.FirstNs {
		b.FirstNs = now
	}
	if now > b.LastNs {
		b.LastNs = now
	}
	if b.Phase == PhaseLearning && now >= b.FirstNs+int64(e.cfg.LearningWindow) {
		e.converge(b, b.FirstNs+int64(e.cfg.LearningWindow))
	}
}

func (e *Engine) converge(b *Baseline, at int64) {
	b.Phase = PhaseConverged
	b.ConvergedNs = at
	b.Version++
	b.dirty = true
}

// Observe scores one event and returns the alerts it raises (usually
// none). The returned events are new; ev is not modified or retained
// (alerts carry a copy of it).
func (e *Engine) Observe(ev *containv1.Event) []*containv1.Event {
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
		if e.cfg.ExecSessions != ExecSessionsAlert {
			if !first {
				return nil
			}
			return e.raise(c, b, ev)
		}
		learn = false
	}
	var novel bool
	switch body := ev.Body.(type) {
	case *containv1.Event_Exec:
		novel = e.observeExec(c, b, body.Exec, learn)
		if p := body.Exec.Proc; p != nil && ev.MonoNs != 0 {
			if len(c.execMono) >= maxProcs {
				clear(c.execMono)
			}
			c.execMono[p.Tgid] = ev.MonoNs
		}
	case *containv1.Event_Syscall:
		novel = e.observeSyscall(c, b, body.Syscall, learn)
	case *containv1.Event_Network:
		novel = e.observeNetwork(c, b, seedOf(c, b), body.Network, learn)
	case *containv1.Event_File:
		novel = e.observeFile(c, b, seedOf(c, b), body.File, learn, ev.WallNs)
	default:
		e.stats.Invalid++
		return nil
	}
	if proc != nil && proc.Pid != 0 {
		if len(c.euid) >= maxProcs {
			clear(c.euid)
		}
		c.euid[proc.Pid] = proc.Euid
	}
	if session {
		// scored, never learned
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

func (e *Engine) noteNovelty(b *Baseline, novel bool, now int64) {
	b.Observations++
	cc := e.cfg.Convergence
	if cc.NoveltyThreshold <= 0 {
		return
	}
	x := 0.0
	if novel {
		x = 1
	}
	if b.Observations == 1 {
		b.Novelty = x
	} else {
		b.Novelty += e.alpha * (x - b.Novelty)
	}
	if b.Observations >= cc.MinObservations && now-b.FirstNs >= int64(cc.MinDuration) && b.Novelty < cc.NoveltyThreshold {
		e.converge(b, now)
	}
}

// observeProcess keeps the container's process table: a child forked by a
// known process inherits its executable; an exited process is forgotten.
func (e *Engine) observeProcess(c *container, p *containv1.ProcessLifecycle) {
	if p.Proc == nil {
		e.stats.Invalid++
		return
	}
	switch p.Op {
	case containv1.ProcessLifecycle_OP_FORK:
		if exe, ok := c.procs[p.Proc.Tgid]; ok && p.ChildTgid != 0 {
			if len(c.procs) >= maxProcs {
				clear(c.procs)
			}
			c.procs[p.ChildTgid] = exe
		}
	case containv1.ProcessLifecycle_OP_EXIT:
		delete(c.procs, p.Proc.Tgid)
	}
}

// maxProcs bounds a container's process table.
const maxProcs = 4096

// learnKey adds k to m; it reports whether k was new.
func (e *Engine) learnKey(m map[string]uint32, k string) bool {
	if n, ok := m[k]; ok {
		if n < math.MaxUint32 {
			m[k] = n + 1
		}
		return false
	}
	if len(m) >= e.cfg.MaxItems {
		e.stats.Full++
		return false
	}
	m[k] = 1
	return true
}

func (e *Engine) learnU32(m map[uint32]uint32, k uint32) bool {
	if n, ok := m[k]; ok {
		if n < math.MaxUint32 {
			m[k] = n + 1
		}
		return false
	}
	if len(m) >= e.cfg.MaxItems {
		e.stats.Full++
		return false
	}
	m[k] = 1
	return true
}

func (e *Engine) dev(code, subject, msg string, absorb func(), mitre ...string) {
	e.devs = append(e.devs, deviation{code: code, subject: subject, msg: msg, absorb: absorb, mitre: mitre})
}

func learnedOver(b *Baseline) string {
	end := b.ConvergedNs
	if end == 0 {
		end = b.LastNs
	}
	d := time.Duration(end - b.FirstNs).Round(time.Second)
	if d < time.Second {
		d = time.Duration(end - b.FirstNs).Round(time.Millisecond)
	}
	return d.String()
}

// execName is the executable an exec is learned and scored as. A program
// that re-executes itself through /proc/self/exe (busybox does so for each
// applet a shell runs) is named by its real binary's directory and argv[0]:
// busybox's `sleep` is /bin/sleep whether the shell ran /bin/sleep or
// re-executed itself, and `wget` stays distinct from `sleep`.
func execName(x *containv1.Exec) string {
	if x.Filename != "/proc/self/exe" || x.Exe == "" || strings.HasPrefix(x.Exe, "/proc/") {
		return x.Filename
	}
	if len(x.Argv) > 0 {
		if a0 := path.Base(x.Argv[0]); a0 != "" && a0 != "." && a0 != "/" && a0 != path.Base(x.Exe) {
			return path.Join(path.Dir(x.Exe), a0)
		}
	}
	return x.Exe
}

func (e *Engine) observeExec(c *container, b *Baseline, x *containv1.Exec, learn bool) bool {
	if x.Filename == "" {
		e.stats.Invalid++
		return false
	}
	fn := execName(x)
	parent := ""
	var euid uint32
	hasProc := x.Proc != nil
	if hasProc {
		parent = c.procs[x.Proc.Ppid]
		euid = x.Proc.Euid
		if len(c.procs) >= maxProcs {
			clear(c.procs)
		}
		c.procs[x.Proc.Tgid] = fn
	}
	shape := fn + "\x00" + argvShape(x.Argv)
	edge := ""
	if parent != "" {
		edge = parent + "\x00" + fn
	}
	nonRoot := len(b.UIDs) > 0
	if _, ok := b.UIDs[0]; ok {
		nonRoot = false
	}
	hits := classifyExec(x, execInfo{name: fn, parent: parent, written: c.written[fn] || x.Exe != "" && c.written[x.Exe],
		nonRootImage: nonRoot && !learn})
	if learn {
		novel := e.learnKey(b.Exec, fn)
		novel = e.learnKey(b.Argv, shape) || novel
		if edge != "" {
			novel = e.learnKey(b.Edges, edge) || novel
		}
		if hasProc {
			novel = e.learnU32(b.UIDs, euid) || novel
		}
		novel = e.behave(b, fn, hits, true) || novel
		if s := seedOf(c, b); hasProc && s != nil && s.users != nil && !s.users[euid] {
			e.dev(CodeExecUndeclaredUID, strconv.FormatUint(uint64(euid), 10),
				fmt.Sprintf("%q runs as uid %d, which image %s does not declare", fn, euid, b.Image), nil)
		}
		return novel
	}
	if _, ok := b.Exec[fn]; !ok {
		by := ""
		if parent != "" {
			by = fmt.Sprintf(", started by %q", parent)
		}
		e.dev(CodeExecUnseen, fn, fmt.Sprintf("%q was never executed by image %s during learning (learned %d executables over %s)%s",
			fn, b.Image, len(b.Exec), learnedOver(b), by), func() { e.learnKey(b.Exec, fn) })
	} else {
		if _, ok := b.Argv[shape]; !ok {
			e.dev(CodeExecArgv, shape, fmt.Sprintf("%q ran with an unseen command line shape %q", fn, argvShape(x.Argv)),
				func() { e.learnKey(b.Argv, shape) })
		}
		if edge != "" {
			if _, ok := b.Edges[edge]; !ok {
				e.dev(CodeExecEdge, edge, fmt.Sprintf("%q was never started by %q during learning", fn, parent),
					func() { e.learnKey(b.Edges, edge) })
			}
		}
	}
	e.behave(b, fn, hits, false)
	if hasProc {
		if _, ok := b.UIDs[euid]; !ok {
			code, msg := CodeUIDUnseen, fmt.Sprintf("%q runs as uid %d, never seen for image %s", fn, euid, b.Image)
			if euid == 0 {
				code, msg = CodeUIDRoot, fmt.Sprintf("%q runs as root, image %s never ran as root during learning", fn, b.Image)
			}
			e.dev(code, strconv.FormatUint(uint64(euid), 10), msg, func() { e.learnU32(b.UIDs, euid) })
		}
		if s := seedOf(c, b); s != nil && s.users != nil && !s.users[euid] {
			e.dev(CodeExecUndeclaredUID, strconv.FormatUint(uint64(euid), 10),
				fmt.Sprintf("%q runs as uid %d, which image %s does not declare", fn, euid, b.Image), nil)
		}
	}
	return false
}

func syscallName(s *containv1.Syscall) string {
	if s.Name != "" {
		return s.Name
	}
	return "nr:" + strconv.FormatUint(uint64(s.Nr), 10)
}

// kernelSyscalls are entered by the kernel, not asked for by a program:
// restart_syscall resumes a sleep or wait that a stop interrupted
// (SIGSTOP/SIGCONT, a ptrace stop, the cgroup freezer). They say nothing
// about the image, and every release of a quarantined container makes its
// sleeping processes enter restart_syscall: scoring it would re-raise the
// container the responder just released. Learned when seen, never scored.
var kernelSyscalls = map[string]bool{"restart_syscall": true}

// waitSyscalls block until something happens. One that returns an
// ERESTART* code was interrupted (a signal, a stop, the cgroup2 freezer)
// and had been waiting since before: a first use seen that way is a wait
// the container was already in, often since before learning began (the
// collector sees a syscall when it returns), not a new behaviour; every
// release of a sleeping container produces them. Learned, not scored.
var waitSyscalls = map[string]bool{
	"nanosleep": true, "clock_nanosleep": true, "pause": true, "rt_sigsuspend": true, "rt_sigtimedwait": true,
	"wait4": true, "waitid": true, "futex": true, "poll": true, "ppoll": true, "select": true, "pselect6": true,
	"epoll_wait": true, "epoll_pwait": true, "epoll_pwait2": true, "accept": true, "accept4": true,
	"read": true, "recvfrom": true, "recvmsg": true, "msgrcv": true, "semtimedop": true, "io_getevents": true,
}

// interrupted reports whether ret is one of the kernel's ERESTART* codes
// (ERESTARTSYS 512, ERESTARTNOINTR 513, ERESTARTNOHAND 514,
// ERESTART_RESTARTBLOCK 516), which user space never sees.
func interrupted(ret int64) bool { return ret <= -512 && ret >= -516 && ret != -515 }

func (e *Engine) observeSyscall(c *container, b *Baseline, s *containv1.Syscall, learn bool) bool {
	if s.Mode == containv1.Syscall_MODE_SEQUENCE {
		return e.observeSequence(b, c, s.GetProc(), s.Sequence, learn)
	}
	name := syscallName(s)
	if !learn && (kernelSyscalls[name] || waitSyscalls[name] && interrupted(s.Ret)) {
		e.stats.Kernel++
		if !kernelSyscalls[name] && b.Phase == PhaseConverged && e.learnKey(b.Syscalls, name) {
			b.Version++ // a locked baseline learns nothing
			b.dirty = true
		}
		return false
	}
	p := s.Proc
	var prior uint32
	known := false
	if p != nil {
		if prior, known = c.euid[p.Pid]; !known {
			prior, known = c.euid[p.Tgid]
		}
	}
	hits := classifySyscall(s, prior, known)
	act := actor(c, p)
	if learn {
		novel := e.learnKey(b.Syscalls, name)
		return e.behave(b, act, hits, true) || novel
	}
	e.behave(b, act, hits, false)
	if _, ok := b.Syscalls[name]; ok || len(hits) > 0 {
		// Learned, or named by its behaviour.
		return false
	}
	if mitre, ok := sensitiveSyscalls[name]; ok {
		e.dev(CodeSyscallSensitive, name, fmt.Sprintf("sensitive syscall %s, never used by image %s during learning", name, b.Image),
			nil, mitre...)
		return false
	}
	code := CodeSyscallUnseen
	if routineSyscalls[name] {
		code = CodeSyscallRoutine
	}
	e.dev(code, name, fmt.Sprintf("syscall %s was never used by image %s during learning (learned %d syscalls)",
		name, b.Image, len(b.Syscalls)), func() { e.learnKey(b.Syscalls, name) })
	return false
}

func peerAddr(raw []byte) (netip.Addr, bool) {
	switch len(raw) {
	case 16:
		return netip.AddrFrom16([16]byte(raw)).Unmap(), true
	case 4:
		return netip.AddrFrom4([4]byte(raw)), true
	}
	return netip.Addr{}, false
}

func (e *Engine) observeNetwork(c *container, b *Baseline, s *seed, n *containv1.Network, learn bool) bool {
	switch n.Op {
	case containv1.Network_OP_CONNECT:
		a, ok := peerAddr(n.RemoteAddr)
		if !ok {
			e.stats.Invalid++
			return false
		}
		peer := netip.AddrPortFrom(a, uint16(n.RemotePort)).String()
		if s != nil && s.peers != nil && !s.allowsPeer(a, n.RemotePort) && !a.IsLoopback() {
			e.dev(CodePeerUndeclared, peer, fmt.Sprintf("connection to %s, which image %s does not declare as a peer", peer, b.Image), nil)
		}
		hits := classifyNetwork(n)
		act := actor(c, n.Proc)
		if learn {
			novel := e.learnKey(b.Peers, peer)
			return e.behave(b, act, hits, true) || novel
		}
		if _, ok := b.Peers[peer]; !ok && (s == nil || s.peers == nil || !s.allowsPeer(a, n.RemotePort)) {
			e.behave(b, act, hits, false)
			e.dev(CodePeerUnseen, peer, fmt.Sprintf("connection to %s, a peer image %s never connected to during learning (learned %d peers)",
				peer, b.Image, len(b.Peers)), func() { e.learnKey(b.Peers, peer) })
		}
	case containv1.Network_OP_LISTEN, containv1.Network_OP_BIND:
		if n.Op == containv1.Network_OP_BIND && n.Protocol != containv1.Network_PROTOCOL_UDP {
			return false // a TCP server is learned at listen
		}
		if n.LocalPort == 0 {
			return false
		}
		proto := uint32(n.Protocol)
		key := proto<<16 | n.LocalPort
		label := portLabel(key)
		declared := s != nil && s.ports != nil
		if declared && !s.allowsPort(proto, n.LocalPort) {
			e.dev(CodeListenUndeclared, label, fmt.Sprintf("listening on %s, which image %s does not declare", label, b.Image), nil)
		}
		if learn {
			return e.learnU32(b.Ports, key)
		}
		if _, ok := b.Ports[key]; !ok && !(declared && s.allowsPort(proto, n.LocalPort)) {
			e.dev(CodeListenNew, label, fmt.Sprintf("listening on %s, a port image %s never listened on during learning", label, b.Image),
				func() { e.learnU32(b.Ports, key) })
		}
	}
	return false
}

func portLabel(key uint32) string {
	proto := "any"
	switch containv1.Network_Protocol(key >> 16) {
	case containv1.Network_PROTOCOL_TCP:
		proto = "tcp"
	case containv1.Network_PROTOCOL_UDP:
		proto = "udp"
	}
	return strconv.FormatUint(uint64(key&0xffff), 10) + "/" + proto
}

func isWrite(op containv1.File_Op) bool {
	switch op {
	case containv1.File_OP_OPEN_WRITE, containv1.File_OP_CREATE, containv1.File_OP_RENAME,
		containv1.File_OP_UNLINK, containv1.File_OP_CHMOD, containv1.File_OP_CHOWN,
		containv1.File_OP_MKNOD, containv1.File_OP_LINK, containv1.File_OP_SYMLINK,
		containv1.File_OP_TRUNCATE, containv1.File_OP_MKDIR:
		return true
	}
	return false
}

func (e *Engine) observeFile(c *container, b *Baseline, s *seed, f *containv1.File, learn bool, now int64) bool {
	p := f.Path
	if f.Op == containv1.File_OP_RENAME && f.NewPath != "" {
		p = f.NewPath
	}
	if p == "" {
		e.stats.Invalid++
		return false
	}
	refused := e.readonlyRefused(b, f) // named, scored, never learned
	if !refused {
		trackWritten(c, b, f)
	}
	hits := append(classifyFile(f), bulkHit(c, f, now)...)
	act := actor(c, f.Proc)
	if f.Op == containv1.File_OP_OPEN_READ {
		if learn {
			novel := false
			if isSensitiveRead(p) {
				novel = e.learnKey(b.Reads, p)
			}
			return e.behave(b, act, hits, true) || novel
		}
		if _, ok := b.Reads[p]; !ok || len(hits) > 0 {
			e.behave(b, act, hits, false)
		}
		return false
	}
	if !isWrite(f.Op) {
		return false
	}
	// A write below a system directory that no behaviour names more
	// precisely is one of image content.
	declaredOK := s != nil && s.writable != nil && s.allowsWrite(p)
	if len(hits) == 0 && isSystemPath(p) && !strings.HasPrefix(p, "/var/") && !declaredOK {
		hits = []hit{{code: CodeWriteSystem, subject: p, key: path.Dir(p),
			msg: fmt.Sprintf("%s of %s, below a system directory (image content)", strings.ToLower(strings.TrimPrefix(f.Op.String(), "OP_")), p)}}
	}
	novel := e.behave(b, act, hits, learn)
	if strings.HasPrefix(p, "/dev/") || strings.HasPrefix(p, "/proc/") || strings.HasPrefix(p, "/sys/") {
		return novel
	}
	declared := s != nil && s.writable != nil
	if declared && !s.allowsWrite(p) {
		e.dev(CodeWriteUndeclared, pathPrefix(p, 2), fmt.Sprintf("write to %s, outside the volumes image %s declares", p, b.Image), nil)
	}
	pre := pathPrefix(p, 2)
	if refused {
		return novel
	}
	if learn {
		return e.learnKey(b.Writes, pre) || novel
	}
	if _, ok := b.Writes[pre]; ok || (declared && s.allowsWrite(p)) || len(hits) > 0 {
		return false
	}
	e.dev(CodeWriteUnseen, pre, fmt.Sprintf("write to %s under %s, never written by image %s during learning", p, pre, b.Image),
		func() { e.learnKey(b.Writes, pre) })
	return false
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

// rarity lowers the weight of a deviation the image already showed after
// convergence (in any of its containers): 1 the first time, towards 0.5.
func rarity(sightings uint32) float64 {
	return 0.5 + 0.5/(1+float64(sightings)/10)
}

func (e *Engine) raise(c *container, b *Baseline, ev *containv1.Event) []*containv1.Event {
	if e.seenBefore(ev.Id) {
		e.stats.Duplicates++
		return nil
	}
	e.stats.Deviations++
	reasons := make([]*containv1.Reason, 0, len(e.devs))
	miss := 1.0
	top, topScore := 0, -1.0
	for i, d := range e.devs {
		cl := classes[d.code]
		sev := e.scores[d.code]
		r := 1.0
		if b.Phase != PhaseLearning {
			sk := d.code + "\x00" + d.subject
			r = rarity(b.sightings[sk])
			if len(b.sightings) < 4*e.cfg.MaxItems {
				b.sightings[sk]++
			}
		}
		s := sev * r
		miss *= 1 - s
		mitre := cl.mitre
		if len(d.mitre) > 0 {
			mitre = d.mitre
		}
		reasons = append(reasons, &containv1.Reason{Code: d.code, Message: d.msg, Score: round3(s), Mitre: mitre})
		if s > topScore {
			top, topScore = i, s
		}
	}
	score := round3(1 - miss)
	if b.Phase == PhaseConverged {
		for _, d := range e.devs {
			if d.absorb != nil && score < e.cfg.AbsorbBelow {
				d.absorb()
				b.Version++
				b.dirty = true
				e.stats.Absorbed++
			}
		}
	}
	if score < e.cfg.MinAlertScore {
		e.stats.BelowMin++
		return nil
	}
	combined, why := e.combine(c, ev, reasons)
	primary := e.devs[0]
	gk := primary.code + "\x00" + primary.subject
	count := uint64(1)
	if g := c.groups[gk]; g != nil && e.cfg.GroupWindow > 0 {
		d := ev.WallNs - g.start
		if d < 0 {
			d = -d
		}
		if d < int64(e.cfg.GroupWindow) {
			g.suppressed++
			e.stats.Grouped++
			return nil
		}
		count += g.suppressed
		g.start, g.suppressed = ev.WallNs, 0
	} else {
		if len(c.groups) >= 1024 {
			clear(c.groups)
		}
		c.groups[gk] = &group{start: ev.WallNs}
	}
	sort.SliceStable(reasons, func(i, j int) bool { return reasons[i].Score > reasons[j].Score })
	if combined > score {
		// Last: the reasons before it say what happened.
		score = combined
		reasons = append(reasons, &containv1.Reason{Code: CodeIncidentCombine, Message: why, Score: combined})
		e.stats.Combined++
	}
	e.stats.Alerts++
	id := AlertID(ev.Id)
	gap := ev.WallNs - c.incidentNs
	if gap < 0 {
		gap = -gap
	}
	if c.incident == nil || e.cfg.IncidentWindow <= 0 || gap >= int64(e.cfg.IncidentWindow) {
		c.incident = id
	}
	c.incidentNs = max(c.incidentNs, ev.WallNs)
	alert := &containv1.Alert{
		IncidentId:      c.incident,
		Score:           score,
		Reasons:         reasons,
		Rule:            classes[e.devs[top].code].rule,
		Priority:        Priority(score),
		BaselineVersion: strconv.FormatUint(b.Version, 10),
		EvidenceIds:     [][]byte{ev.Id},
		Count:           count,
		Trigger:         proto.Clone(ev).(*containv1.Event),
		Pod:             c.pod,
		Namespace:       c.namespace,
		Labels:          c.labels,
	}
	return []*containv1.Event{{
		Id:            id,
		Host:          ev.Host,
		ContainerId:   ev.ContainerId,
		ContainerName: ev.ContainerName,
		ImageRef:      ev.ImageRef,
		ImageDigest:   ev.ImageDigest,
		MonoNs:        ev.MonoNs,
		WallNs:        ev.WallNs,
		Kind:          containv1.Kind_KIND_ALERT,
		SchemaVersion: containv1.SchemaVersion,
		CgroupId:      ev.CgroupId,
		ProfileRef:    ev.ProfileRef,
		Body:          &containv1.Event_Alert{Alert: alert},
	}}
}

func round3(x float64) float64 { return math.Round(x*1000) / 1000 }

// AlertID derives an alert's id from its trigger's id, so that a replay
// raises alerts with the same ids (and JetStream can de-duplicate them).
func AlertID(trigger []byte) []byte {
	h := sha256.Sum256(append([]byte("contain.alert\x00"), trigger...))
	id := h[:16]
	id[6] = (id[6] & 0x0f) | 0x80
	id[8] = (id[8] & 0x3f) | 0x80
	return id
}
