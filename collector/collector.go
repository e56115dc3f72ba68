package collector

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/ringbuf"
	"github.com/cilium/ebpf/rlimit"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sys/unix"

	"github.com/containsec/contain/internal/bus"
	"github.com/containsec/contain/internal/cgroups"
	"github.com/containsec/contain/internal/logfields"
	"github.com/containsec/contain/internal/metrics"
	"github.com/containsec/contain/schemas/containv1"
)

// Drop reasons (contain_dropped_total{stage="collector"} and loss events).
const (
	reasonRingbufFull = "ringbuf_full"
	reasonQueueFull   = "queue_full"
	reasonBatcherFull = "batcher_full"
	reasonDecode      = "decode_error"
	reasonHost        = "host_process"
)

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
	deferred     *deferredFirstUses
	// announceDeferred counts announcements refused even from the
	// batcher's reserve, once per wait (held, offered again).
	announceDeferred prometheus.Counter
	wallOffset       int64 // wall - monotonic, ns

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
		// Sized to the rate; urgent records still flush at once.
		MaxFlushInterval:    cfg.MaxFlushInterval,
		TargetBatchRate:     cfg.TargetBatchRate,
		ContainerDictionary: cfg.ContainerDictionary,
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
		deferred:    newDeferredFirstUses(m),
		announceDeferred: metrics.Register(m, metrics.StageCollector, prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "contain", Subsystem: "collector", Name: "announcements_deferred_total",
			Help: "Container announcements refused by a full batcher even from its reserve: held with the container's events and offered again (one per wait; nothing is dropped).",
		})),
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
	feats := probeFeatures()
	mode := cmp.Or(cfg.AttachMode, AttachAuto)
	feats.log(log, mode)
	if err := feats.required(); err != nil {
		c.close()
		return nil, err
	}
	families, err := feats.families(mode)
	if err != nil {
		c.close()
		return nil, err
	}
	if err := c.load(families, hostCg, hostMnt); err != nil {
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
		log.Warn("ring buffer not pollable by the runtime; the reader blocks in epoll_wait", logfields.Err, err)
	}
	if err := c.setupSequence(); err != nil {
		c.close()
		return nil, err
	}
	c.wakeMask = wakeTypes(cfg.WakeupKinds)
	if cfg.WakeupCoalesce > 0 {
		c.gate, c.idleGate = c.coll.Variables["wake_gate"], c.coll.Variables["idle_gate"]
		if err := errors.Join(c.gate.Set(uint64(1)), c.idleGate.Set(uint64(1))); err != nil {
			c.close()
			return nil, fmt.Errorf("collector.wakeup_coalesce: the kernel's wakeup gate cannot be written without a system call (mmapped BPF globals need Linux 5.5); set it to 0: %w", err)
		}
	}
	c.updateClock()
	log.Info("collector attached", logfields.Hooks, c.hooks, logfields.HostCgroupID, hostCg, logfields.HostProcesses, cfg.HostProcesses)
	return c, nil
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
			c.retryFirstUses()
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
				c.retryFirstUses()
				idle = len(c.held) == 0 && !c.deferred.pending()
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
	if !c.batcher.Append(ev) && !c.deferFirstUse(nil, ev) {
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
