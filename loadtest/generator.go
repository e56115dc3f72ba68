package loadtest

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	"github.com/containsec/contain/internal/bus"
	"github.com/containsec/contain/internal/metrics"
	"github.com/containsec/contain/internal/syscalls"
	"github.com/containsec/contain/schemas/containv1"
)

// GeneratorConfig configures a Generator: what a fleet of collectors would
// publish to contain.v1.raw.<host>.
type GeneratorConfig struct {
	// Hosts is the number of simulated hosts, each publishing as one
	// collector (its own producer id, batch sequence and subject).
	Hosts int
	// ContainersPerHost is the number of containers on each host.
	ContainersPerHost int
	// Images is the number of distinct images the containers run
	// (container i runs image i mod Images).
	Images int
	// Rate is the target total events per second over all hosts; 0
	// publishes as fast as the bus takes them.
	Rate float64
	// MaxEvents bounds the events published (0: only Duration bounds).
	MaxEvents int64
	// Duration bounds the time spent publishing (0: only MaxEvents bounds).
	Duration time.Duration
	// BatchMaxEvents, FlushInterval, MaxFlushInterval and
	// TargetBatchRate shape batches as the collector's batcher does
	// (collector.batch_max_events, collector.flush_interval,
	// collector.max_flush_interval, collector.target_batch_rate): a batch
	// closes at BatchMaxEvents or when the interval of a bus.FlushPacer
	// ends. MaxFlushInterval 0 keeps FlushInterval.
	BatchMaxEvents   int
	FlushInterval    time.Duration
	MaxFlushInterval time.Duration
	TargetBatchRate  float64
	// ContainerDictionary writes batches as the collector does with
	// collector.container_dictionary (its default): with a container
	// dictionary when that is smaller.
	ContainerDictionary bool
	// DeviateAfter is when, from the start, deviations begin (after the
	// analyzer's learning window); DeviationFraction is the fraction of
	// the events after it that are deviations.
	DeviateAfter      time.Duration
	DeviationFraction float64
	// ProbeEvery marks one event per host and interval as a probe: its id
	// and wall time are passed to Probe, to time its arrival downstream.
	ProbeEvery time.Duration
	// HostPrefix names hosts <prefix>-000, <prefix>-001, ...
	HostPrefix string
	// Seed makes the event mix reproducible.
	Seed uint64
	// PublishTimeout bounds the publication of one batch, retries
	// included (bus.Publish retries transient errors): past it the run
	// fails. 0: 30 s.
	PublishTimeout time.Duration
}

// DefaultGeneratorConfig is 4 hosts × 25 containers over 10 images at
// 10,000 events/s for 30 s.
func DefaultGeneratorConfig() GeneratorConfig {
	return GeneratorConfig{
		Hosts:               4,
		ContainersPerHost:   25,
		Images:              10,
		Rate:                10_000,
		Duration:            30 * time.Second,
		BatchMaxEvents:      1024,
		FlushInterval:       10 * time.Millisecond,
		ContainerDictionary: true,
		DeviateAfter:        5 * time.Second,
		DeviationFraction:   0.0005,
		ProbeEvery:          500 * time.Millisecond,
		HostPrefix:          "load",
		Seed:                1,
	}
}

// Validate reports the first invalid field by its flag name.
func (c GeneratorConfig) Validate() error {
	switch {
	case c.Hosts <= 0:
		return errors.New("loadtest.hosts: must be > 0")
	case c.ContainersPerHost <= 0:
		return errors.New("loadtest.containers: must be > 0")
	case c.Images <= 0:
		return errors.New("loadtest.images: must be > 0")
	case c.Rate < 0:
		return errors.New("loadtest.rate: must be >= 0 (0: as fast as possible)")
	case c.MaxEvents < 0:
		return errors.New("loadtest.events: must be >= 0")
	case c.Duration < 0:
		return errors.New("loadtest.duration: must be >= 0")
	case c.MaxEvents == 0 && c.Duration == 0:
		return errors.New("loadtest.events, loadtest.duration: at least one must bound the run")
	case c.BatchMaxEvents <= 0:
		return errors.New("loadtest.batch_max_events: must be > 0")
	case c.FlushInterval <= 0:
		return errors.New("loadtest.flush_interval: must be > 0")
	case c.MaxFlushInterval < 0 || c.TargetBatchRate < 0:
		return errors.New("loadtest.max_flush_interval, loadtest.target_batch_rate: must be >= 0")
	case c.DeviationFraction < 0 || c.DeviationFraction > 1:
		return fmt.Errorf("loadtest.deviations: %v not in [0,1]", c.DeviationFraction)
	case c.HostPrefix == "" || containv1.SubjectToken(c.HostPrefix) != c.HostPrefix:
		return fmt.Errorf("loadtest.host_prefix: %q must be a NATS subject token", c.HostPrefix)
	}
	return nil
}

// HostName is the name of simulated host i.
func (c GeneratorConfig) HostName(i int) string { return fmt.Sprintf("%s-%03d", c.HostPrefix, i) }

// GeneratorStats is what a Generator published.
type GeneratorStats struct {
	Events     int64 // events published (acknowledged by JetStream)
	Batches    int64
	Bytes      int64 // encoded batch bytes
	Deviations int64 // deviating events among Events
	Containers int64 // KIND_CONTAINER events among Events
	Failed     int64 // events in batches that failed to publish
	Elapsed    time.Duration
}

// Probe receives a probe event's id (canonical UUID text), container and
// wall time.
type Probe func(id, containerID string, wallNs int64)

// Generator publishes raw batches as a fleet of collectors would.
type Generator struct {
	cfg   GeneratorConfig
	js    jetstream.JetStream
	probe Probe

	budget     atomic.Int64 // events still allowed when MaxEvents > 0
	events     atomic.Int64
	batches    atomic.Int64
	bytes      atomic.Int64
	deviations atomic.Int64
	containers atomic.Int64
	failed     atomic.Int64

	// hostJS, when set for a host, publishes that host's batches (each
	// host as its own collector user).
	hostJS map[int]jetstream.JetStream
	// big, when > 0, is the size of host 0's next batch (Oversize).
	big atomic.Int64
	// onDeviation receives each deviation (an attack the analyzer must
	// alert on) as it is generated: WatchDeviations.
	onDeviation func(id string, wallNs int64)
}

// PublishAs makes host i publish through js (e.g. connected with that
// host's collector credentials) instead of the generator's. Call it
// before Run.
func (g *Generator) PublishAs(i int, js jetstream.JetStream) {
	if g.hostJS == nil {
		g.hostJS = map[int]jetstream.JetStream{}
	}
	g.hostJS[i] = js
}

// WatchDeviations passes each deviation's id (canonical UUID text) and
// wall time to f as it is generated, from the hosts' goroutines. Call it
// before Run.
func (g *Generator) WatchDeviations(f func(id string, wallNs int64)) { g.onDeviation = f }

// Oversize makes host 0's next batch n events (beyond BatchMaxEvents and
// ahead of the rate); its events count as published like any other.
func (g *Generator) Oversize(n int) { g.big.Store(int64(n)) }

// NewGenerator makes a generator publishing through js; probe may be nil.
func NewGenerator(cfg GeneratorConfig, js jetstream.JetStream, probe Probe) (*Generator, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if js == nil {
		return nil, errors.New("loadtest: generator needs jetstream")
	}
	g := &Generator{cfg: cfg, js: js, probe: probe}
	g.budget.Store(cfg.MaxEvents)
	return g, nil
}

// Published is the number of events published so far.
func (g *Generator) Published() int64 { return g.events.Load() }

// Run publishes until MaxEvents were published, Duration passed or ctx
// ends, and returns what was published. It fails only when publishing
// failed (the batches are then counted in Failed).
func (g *Generator) Run(ctx context.Context) (GeneratorStats, error) {
	if g.cfg.Duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, g.cfg.Duration)
		defer cancel()
	}
	start := time.Now()
	var wg sync.WaitGroup
	errs := make([]error, g.cfg.Hosts)
	for i := range g.cfg.Hosts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = g.runHost(ctx, i, start)
		}()
	}
	wg.Wait()
	st := GeneratorStats{
		Events:     g.events.Load(),
		Batches:    g.batches.Load(),
		Bytes:      g.bytes.Load(),
		Deviations: g.deviations.Load(),
		Containers: g.containers.Load(),
		Failed:     g.failed.Load(),
		Elapsed:    time.Since(start),
	}
	return st, errors.Join(errs...)
}

// take reserves up to n events of the MaxEvents budget.
func (g *Generator) take(n int) int {
	if g.cfg.MaxEvents <= 0 {
		return n
	}
	for {
		left := g.budget.Load()
		if left <= 0 {
			return 0
		}
		k := min(int64(n), left)
		if g.budget.CompareAndSwap(left, left-k) {
			return int(k)
		}
	}
}

func (g *Generator) runHost(ctx context.Context, idx int, start time.Time) error {
	h := newHostSim(g.cfg, idx, start)
	h.onDeviation = g.onDeviation
	prod := bus.NewProducer(h.name, metrics.StageCollector)
	subject := containv1.RawSubject(h.name)
	perHost := g.cfg.Rate / float64(g.cfg.Hosts)
	js := g.js
	if hjs := g.hostJS[idx]; hjs != nil {
		js = hjs
	}
	timeout := g.cfg.PublishTimeout
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	// The collector's batcher's pacing: the flush interval stretches
	// with the host's rate (bus.FlushPacer).
	pacer := bus.NewFlushPacer(g.cfg.FlushInterval, g.cfg.MaxFlushInterval, g.cfg.TargetBatchRate)
	ticker := time.NewTimer(pacer.Interval(time.Now())) // reset at each end: a ticker of varying period
	defer ticker.Stop()
	var (
		sent      int64
		lastProbe time.Time
		flushDue  bool // the flush interval ended since the last batch
	)
	for {
		want := g.cfg.BatchMaxEvents
		if big := int(g.big.Load()); idx == 0 && big > 0 && g.big.CompareAndSwap(int64(big), 0) {
			want = big
		} else if perHost > 0 {
			due := int64(perHost*time.Since(start).Seconds()) - sent
			// As the collector's batcher: a batch closes at
			// BatchMaxEvents or at the end of the flush interval, not
			// as soon as one event is due (which would size batches by
			// the publish round trip instead).
			if due <= 0 || (due < int64(g.cfg.BatchMaxEvents) && !flushDue) {
				select {
				case <-ctx.Done():
					return nil
				case now := <-ticker.C:
					flushDue = true
					ticker.Reset(pacer.Interval(now))
				}
				continue
			}
			want = int(min(due, int64(g.cfg.BatchMaxEvents)))
		}
		if ctx.Err() != nil {
			return nil
		}
		n := g.take(want)
		if n == 0 {
			return nil
		}
		now := time.Now()
		pacer.Observe(n)
		flushDue = false
		events, devs, ctrs := h.batch(n, now)
		if g.probe != nil && g.cfg.ProbeEvery > 0 && now.Sub(lastProbe) >= g.cfg.ProbeEvery {
			lastProbe = now
			ev := events[len(events)-1]
			g.probe(containv1.FormatID(ev.Id), ev.ContainerId, ev.WallNs)
		}
		b := prod.Batch(events)
		if g.cfg.ContainerDictionary {
			b.CompactIfSmaller() // as the collector's batcher does
		}
		// The collector's batcher gives up on a batch after its context;
		// here the batch must land: publish with a context of its own.
		pctx, cancel := context.WithTimeout(context.Background(), timeout)
		err := bus.Publish(pctx, js, subject, b)
		cancel()
		if err != nil {
			g.failed.Add(int64(len(events)))
			return fmt.Errorf("host %s: %w", h.name, err)
		}
		sent += int64(len(events))
		g.events.Add(int64(len(events)))
		g.batches.Add(1)
		g.bytes.Add(int64(sizeOf(b)))
		g.deviations.Add(int64(devs))
		g.containers.Add(int64(ctrs))
	}
}

// hostSim makes the events of one simulated host.
type hostSim struct {
	cfg        GeneratorConfig
	name       string
	rnd        *rand.Rand
	ids        *containv1.IDGen
	start      time.Time
	containers []*ctrSim
	devSeq     int
	// onDeviation, when set, receives each deviation's id and wall time.
	onDeviation func(id string, wallNs int64)
}

type ctrSim struct {
	id, name  string
	image     int
	cgroupID  uint64
	initPid   uint32
	nextPid   uint32
	announced bool
	// firsts counts the syscalls whose first use was reported: the
	// collector reports each (container, syscall) once, then counts.
	firsts int
	labels map[string]string
}

func newHostSim(cfg GeneratorConfig, idx int, start time.Time) *hostSim {
	h := &hostSim{
		cfg:   cfg,
		name:  cfg.HostName(idx),
		rnd:   rand.New(rand.NewPCG(cfg.Seed, uint64(idx)+1)),
		ids:   containv1.NewIDGen(),
		start: start,
	}
	for c := range cfg.ContainersPerHost {
		var raw [32]byte
		for i := range raw {
			raw[i] = byte(h.rnd.Uint32())
		}
		img := (idx*cfg.ContainersPerHost + c) % cfg.Images
		id := fmt.Sprintf("%x", raw[:])
		h.containers = append(h.containers, &ctrSim{
			id:       id,
			name:     fmt.Sprintf("%s-svc%d-%d", h.name, img, c),
			image:    img,
			cgroupID: 1_000_000 + uint64(idx)*10_000 + uint64(c),
			initPid:  uint32(10_000 + c*100),
			nextPid:  uint32(10_000 + c*100 + 1),
			labels: map[string]string{
				"org.opencontainers.image.ref.name": imageRef(img),
				"io.contain.image.digest":           imageDigest(img),
				"io.kubernetes.pod.name":            fmt.Sprintf("svc%d-%d-7d9f8b6c5-x2k4p", img, c),
				"io.kubernetes.pod.namespace":       "default",
			},
		})
	}
	return h
}

func imageRef(img int) string { return fmt.Sprintf("registry.example.com/shop/svc%d:1.%d.0", img, img) }

// imageDigest is image img's digest: 64 hex digits that look like a
// real one's (uniform from the first), not a number padded with zeros,
// whose 55-byte common prefix made every compare of two digests in the
// stages (the store's dictionaries, the enricher's and analyzer's keys)
// run over it.
func imageDigest(img int) string {
	return fmt.Sprintf("sha256:%x", sha256.Sum256(binary.BigEndian.AppendUint64(nil, uint64(img))))
}

// batch makes n events at wall time now: a container's KIND_CONTAINER
// event comes before its other events.
func (h *hostSim) batch(n int, now time.Time) (events []*containv1.Event, devs, ctrs int) {
	events = make([]*containv1.Event, 0, n)
	deviate := h.cfg.DeviationFraction > 0 && now.Sub(h.start) >= h.cfg.DeviateAfter
	wall := now.UnixNano()
	mono := uint64(now.Sub(h.start).Nanoseconds()) + 1e12
	for len(events) < n {
		c := h.containers[h.rnd.IntN(len(h.containers))]
		env := &containv1.Event{
			Id:            h.ids.Next(),
			Host:          h.name,
			ContainerId:   c.id,
			ContainerName: c.name,
			MonoNs:        mono,
			WallNs:        wall,
			SchemaVersion: containv1.SchemaVersion,
			CgroupId:      c.cgroupID,
		}
		if !c.announced {
			c.announced = true
			env.Kind = containv1.Kind_KIND_CONTAINER
			env.Body = &containv1.Event_Container{Container: &containv1.ContainerInfo{
				Runtime:    "runc",
				CgroupPath: "/" + c.id,
				Bundle:     "/run/containerd/io.containerd.runtime.v2.task/k8s.io/" + c.id,
				InitPid:    c.initPid,
				Labels:     c.labels,
				Pod:        c.labels["io.kubernetes.pod.name"],
				Namespace:  "default",
			}}
			events = append(events, env)
			ctrs++
			continue
		}
		if deviate && h.rnd.Float64() < h.cfg.DeviationFraction {
			h.deviation(env, c)
			devs++
			if h.onDeviation != nil {
				h.onDeviation(containv1.FormatID(env.Id), wall)
			}
		} else {
			h.normal(env, c)
		}
		events = append(events, env)
	}
	return events, devs, ctrs
}

// Per-image vocabulary: what a service container normally does.
var (
	normalExecs = [][]string{
		{"/usr/local/bin/app", "--config", "/etc/app/config.yaml", "--log-level", "info"},
		{"/usr/local/bin/healthcheck", "--url", "http://127.0.0.1:8080/healthz", "--timeout", "2s"},
		{"/usr/bin/logrotate", "-s", "/var/lib/logrotate/status", "/etc/logrotate.d/app"},
		{"/usr/local/bin/worker", "--queue", "orders", "--concurrency", "8"},
	}
	normalSyscalls = namedSyscalls("read", "write", "openat", "close", "futex", "epoll_wait",
		"sendto", "recvfrom", "mmap", "munmap", "fstat", "clock_gettime")
	normalFiles = []string{"/var/log/app/app.log", "/var/lib/app/cache/", "/tmp/app-upload-"}
	normalPorts = []uint32{5432, 6379, 443, 9092}
)

// namedSyscall is a syscall of the build's architecture (internal/syscalls).
type namedSyscall struct {
	nr   uint32
	name string
}

// namedSyscalls numbers names for this architecture, leaving out those it
// lacks (arm64 has no epoll_wait, only epoll_pwait).
func namedSyscalls(names ...string) []namedSyscall {
	var out []namedSyscall
	for _, n := range names {
		if nr, ok := syscalls.Number(n); ok {
			out = append(out, namedSyscall{nr, n})
		}
	}
	return out
}

func peerAddr(img, i int) []byte {
	a := make([]byte, 16)
	a[10], a[11] = 0xff, 0xff
	a[12], a[13], a[14], a[15] = 10, byte(img), byte(i), 10
	return a
}

var localAddr = []byte{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 244, 1, 17}

func (h *hostSim) proc(c *ctrSim, comm string) *containv1.Process {
	return &containv1.Process{
		Pid: c.nextPid, Tgid: c.nextPid, Ppid: c.initPid, NsPid: c.nextPid - c.initPid + 1,
		Uid: 1000, Gid: 1000, Euid: 1000, Comm: comm,
	}
}

func comm(path string) string {
	for i := len(path) - 1; i >= 0; i-- {
		if path[i] == '/' {
			path = path[i+1:]
			break
		}
	}
	if len(path) > 15 {
		path = path[:15]
	}
	return path
}

// normal fills env with behaviour its image shows all the time.
func (h *hostSim) normal(env *containv1.Event, c *ctrSim) {
	r := h.rnd.IntN(100)
	switch {
	case r < 10: // exec
		argv := normalExecs[h.rnd.IntN(len(normalExecs))]
		c.nextPid++
		env.Kind = containv1.Kind_KIND_EXEC
		env.Body = &containv1.Event_Exec{Exec: &containv1.Exec{
			Proc: h.proc(c, comm(argv[0])), Filename: argv[0], Argv: argv, Argc: uint32(len(argv)),
			Cwd: "/srv/app", Exe: argv[0],
		}}
	case r < 30: // fork / exit
		op := containv1.ProcessLifecycle_OP_FORK
		if r%2 == 1 {
			op = containv1.ProcessLifecycle_OP_EXIT
		}
		env.Kind = containv1.Kind_KIND_PROCESS
		env.Body = &containv1.Event_Process{Process: &containv1.ProcessLifecycle{
			Proc: h.proc(c, "app"), Op: op, ChildTgid: c.nextPid + 1,
		}}
	case r < 65: // syscall counts (and first uses)
		s := normalSyscalls[h.rnd.IntN(len(normalSyscalls))]
		mode := containv1.Syscall_MODE_COUNT
		if c.firsts < len(normalSyscalls) {
			s, mode = normalSyscalls[c.firsts], containv1.Syscall_MODE_FIRST
			c.firsts++
		}
		env.Kind = containv1.Kind_KIND_SYSCALL
		env.Body = &containv1.Event_Syscall{Syscall: &containv1.Syscall{
			Proc: h.proc(c, "app"), Mode: mode, Nr: s.nr, Name: s.name, Count: uint64(1 + h.rnd.IntN(5000)),
		}}
	case r < 85: // outbound connections to the image's peers
		i := h.rnd.IntN(len(normalPorts))
		env.Kind = containv1.Kind_KIND_NETWORK
		env.Body = &containv1.Event_Network{Network: &containv1.Network{
			Proc: h.proc(c, "app"), Op: containv1.Network_OP_CONNECT, Protocol: containv1.Network_PROTOCOL_TCP,
			Family: 2, LocalAddr: localAddr, LocalPort: uint32(32768 + h.rnd.IntN(28000)),
			RemoteAddr: peerAddr(c.image, i), RemotePort: normalPorts[i],
		}}
	default: // writes under the image's usual paths
		p := normalFiles[h.rnd.IntN(len(normalFiles))]
		if p[len(p)-1] == '/' || p[len(p)-1] == '-' {
			p += strconv.Itoa(h.rnd.IntN(100000)) + ".dat"
		}
		env.Kind = containv1.Kind_KIND_FILE
		env.Body = &containv1.Event_File{File: &containv1.File{
			Proc: h.proc(c, "app"), Op: containv1.File_OP_OPEN_WRITE, Path: p, Flags: 0o101, Mode: 0o644,
		}}
	}
}

// deviation fills env with behaviour its image never showed: an unseen
// executable from a temporary path, or a connection to an unseen peer.
// Each is distinct, so the analyzer's grouping does not merge them.
func (h *hostSim) deviation(env *containv1.Event, c *ctrSim) {
	h.devSeq++
	c.nextPid++
	if h.devSeq%2 == 0 {
		env.Kind = containv1.Kind_KIND_NETWORK
		remote := []byte{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 203, 0, 113, byte(h.devSeq)}
		env.Body = &containv1.Event_Network{Network: &containv1.Network{
			Proc: h.proc(c, "app"), Op: containv1.Network_OP_CONNECT, Protocol: containv1.Network_PROTOCOL_TCP,
			Family: 2, LocalAddr: localAddr, LocalPort: 40000, RemoteAddr: remote, RemotePort: uint32(4000 + h.devSeq%1000),
		}}
		return
	}
	file := fmt.Sprintf("/tmp/.x%d", h.devSeq)
	env.Kind = containv1.Kind_KIND_EXEC
	env.Body = &containv1.Event_Exec{Exec: &containv1.Exec{
		Proc: h.proc(c, comm(file)), Filename: file, Argv: []string{file, "-c", "203.0.113.7:4444"}, Argc: 3,
		Cwd: "/tmp", Exe: file,
	}}
}

func sizeOf(b *containv1.Batch) int { return proto.Size(b) }
