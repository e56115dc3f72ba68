package collector

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/ringbuf"
	"github.com/cilium/ebpf/rlimit"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/sys/unix"

	"github.com/containsec/contain/internal/bus"
	"github.com/containsec/contain/internal/cgroups"
	"github.com/containsec/contain/internal/metrics"
	"github.com/containsec/contain/schemas/containv1"
)

// Log field keys.
const (
	logHooks = "hooks"
	logErr   = "err"
)

// Drop reasons (contain_dropped_total{stage="collector"} and loss events).
const (
	reasonRingbufFull = "ringbuf_full"
	reasonQueueFull   = "queue_full"
	reasonBatcherFull = "batcher_full"
	reasonDecode      = "decode_error"
	reasonHost        = "host_process"
)

// Kernel loss counter indexes (bpf/common.h enum loss_index).
var kernelLoss = []struct {
	index  uint32
	reason string
}{
	{0, "reserve_failed_exec"},
	{1, "reserve_failed_syscall"},
	{2, "syscall_map_full"},
	{3, "reserve_failed_network"},
	{4, "reserve_failed_file"},
	{5, "reserve_failed_process"},
	{7, "origin_store_failed"},
	{8, "bulk_headroom"},
	{9, "programs_map_full"},
}

const reasonRateLimited = "rate_limited"

// reasonSpoofedLabel counts io.contain.* labels dropped because an
// annotation or image label (not the runtime's state) carried them.
const reasonSpoofedLabel = "untrusted_identity_label"

// Collector reads the kernel's events and publishes them as raw batches.
type Collector struct {
	cfg   Config
	m     *metrics.Metrics
	log   *slog.Logger
	hooks []string

	coll  *ebpf.Collection
	links []link.Link
	rd    *ringbuf.Reader
	rw    *ringWait // nil: the reader blocks in epoll_wait (rd)
	rr    *ringRead // with rw: reads the ring's memory
	// gate and idleGate are the kernel's wake_gate and idle_gate
	// (Config.WakeupCoalesce); nil when every waking record wakes the
	// reader.
	gate, idleGate *ebpf.Variable
	// wakeMask: the record types that wake the reader (wake_types);
	// urgent is set by handle when one was read (reader goroutine only).
	wakeMask uint32
	urgent   bool
	batcher  *bus.Batcher
	ident    *identity
	ids      *containv1.IDGen
	queue    chan []byte
	opts     decodeOptions

	// sens registers containers' sensitive files by identity
	// (sensitive.go); nil when collector.files is off.
	sens *sensitiveInodes

	// Sequence mode (sequence.go); seqRR is nil when it is off.
	seqSel    []selector
	seqRR     *ringRead
	seqActive *ebpf.Variable
	seq       *sequencer
	seqCtrs   map[uint64]*container // selected, by cgroup id
	seqLost   map[uint64]uint64     // sequence-ring losses reported
	seqBroken bool

	// mu serialises handling: the reader goroutine handles records
	// (ringWait) while Run's tickers report counts, losses and held
	// containers.
	mu       sync.Mutex
	stopping atomic.Bool // the reader drains once more and returns

	queueDrops   atomic.Uint64
	batcherDrops atomic.Uint64
	lastLoss     map[string]uint64
	lastCounts   map[uint64]*[syscallMax]uint32
	lastLimited  map[uint64]uint64
	held         map[*container]struct{}
	heldKick     chan struct{} // the first container held: Run starts its hold ticker
	wallOffset   int64         // wall - monotonic, ns

	closeOnce sync.Once
}

// New loads the collector's eBPF programs and attaches them. Events are
// buffered in the kernel ring buffer until Run reads them.
func New(cfg Config, js jetstream.JetStream, m *metrics.Metrics, log *slog.Logger) (*Collector, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := checkPrivileges(); err != nil {
		return nil, err
	}
	if err := cfg.resolveCgroupRoot(log); err != nil {
		return nil, err
	}
	hostCg, err := cgroups.ID(cfg.CgroupRoot)
	if err != nil {
		return nil, fmt.Errorf("collector.cgroup_root: %w", err)
	}
	batcher, err := bus.NewBatcher(js, bus.BatcherConfig{
		Subject:       containv1.RawSubject(cfg.Host),
		Stage:         metrics.StageCollector,
		Host:          cfg.Host,
		QueueLen:      cfg.BatchQueueLen,
		MaxEvents:     cfg.BatchMaxEvents,
		MaxBytes:      cfg.BatchMaxBytes,
		FlushInterval: cfg.FlushInterval,
	}, m, log)
	if err != nil {
		return nil, fmt.Errorf("collector: %w", err)
	}
	_ = rlimit.RemoveMemlock() // only matters on kernels before 5.11

	c := &Collector{
		cfg:         cfg,
		m:           m,
		log:         log,
		batcher:     batcher,
		ids:         containv1.NewIDGen(),
		queue:       make(chan []byte, cfg.QueueLen),
		opts:        decodeOptions{maxArgs: cfg.MaxArgs},
		lastLoss:    map[string]uint64{},
		lastCounts:  map[uint64]*[syscallMax]uint32{},
		lastLimited: map[uint64]uint64{},
		held:        map[*container]struct{}{},
		heldKick:    make(chan struct{}, 1),
	}
	c.seqSel, _ = parseSelectors(cfg.SequenceSelect) // checked by Validate
	c.ident = newIdentity(cgroups.NewResolver(cfg.CgroupRoot), cfg.stateReader())
	if err := c.ident.cgroups.Scan(); err != nil {
		return nil, fmt.Errorf("collector: %w", err)
	}
	if err := c.ident.startEngines(cfg, m, log); err != nil {
		return nil, err
	}
	hostMnt, err := hostMountNS(procRoot)
	if err != nil {
		return nil, fmt.Errorf("collector: %w", err)
	}
	if err := c.load(hostCg, hostMnt); err != nil {
		c.close()
		return nil, err
	}
	if err := c.seedLineage(hostCg, hostMnt); err != nil {
		c.close()
		return nil, err
	}
	if cfg.Files {
		c.sens = newSensitiveInodes(c.coll.Maps["sensitive_inodes"], cfg.SensitiveFiles)
	}
	c.rd, err = ringbuf.NewReader(c.coll.Maps["events"])
	if err != nil {
		c.close()
		return nil, fmt.Errorf("collector: ring buffer reader: %w", err)
	}
	if err := c.pollRing(); err != nil {
		log.Warn("ring buffer not pollable by the runtime; the reader blocks in epoll_wait", logErr, err)
	}
	if err := c.setupSequence(); err != nil {
		c.close()
		return nil, err
	}
	c.wakeMask = wakeTypes(cfg.WakeupKinds)
	if cfg.WakeupCoalesce > 0 {
		c.gate, c.idleGate = c.coll.Variables["wake_gate"], c.coll.Variables["idle_gate"]
		if err := errors.Join(c.gate.Set(uint32(1)), c.idleGate.Set(uint32(1))); err != nil {
			c.close()
			return nil, fmt.Errorf("collector.wakeup_coalesce: the kernel's wakeup gate cannot be written without a system call (mmapped BPF globals need Linux 5.5); set it to 0: %w", err)
		}
	}
	c.updateClock()
	log.Info("collector attached", logHooks, c.hooks, "host_cgroup_id", hostCg, "host_processes", cfg.HostProcesses)
	return c, nil
}

// pollRing sets up the syscall-free reader (ringRead, ringWait); on an
// error the reader uses rd and blocks in epoll_wait.
func (c *Collector) pollRing() error {
	rb := c.coll.Maps["events"]
	rr, err := newRingRead(rb.FD(), int(rb.MaxEntries()))
	if err != nil {
		return err
	}
	rw, err := newRingWait(rb.FD())
	if err != nil {
		rr.close()
		return err
	}
	c.rr, c.rw = rr, rw
	return nil
}

// hook is one program and how to attach it.
type hook struct {
	program string
	name    string                // logged
	need    func(cfg Config) bool // attached only when true; nil: always
	attach  func(p *ebpf.Program) (link.Link, error)
}

// needSysExit: the sys_exit program counts syscalls, reports network
// and file syscalls and writes sequence records.
func needSysExit(c Config) bool {
	return c.Syscalls || c.Network || c.Files || len(c.SequenceSelect) > 0
}

// needExit: the exit program reports exits and counts exit/exit_group
// (which never reach sys_exit).
func needExit(c Config) bool { return c.Processes || c.Syscalls }

// needFork: the fork program passes origins to children (lineage) and
// reports forks when c.Processes.
func needFork(c Config) bool { return true }

func tpBTF(p *ebpf.Program) (link.Link, error) {
	return link.AttachTracing(link.TracingOptions{Program: p, AttachType: ebpf.AttachTraceRawTp})
}

func rawTP(tp string) func(p *ebpf.Program) (link.Link, error) {
	return func(p *ebpf.Program) (link.Link, error) {
		return link.AttachRawTracepoint(link.RawTracepointOptions{Name: tp, Program: p})
	}
}

// hookFamilies are tried in order: the kernel refuses tp_btf as a whole or
// not at all, so each family is loaded and attached together.
var hookFamilies = [][]hook{
	{
		{program: "exec_tp_btf", name: "tp_btf/sched_process_exec", attach: tpBTF},
		{program: "sys_exit_tp_btf", name: "tp_btf/sys_exit", need: needSysExit, attach: tpBTF},
		{program: "fork_tp_btf", name: "tp_btf/sched_process_fork", need: needFork, attach: tpBTF},
		{program: "exit_tp_btf", name: "tp_btf/sched_process_exit", need: needExit, attach: tpBTF},
	},
	{
		{program: "exec_raw_tp", name: "raw_tracepoint/sched_process_exec", attach: rawTP("sched_process_exec")},
		{program: "sys_exit_raw_tp", name: "raw_tracepoint/sys_exit", need: needSysExit, attach: rawTP("sys_exit")},
		{program: "fork_raw_tp", name: "raw_tracepoint/sched_process_fork", need: needFork, attach: rawTP("sched_process_fork")},
		{program: "exit_raw_tp", name: "raw_tracepoint/sched_process_exit", need: needExit, attach: rawTP("sched_process_exit")},
	},
}

// load probes the hook families in order of preference: it loads the
// object with one family's programs only, attaches them and falls back to
// the next family when the kernel refuses.
func (c *Collector) load(hostCg uint64, hostMnt uint32) error {
	class := syscallClasses(c.cfg)
	b2u := func(b bool) uint8 {
		if b {
			return 1
		}
		return 0
	}
	hp := b2u(c.cfg.HostProcesses)
	var rateCost, rateCap uint64
	if c.cfg.RatePerSec > 0 {
		rateCost = uint64(1e9 / c.cfg.RatePerSec)
		rateCap = rateCost * uint64(c.cfg.RateBurst)
	}
	// The sys_enter program skips its own-process check (a helper call
	// per syscall) when the cgroup filter already excludes the collector.
	filterSelf := uint8(1)
	if own, err := ownCgroupID(c.cfg.CgroupRoot); err == nil && own == hostCg && !c.cfg.HostProcesses {
		filterSelf = 0
	}
	var errs []error
family:
	for _, fam := range hookFamilies {
		var hooks []hook
		for _, h := range fam {
			if h.need == nil || h.need(c.cfg) {
				hooks = append(hooks, h)
			}
		}
		spec, err := loadCollector()
		if err != nil {
			return fmt.Errorf("collector: %w", err)
		}
		keep := map[string]bool{}
		for _, h := range hooks {
			keep[h.program] = true
		}
		for name := range spec.Programs {
			if !keep[name] {
				delete(spec.Programs, name)
			}
		}
		spec.Maps["events"].MaxEntries = uint32(c.cfg.RingBufferBytes)
		seqRing := os.Getpagesize() // sequence mode off: never written
		if len(c.cfg.SequenceSelect) > 0 {
			seqRing = c.cfg.SequenceRingBytes
		}
		spec.Maps["seq_events"].MaxEntries = uint32(seqRing)
		for name, v := range map[string]any{
			"host_cgroup_id": hostCg,
			"self_tgid":      uint32(os.Getpid()),
			"host_processes": hp,
			"syscall_class":  class,
			"filter_self":    filterSelf,
			"track_counts":   b2u(c.cfg.Syscalls),
			"track_procs":    b2u(c.cfg.Processes),
			"rate_cost_ns":   rateCost,
			"rate_cap_ns":    rateCap,
			"wake_types":     wakeTypes(c.cfg.WakeupKinds),
			"wake_bytes":     uint64(c.cfg.RingBufferBytes / 4),
			"wake_gated":     uint32(b2u(c.cfg.WakeupCoalesce > 0)),
			"host_mnt_ns":    hostMnt,
			// A quarter of the ring is kept for exec, process and
			// syscall records: a file or network flood cannot fill it.
			"bulk_ring_limit": uint64(c.cfg.RingBufferBytes) * 3 / 4,
			"open_detail":     b2u(!c.cfg.noOpenDetail),
		} {
			if err := spec.Variables[name].Set(v); err != nil {
				return fmt.Errorf("collector: setting %s: %w", name, err)
			}
		}
		coll, err := ebpf.NewCollection(spec)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: loading: %w", hooks[0].name, err))
			continue
		}
		if err := errors.Join(fillSensitiveFiles(coll.Maps["sensitive_files"], c.cfg.SensitiveFiles),
			fillSensitiveNames(coll.Maps["sensitive_names"], c.cfg.SensitiveFiles)); err != nil {
			coll.Close()
			return fmt.Errorf("collector: %w", err)
		}
		var links []link.Link
		var names []string
		for _, h := range hooks {
			l, err := h.attach(coll.Programs[h.program])
			if err != nil {
				for _, l := range links {
					_ = l.Close()
				}
				coll.Close()
				errs = append(errs, fmt.Errorf("attaching %s: %w", h.name, err))
				continue family
			}
			links = append(links, l)
			names = append(names, h.name)
		}
		if len(errs) > 0 {
			c.log.Warn("preferred hooks refused; fell back", logHooks, names, logErr, errors.Join(errs...))
		}
		c.coll, c.links, c.hooks = coll, links, names
		return nil
	}
	return fmt.Errorf("collector: no hooks load: %w", errors.Join(errs...))
}

// seedLineage gives the tasks that ran before the programs were loaded
// their origin (seedOrigins), then lets the kernel take a task it has no
// origin for in a container cgroup for the runtime's.
func (c *Collector) seedLineage(hostCg uint64, hostMnt uint32) error {
	st, err := seedOrigins(c.coll.Maps["origins"], c.coll.Maps["programs"], procRoot, c.cfg.CgroupRoot, hostCg, hostMnt)
	if err != nil {
		return fmt.Errorf("collector: seeding origins: %w", err)
	}
	if st.failed > 0 {
		c.m.Errors.WithLabelValues(metrics.StageCollector, "origin_seed").Add(float64(st.failed))
	}
	if err := c.coll.Variables["lineage_ready"].Set(uint32(1)); err != nil {
		return fmt.Errorf("collector: enabling lineage (mmapped BPF globals need Linux 5.5): %w", err)
	}
	c.log.Info("origins seeded", "processes", st.processes, "tasks", st.tasks, "failed", st.failed)
	return nil
}

// Syscalls the sys_exit program turns into network and file records.
var (
	netSyscalls  = []uint32{42, 43, 49, 50, 288}                                               // connect accept bind listen accept4
	fileSyscalls = []uint32{2, 257, 437, 85, 82, 264, 316, 87, 263, 90, 268, 452, 92, 94, 260, // see handle_file
		133, 259, 86, 265, 88, 266, 76, 77, 83, 258} // mknod mknodat link linkat symlink symlinkat truncate ftruncate mkdir mkdirat
	socketSyscall = uint32(41)
)

// Syscall classes (bpf/common.h CLASS_*).
const (
	classSensitive = 1
	classNet       = 2
	classFile      = 4
	classSocket    = 8
)

// syscallClasses is the kernel's per-syscall table of what to report.
func syscallClasses(cfg Config) [syscallMax]uint8 {
	var class [syscallMax]uint8
	for _, name := range cfg.SensitiveSyscalls {
		nr, _ := syscallNumber(name) // checked by Validate
		class[nr] |= classSensitive
	}
	if cfg.Network {
		for _, nr := range netSyscalls {
			class[nr] |= classNet
		}
	}
	if cfg.Files {
		for _, nr := range fileSyscalls {
			class[nr] |= classFile
		}
	}
	if cfg.Syscalls {
		// Packet and raw sockets: reported as sensitive with their args
		// (the kernel checks family and type; every socket() when socket
		// is itself a sensitive syscall).
		class[socketSyscall] |= classSocket
	}
	return class
}

// sensitivePathLen is the kernel's key size for sensitive_files.
const sensitivePathLen = 64

func fillSensitiveFiles(m *ebpf.Map, paths []string) error {
	for _, p := range paths {
		var key [sensitivePathLen]byte
		copy(key[:], p)
		if err := m.Put(key, uint8(1)); err != nil {
			return fmt.Errorf("sensitive file %q: %w", p, err)
		}
		if leaf, ok := leafFirstKey(p); ok {
			if err := m.Put(leaf, uint8(1)); err != nil {
				return fmt.Errorf("sensitive file %q: %w", p, err)
			}
		}
	}
	return nil
}

// leafFirstKey encodes an absolute path as the kernel's path walk writes
// it: components leaf first, each NUL-terminated ("/etc/shadow" →
// "shadow\x00etc\x00"), NUL-padded; ok is false when it does not fit.
func leafFirstKey(p string) (key [sensitivePathLen]byte, ok bool) {
	parts := strings.Split(strings.Trim(path.Clean(p), "/"), "/")
	off := 0
	for i := len(parts) - 1; i >= 0; i-- {
		if parts[i] == "" || off+len(parts[i])+1 >= sensitivePathLen {
			return key, false
		}
		off += copy(key[off:], parts[i])
		off++ // NUL
	}
	return key, true
}

// ownCgroupID is the cgroup2 id of this process.
func ownCgroupID(root string) (uint64, error) {
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if p, ok := strings.CutPrefix(line, "0::"); ok {
			return cgroups.ID(filepath.Join(root, p))
		}
	}
	return 0, errors.New("no cgroup2 line in /proc/self/cgroup")
}

// Hooks names the kernel hooks in use.
func (c *Collector) Hooks() []string { return append([]string(nil), c.hooks...) }

// Run reads and publishes events until ctx ends, then detaches the
// programs, publishes what was read and returns.
func (c *Collector) Run(ctx context.Context) error {
	defer c.close()
	bctx, bcancel := context.WithCancel(context.WithoutCancel(ctx))
	defer bcancel()
	bdone := make(chan error, 1)
	go func() { bdone <- c.batcher.Run(bctx) }()

	rdone := make(chan struct{})
	go func() {
		defer close(rdone)
		c.readLoop()
	}()

	tick := time.NewTicker(c.cfg.LossInterval)
	defer tick.Stop()
	// The hold ticker runs only while containers are held (heldKick
	// starts it), so an idle collector does not wake every 20 ms.
	holdTick := time.NewTicker(metaRetryEvery)
	defer holdTick.Stop()
	holding := true
	var countC <-chan time.Time
	if c.cfg.Syscalls {
		ct := time.NewTicker(c.cfg.CountInterval)
		defer ct.Stop()
		countC = ct.C
	}
	for {
		select {
		case <-ctx.Done():
			// No new events; then drain what the kernel holds. The reader
			// returns after the records that were in the ring buffer.
			c.detach()
			_ = c.rd.Flush()
			c.stopping.Store(true)
			if c.rw != nil {
				c.rw.interrupt()
			}
		drain:
			for {
				select {
				case rec := <-c.queue:
					c.locked(func() { c.handle(rec) })
				case <-rdone:
					break drain
				}
			}
			c.mu.Lock()
			for len(c.queue) > 0 {
				c.handle(<-c.queue)
			}
			if c.seq != nil {
				c.drainSequence()
				c.seq.flushAll()
			}
			c.reportCounts()
			c.releaseHeld(true)
			c.reportLoss()
			c.mu.Unlock()
			bcancel()
			return <-bdone
		case rec := <-c.queue:
			c.locked(func() {
				c.urgent = false
				c.handleRecord(rec)
				if c.urgent {
					c.batcher.Flush()
				}
			})
		case <-c.heldKick:
			if !holding {
				holdTick.Reset(metaRetryEvery)
				holding = true
			}
		case <-holdTick.C:
			idle := false
			c.locked(func() {
				if len(c.held) > 0 {
					c.releaseHeld(false)
				}
				idle = len(c.held) == 0
			})
			if idle {
				holdTick.Stop()
				holding = false
			}
		case <-countC:
			c.locked(c.reportCounts)
		case <-tick.C:
			c.updateClock()
			c.locked(c.reportLoss)
			c.m.QueueDepth.WithLabelValues(metrics.StageCollector, "ringbuf_reader").Set(float64(len(c.queue)))
		}
	}
}

// locked runs f holding mu.
func (c *Collector) locked(f func()) {
	c.mu.Lock()
	defer c.mu.Unlock()
	f()
}

// wakeTypes is the wake_types bit set of kinds (validated names).
func wakeTypes(kinds []string) uint32 {
	var m uint32
	for _, k := range kinds {
		m |= 1 << recordKinds[k]
	}
	return m
}

// readLoop moves ring-buffer records to the queue and never blocks on it.
// It wakes up at least every PollInterval to read records written
// without a wakeup (see Config.WakeupKinds). It waits in the netpoller
// (ringWait) when the ring buffer's fd can be polled there, else in the
// reader's own epoll_wait.
func (c *Collector) readLoop() {
	if c.rw == nil {
		c.readLoopBlocking()
		return
	}
	// storm: polling urgent records (wake_gate closed), every period;
	// busy: polling other records (idle_gate closed).
	storm, busy := false, false
	var period time.Duration
	wakeKernel := c.m.ReaderWakeups.WithLabelValues("kernel")
	wakeTimer := c.m.ReaderWakeups.WithLabelValues("timer")
	for {
		// Records are handled here, in the goroutine the kernel's wakeup
		// ran, not handed to Run's: a hand-off per wakeup readied a
		// second goroutine and woke a second thread for every exec.
		stopping := c.stopping.Load() // the programs are detached: drain once more
		urgent, n, ok := c.drainAll()
		if !ok {
			return
		}
		if urgent {
			c.batcher.Flush()
		}
		if stopping {
			return
		}
		wait := c.cfg.PollInterval
		if c.gate != nil {
			switch {
			case urgent:
				// Urgent records keep coming: poll again soon (the kernel
				// closed both gates), backing off (doubling) to
				// WakeupCoalesce while they do.
				if !storm {
					period = min(coalesceFirst, c.cfg.WakeupCoalesce)
				} else {
					period = min(2*period, c.cfg.WakeupCoalesce)
				}
				storm, busy, wait = true, true, period
			case storm:
				// No urgent record in this poll: the next one wakes the
				// reader again. Drain once more, since one written
				// before the gate opened woke no one.
				storm = false
				c.setGate(c.gate)
				continue
			case n > 0:
				// Other records: they go at the batcher's tick anyway.
				busy, wait = true, c.cfg.WakeupCoalesce
			case busy:
				// Nothing read: any record wakes the reader again. Drain
				// once more (a record written before it opened).
				busy = false
				c.setGate(c.idleGate)
				continue
			default:
				// Idle, both gates open. The timeout is a safety net (and
				// sequence records, which never wake the reader, are
				// polled every PollInterval).
				wait = idleWait
				if c.seq != nil {
					wait = c.cfg.PollInterval
				}
			}
		}
		switch err := c.rw.wait(time.Now().Add(wait)); {
		case err == nil:
			wakeKernel.Inc()
		case isWaitTimeout(err):
			wakeTimer.Inc()
		case errors.Is(err, os.ErrClosed):
			return
		default:
			c.m.Errors.WithLabelValues(metrics.StageCollector, "ringbuf_wait").Inc()
			time.Sleep(c.cfg.PollInterval) // do not spin on a broken poller
		}
	}
}

// coalesceFirst is the first poll after a wakeup (see WakeupCoalesce);
// idleWait bounds an idle reader's wait for the kernel's wakeup.
const (
	coalesceFirst = time.Millisecond
	idleWait      = time.Second
)

// drainAll handles every record in the ring buffer and reports whether a
// waking record (Config.WakeupKinds) was among them and how many records
// it read; ok is false when the ring is unreadable and the reader must
// stop.
func (c *Collector) drainAll() (urgent bool, total int, ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.urgent = false
	for {
		n, err := c.rr.drain(drainBatch, c.handleRecord)
		total += n
		if err != nil {
			// Not a ring the kernel wrote: nothing more can be read.
			c.m.Errors.WithLabelValues(metrics.StageCollector, "ringbuf_read").Inc()
			c.log.Error("ring buffer unreadable; reader stops", logErr, err)
			return c.urgent, total, false
		}
		if n < drainBatch {
			break
		}
	}
	c.drainSequence() // polled with the main ring: its records never wake the reader
	return c.urgent, total, true
}

// handleRecord is handle for the ring reader: it notes waking records.
func (c *Collector) handleRecord(rec []byte) {
	if len(rec) > 0 && rec[0] < 32 && c.wakeMask&(1<<rec[0]) != 0 {
		c.urgent = true
	}
	c.handle(rec)
}

// setGate opens a wakeup gate (a store into the mmapped .data).
func (c *Collector) setGate(g *ebpf.Variable) {
	if err := g.Set(uint32(1)); err != nil {
		c.m.Errors.WithLabelValues(metrics.StageCollector, "wake_gate").Inc()
	}
}

// drainBatch bounds the records handled per hold of mu, so Run's reports
// are not held off by a flood.
const drainBatch = 4096

// readLoopBlocking is readLoop when the netpoller cannot wait for the
// ring buffer: the reader blocks in epoll_wait for up to PollInterval.
func (c *Collector) readLoopBlocking() {
	var rec ringbuf.Record
	var seqDrained time.Time
	for {
		if c.seqRR != nil && time.Since(seqDrained) >= c.cfg.PollInterval {
			c.locked(c.drainSequence)
			seqDrained = time.Now()
		}
		c.rd.SetDeadline(time.Now().Add(c.cfg.PollInterval))
		if err := c.rd.ReadInto(&rec); err != nil {
			if errors.Is(err, ringbuf.ErrClosed) || errors.Is(err, ringbuf.ErrFlushed) {
				return
			}
			if errors.Is(err, os.ErrDeadlineExceeded) {
				continue
			}
			c.m.Errors.WithLabelValues(metrics.StageCollector, "ringbuf_read").Inc()
			continue
		}
		c.enqueue(rec.RawSample)
		if c.gate != nil {
			// Every wakeup is read at once here: keep the gates open.
			c.setGate(c.gate)
			c.setGate(c.idleGate)
		}
	}
}

// enqueue copies a record to the queue, or drops and counts it.
func (c *Collector) enqueue(sample []byte) {
	buf := make([]byte, len(sample))
	copy(buf, sample)
	select {
	case c.queue <- buf:
	default:
		c.queueDrops.Add(1)
		c.m.Dropped.WithLabelValues(metrics.StageCollector, reasonQueueFull).Inc()
	}
}

var loggedDecode atomic.Bool

// handle decodes one record, resolves its container and passes it on.
func (c *Collector) handle(rec []byte) {
	ev, err := decode(rec, c.opts)
	if err != nil {
		c.m.Dropped.WithLabelValues(metrics.StageCollector, reasonDecode).Inc()
		c.m.Errors.WithLabelValues(metrics.StageCollector, "decode").Inc()
		if !loggedDecode.Swap(true) {
			c.log.Error("dropping undecodable record (logged once)", logErr, err)
		}
		return
	}
	c.m.EventsIn.WithLabelValues(metrics.StageCollector).Inc()
	c.route(ev)
}

// route resolves ev's container, announces the container before its
// first event, and passes ev on.
func (c *Collector) route(ev *containv1.Event) {
	ctr := c.ident.lookup(ev.CgroupId)
	switch {
	case ctr != nil && ctr.isContainer:
		if sc := ev.GetSyscall(); sc != nil && sc.Mode == containv1.Syscall_MODE_FIRST {
			// The kernel reports a first use once per CPU and origin;
			// keep the first per origin.
			if !ctr.firstUse(sc.Nr, sc.GetProc().GetOrigin()) {
				return
			}
		}
		if !ctr.announced {
			c.ident.refresh(ctr)
			if !ctr.complete && c.ident.now().Sub(ctr.firstSeen) < c.cfg.MetadataWait && len(ctr.pending) < c.cfg.MaxHeldEvents {
				ctr.pending = append(ctr.pending, ev)
				if len(c.held) == 0 {
					select {
					case c.heldKick <- struct{}{}:
					default:
					}
				}
				c.held[ctr] = struct{}{}
				return
			}
			c.announce(ctr, ev.MonoNs)
		} else if c.ident.refresh(ctr) {
			c.announce(ctr, ev.MonoNs) // the state appeared after all
		}
		ctr.stamp(ev)
	case !c.cfg.HostProcesses && ctr != nil:
		// A host cgroup other than the root (a systemd unit): the kernel
		// filter only knows the root.
		c.m.Dropped.WithLabelValues(metrics.StageCollector, reasonHost).Inc()
		return
	case ctr != nil:
		ctr.stamp(ev)
	default:
		// The cgroup vanished before we could resolve it: keep the event
		// with its cgroup id and no container id.
		c.m.Errors.WithLabelValues(metrics.StageCollector, "cgroup_unresolved").Inc()
	}
	c.finish(ev)
	c.add(ev)
}

// announce emits ctr's KIND_CONTAINER event, then the events held for it.
func (c *Collector) announce(ctr *container, monoNs uint64) {
	if len(ctr.pending) > 0 {
		monoNs = ctr.pending[0].MonoNs
	}
	ctr.announced = true
	if n := ctr.info.DroppedLabels - ctr.droppedCounted; n > 0 {
		// io.contain.* labels from annotations or image labels.
		c.m.Dropped.WithLabelValues(metrics.StageCollector, reasonSpoofedLabel).Add(float64(n))
		ctr.droppedCounted = ctr.info.DroppedLabels
	}
	c.selectSequence(ctr)
	c.registerSensitive(ctr)
	info := ctr.infoEvent(c.cfg.Host, monoNs)
	c.finish(info)
	c.add(info)
	for _, ev := range ctr.pending {
		ctr.stamp(ev)
		c.finish(ev)
		c.add(ev)
	}
	ctr.pending = nil
	delete(c.held, ctr)
}

// releaseHeld announces held containers whose state appeared or whose
// wait is over; force announces them all (shutdown).
func (c *Collector) releaseHeld(force bool) {
	for ctr := range c.held {
		c.ident.refresh(ctr)
		if force || ctr.complete || c.ident.now().Sub(ctr.firstSeen) >= c.cfg.MetadataWait {
			c.announce(ctr, 0)
		}
	}
}

func (c *Collector) finish(ev *containv1.Event) {
	ev.Id = c.ids.Next()
	ev.Host = c.cfg.Host
	ev.SchemaVersion = containv1.SchemaVersion
	ev.WallNs = int64(ev.MonoNs) + atomic.LoadInt64(&c.wallOffset)
}

// add passes ev to the batcher without waking it (Append): the batcher
// takes events at its flush tick, so a record costs no second goroutine
// wakeup.
func (c *Collector) add(ev *containv1.Event) {
	if !c.batcher.Append(ev) {
		c.batcherDrops.Add(1)
	}
}

// updateClock measures the offset between wall and monotonic time (NTP
// may move the wall clock).
func (c *Collector) updateClock() {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return
	}
	wall := time.Now().UnixNano()
	atomic.StoreInt64(&c.wallOffset, wall-ts.Nano())
}

// monoNow is CLOCK_MONOTONIC in ns, the clock of bpf_ktime_get_ns.
func monoNow() uint64 {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return uint64(ts.Nano())
}

// lossCounts reads every loss counter: kernel ring-buffer reserve
// failures (summed over CPUs) and user-space drops.
func (c *Collector) lossCounts() map[[2]string]uint64 {
	out := map[[2]string]uint64{
		{"queue", reasonQueueFull}:     c.queueDrops.Load(),
		{"batcher", reasonBatcherFull}: c.batcherDrops.Load(),
	}
	if c.coll == nil {
		return out
	}
	lm := c.coll.Maps["loss"]
	for _, kl := range kernelLoss {
		var perCPU []uint64
		if err := lm.Lookup(kl.index, &perCPU); err != nil {
			continue
		}
		var sum uint64
		for _, v := range perCPU {
			sum += v
		}
		out[[2]string{"ringbuf", kl.reason}] = sum
	}
	return out
}

// reportRateLimited emits, per container, a KIND_LOSS event (source
// "kernel", reason "rate_limited") with the records its token bucket
// refused since the last report.
func (c *Collector) reportRateLimited() {
	if c.coll == nil || c.cfg.RatePerSec == 0 {
		return
	}
	var (
		cgid uint64
		b    collectorRateBucket
	)
	mono := monoNow()
	seen := map[uint64]bool{}
	it := c.coll.Maps["buckets"].Iterate()
	for it.Next(&cgid, &b) {
		seen[cgid] = true
		prev := c.lastLimited[cgid]
		if b.Dropped <= prev {
			continue
		}
		c.lastLimited[cgid] = b.Dropped
		c.containerLoss(cgid, mono, "kernel", reasonRateLimited, reasonRateLimited, b.Dropped-prev)
	}
	for id := range c.lastLimited {
		if !seen[id] {
			delete(c.lastLimited, id) // evicted (LRU): its counter restarts at 0
		}
	}
}

// forgetPrograms deletes the programs entries (lineage) of cgroups that
// are gone, so the map never fills with dead containers.
func (c *Collector) forgetPrograms() {
	if c.coll == nil {
		return
	}
	pm := c.coll.Maps["programs"]
	var (
		id   uint64
		v    uint8
		gone []uint64
	)
	it := pm.Iterate()
	for it.Next(&id, &v) {
		if !c.ident.cgroups.Known(id) {
			gone = append(gone, id)
		}
	}
	if len(gone) == 0 {
		return
	}
	_ = c.ident.cgroups.Scan()
	for _, id := range gone {
		if !c.ident.cgroups.Known(id) {
			_ = pm.Delete(id)
		}
	}
}

// reportLoss emits one KIND_LOSS event per counter that grew since the
// last report.
func (c *Collector) reportLoss() {
	c.pruneSensitive()
	c.forgetPrograms()
	c.reportRateLimited()
	c.reportSequence()
	for k, n := range c.lossCounts() {
		key := k[0] + "/" + k[1]
		prev := c.lastLoss[key]
		if n <= prev {
			continue
		}
		c.lastLoss[key] = n
		if k[0] == "ringbuf" {
			c.m.Dropped.WithLabelValues(metrics.StageCollector, reasonRingbufFull).Add(float64(n - prev))
		}
		ev := &containv1.Event{
			Kind:   containv1.Kind_KIND_LOSS,
			MonoNs: monoNow(),
			Body:   &containv1.Event_Loss{Loss: &containv1.Loss{Source: k[0], Reason: k[1], Count: n - prev}},
		}
		c.finish(ev)
		c.add(ev)
	}
}

// reportCounts emits, per container, one MODE_COUNT syscall event per
// syscall used since the last report, and forgets containers whose cgroup
// is gone. Counts live in the per-CPU slots (count_slots) and in the
// fallback hash (syscall_counts); both are summed per cgroup.
func (c *Collector) reportCounts() {
	if c.coll == nil || !c.cfg.Syscalls {
		return
	}
	sums := map[uint64]*[syscallMax]uint32{}
	add := func(cgid uint64, n *[syscallMax]uint32) {
		sum := sums[cgid]
		if sum == nil {
			sum = new([syscallMax]uint32)
			sums[cgid] = sum
		}
		for nr, v := range n {
			sum[nr] += v // wraps like the kernel's u32 counters
		}
	}
	hash := c.coll.Maps["syscall_counts"]
	var (
		cgid   uint64
		perCPU []syscallCounts
	)
	it := hash.Iterate()
	for it.Next(&cgid, &perCPU) {
		for i := range perCPU {
			add(cgid, &perCPU[i].N)
		}
	}
	if err := it.Err(); err != nil {
		c.m.Errors.WithLabelValues(metrics.StageCollector, "count_iterate").Inc()
	}
	slots := c.coll.Maps["count_slots"]
	slotOwners := map[uint32][]uint64{}
	var (
		idx      uint32
		slotVals []collectorCountSlot
	)
	it = slots.Iterate()
	for it.Next(&idx, &slotVals) {
		for i := range slotVals {
			if id := slotVals[i].CgroupId; id != 0 {
				add(id, &slotVals[i].N)
				slotOwners[idx] = append(slotOwners[idx], id)
			}
		}
	}
	if err := it.Err(); err != nil {
		c.m.Errors.WithLabelValues(metrics.StageCollector, "count_iterate").Inc()
	}

	mono := monoNow()
	var gone []uint64
	for cgid, sum := range sums {
		last := c.lastCounts[cgid]
		if last == nil {
			last = new([syscallMax]uint32)
			c.lastCounts[cgid] = last
		}
		for nr := range sum {
			d := sum[nr] - last[nr]
			if d == 0 {
				continue
			}
			c.route(&containv1.Event{
				Kind:     containv1.Kind_KIND_SYSCALL,
				MonoNs:   mono,
				CgroupId: cgid,
				Body: &containv1.Event_Syscall{Syscall: &containv1.Syscall{
					Mode: containv1.Syscall_MODE_COUNT, Nr: uint32(nr), Name: syscallNames[uint32(nr)], Count: uint64(d),
				}},
			})
		}
		*last = *sum
		if !c.ident.cgroups.Known(cgid) {
			gone = append(gone, cgid)
		}
	}
	if len(gone) > 0 {
		_ = c.ident.cgroups.Scan()
		dead := map[uint64]bool{}
		for _, id := range gone {
			if !c.ident.cgroups.Known(id) {
				dead[id] = true
				_ = hash.Delete(id)
				delete(c.lastCounts, id)
			}
		}
		// Free slots whose every owner is gone (a slot is written for all
		// CPUs at once; a live owner keeps it).
		for idx, owners := range slotOwners {
			if !slices.ContainsFunc(owners, func(id uint64) bool { return !dead[id] }) {
				_ = slots.Put(idx, make([]collectorCountSlot, len(slotVals)))
			}
		}
	}
	for id := range c.lastCounts {
		if sums[id] == nil {
			delete(c.lastCounts, id)
		}
	}
}

func (c *Collector) detach() {
	for _, l := range c.links {
		_ = l.Close()
	}
	c.links = nil
}

// close detaches the programs and frees the kernel objects. Run calls it;
// call it directly only when Run is never called.
func (c *Collector) close() {
	c.closeOnce.Do(func() {
		c.detach()
		if c.rd != nil {
			_ = c.rd.Close()
		}
		if c.rw != nil {
			c.rw.close()
			c.rr.close()
		}
		if c.seqRR != nil {
			c.seqRR.close()
		}
		if c.coll != nil {
			c.coll.Close()
		}
		c.ident.stopEngines()
	})
}

// Close releases the collector when Run was never called.
func (c *Collector) Close() { c.close() }

// containerLoss counts n records of container cgid lost (metric reason
// metricReason) and emits the KIND_LOSS event that carries it, with the
// container's identity.
func (c *Collector) containerLoss(cgid, mono uint64, source, reason, metricReason string, n uint64) {
	c.m.Dropped.WithLabelValues(metrics.StageCollector, metricReason).Add(float64(n))
	c.route(&containv1.Event{
		Kind:     containv1.Kind_KIND_LOSS,
		MonoNs:   mono,
		CgroupId: cgid,
		Body:     &containv1.Event_Loss{Loss: &containv1.Loss{Source: source, Reason: reason, Count: n}},
	})
}
