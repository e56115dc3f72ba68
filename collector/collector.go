package collector

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
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
	"github.com/containsec/contain/internal/runtime"
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
}

// Collector reads the kernel's events and publishes them as raw batches.
type Collector struct {
	cfg   Config
	m     *metrics.Metrics
	log   *slog.Logger
	hooks []string

	coll    *ebpf.Collection
	links   []link.Link
	rd      *ringbuf.Reader
	batcher *bus.Batcher
	ident   *identity
	ids     *containv1.IDGen
	queue   chan []byte
	opts    decodeOptions

	queueDrops   atomic.Uint64
	batcherDrops atomic.Uint64
	lastLoss     map[string]uint64
	wallOffset   int64 // wall - monotonic, ns

	closeOnce sync.Once
}

// New loads the collector's eBPF programs and attaches them. Events are
// buffered in the kernel ring buffer until Run reads them.
func New(cfg Config, js jetstream.JetStream, m *metrics.Metrics, log *slog.Logger) (*Collector, error) {
	if err := cfg.Validate(); err != nil {
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
		cfg:      cfg,
		m:        m,
		log:      log,
		batcher:  batcher,
		ids:      containv1.NewIDGen(),
		queue:    make(chan []byte, cfg.QueueLen),
		opts:     decodeOptions{maxArgs: cfg.MaxArgs},
		lastLoss: map[string]uint64{},
	}
	states := runtime.DefaultStateReader()
	states.RuncRoot = cfg.RuncRoot
	c.ident = newIdentity(cgroups.NewResolver(cfg.CgroupRoot), states)
	if err := c.ident.cgroups.Scan(); err != nil {
		return nil, fmt.Errorf("collector: %w", err)
	}
	if err := c.load(hostCg); err != nil {
		c.close()
		return nil, err
	}
	c.rd, err = ringbuf.NewReader(c.coll.Maps["events"])
	if err != nil {
		c.close()
		return nil, fmt.Errorf("collector: ring buffer reader: %w", err)
	}
	c.updateClock()
	log.Info("collector attached", logHooks, c.hooks, "host_cgroup_id", hostCg, "host_processes", cfg.HostProcesses)
	return c, nil
}

// hookSet is one way of attaching: a set of programs that load together.
type hookSet struct {
	name     string
	programs []string
	attach   func(c *Collector, name string, p *ebpf.Program) (link.Link, error)
}

var execHooks = []hookSet{
	{
		name:     "tp_btf/sched_process_exec",
		programs: []string{"exec_tp_btf"},
		attach: func(_ *Collector, _ string, p *ebpf.Program) (link.Link, error) {
			return link.AttachTracing(link.TracingOptions{Program: p, AttachType: ebpf.AttachTraceRawTp})
		},
	},
	{
		name:     "raw_tracepoint/sched_process_exec",
		programs: []string{"exec_raw_tp"},
		attach: func(_ *Collector, _ string, p *ebpf.Program) (link.Link, error) {
			return link.AttachRawTracepoint(link.RawTracepointOptions{Name: "sched_process_exec", Program: p})
		},
	},
}

// load probes the hook sets in order of preference: it loads the object
// with the first set's programs only, attaches them and falls back to the
// next set when the kernel refuses.
func (c *Collector) load(hostCg uint64) error {
	var errs []error
	for _, hs := range execHooks {
		spec, err := loadCollector()
		if err != nil {
			return fmt.Errorf("collector: %w", err)
		}
		keep := map[string]bool{}
		for _, p := range hs.programs {
			keep[p] = true
		}
		for name := range spec.Programs {
			if !keep[name] {
				delete(spec.Programs, name)
			}
		}
		spec.Maps["events"].MaxEntries = uint32(c.cfg.RingBufferBytes)
		hp := uint8(0)
		if c.cfg.HostProcesses {
			hp = 1
		}
		for name, v := range map[string]any{
			"host_cgroup_id": hostCg,
			"self_tgid":      uint32(os.Getpid()),
			"host_processes": hp,
		} {
			if err := spec.Variables[name].Set(v); err != nil {
				return fmt.Errorf("collector: setting %s: %w", name, err)
			}
		}
		coll, err := ebpf.NewCollection(spec)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: loading: %w", hs.name, err))
			continue
		}
		var links []link.Link
		for _, p := range hs.programs {
			l, err := hs.attach(c, p, coll.Programs[p])
			if err != nil {
				err = fmt.Errorf("%s: attaching %s: %w", hs.name, p, err)
				break
			}
			links = append(links, l)
		}
		if len(links) != len(hs.programs) {
			for _, l := range links {
				_ = l.Close()
			}
			coll.Close()
			errs = append(errs, fmt.Errorf("%s: not attached", hs.name))
			continue
		}
		if len(errs) > 0 {
			c.log.Warn("preferred hooks refused; fell back", logHooks, hs.name, logErr, errors.Join(errs...))
		}
		c.coll, c.links = coll, links
		c.hooks = append(c.hooks, hs.name)
		return nil
	}
	return fmt.Errorf("collector: no exec hook loads: %w", errors.Join(errs...))
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
	for {
		select {
		case <-ctx.Done():
			// No new events; then drain what the kernel holds. The reader
			// returns after the records that were in the ring buffer.
			c.detach()
			_ = c.rd.Flush()
		drain:
			for {
				select {
				case rec := <-c.queue:
					c.handle(rec)
				case <-rdone:
					break drain
				}
			}
			for len(c.queue) > 0 {
				c.handle(<-c.queue)
			}
			c.reportLoss()
			bcancel()
			return <-bdone
		case rec := <-c.queue:
			c.handle(rec)
		case <-tick.C:
			c.updateClock()
			c.reportLoss()
			c.m.QueueDepth.WithLabelValues(metrics.StageCollector, "ringbuf_reader").Set(float64(len(c.queue)))
		}
	}
}

// readLoop moves ring-buffer records to the queue and never blocks on it.
func (c *Collector) readLoop() {
	var rec ringbuf.Record
	for {
		if err := c.rd.ReadInto(&rec); err != nil {
			if errors.Is(err, ringbuf.ErrClosed) || errors.Is(err, ringbuf.ErrFlushed) {
				return
			}
			c.m.Errors.WithLabelValues(metrics.StageCollector, "ringbuf_read").Inc()
			continue
		}
		buf := make([]byte, len(rec.RawSample))
		copy(buf, rec.RawSample)
		select {
		case c.queue <- buf:
		default:
			c.queueDrops.Add(1)
			c.m.Dropped.WithLabelValues(metrics.StageCollector, reasonQueueFull).Inc()
		}
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
	ctr, announce := c.ident.lookup(ev.CgroupId)
	switch {
	case ctr != nil && ctr.isContainer:
		if !ctr.announced || announce {
			ctr.announced = true
			info := ctr.infoEvent(c.cfg.Host, ev.MonoNs)
			c.finish(info)
			c.add(info)
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

func (c *Collector) finish(ev *containv1.Event) {
	ev.Id = c.ids.Next()
	ev.Host = c.cfg.Host
	ev.SchemaVersion = containv1.SchemaVersion
	ev.WallNs = int64(ev.MonoNs) + atomic.LoadInt64(&c.wallOffset)
}

func (c *Collector) add(ev *containv1.Event) {
	if !c.batcher.Add(ev) {
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

// reportLoss emits one KIND_LOSS event per counter that grew since the
// last report.
func (c *Collector) reportLoss() {
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
		if c.coll != nil {
			c.coll.Close()
		}
	})
}

// Close releases the collector when Run was never called.
func (c *Collector) Close() { c.close() }
