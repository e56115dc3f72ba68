package collector

import (
	"errors"
	"os"
	"sync/atomic"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/ringbuf"

	"github.com/containsec/contain/internal/logfields"
	"github.com/containsec/contain/internal/metrics"
	"github.com/containsec/contain/schemas/containv1"
)

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
	loop := ringLoop{
		rr: c.rr, rw: c.rw, gate: c.gate, idleGate: c.idleGate,
		params: wakeupParams{
			gated:    c.gate != nil,
			coalesce: c.cfg.WakeupCoalesce,
			poll:     c.cfg.PollInterval,
			seq:      c.seq != nil,
		},
		// Records are handled here, in the goroutine the kernel's wakeup
		// ran, not handed to Run's: a hand-off per wakeup readied a
		// second goroutine and woke a second thread for every exec.
		drain:    c.drainAll,
		flush:    c.batcher.Flush,
		stopping: c.stopping.Load,
		wakeups:  c.m.ReaderWakeups,
		errors:   func(kind string) { c.m.Errors.WithLabelValues(metrics.StageCollector, kind).Inc() },
	}
	loop.run()
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
			c.log.Error("ring buffer unreadable; reader stops", logfields.Err, err)
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

// setGate opens a wakeup gate (see ringLoop.setGate).
func (c *Collector) setGate(g *ebpf.Variable) {
	if err := openGate(g); err != nil {
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
		if c.deferFirstUse(buf, nil) {
			return
		}
		c.queueDrops.Add(1)
		c.m.Dropped.WithLabelValues(metrics.StageCollector, reasonQueueFull).Inc()
	}
}

var loggedDecode atomic.Bool

// dropUndecodable counts a record that did not decode, and logs the first.
func (c *Collector) dropUndecodable(err error) {
	c.m.Dropped.WithLabelValues(metrics.StageCollector, reasonDecode).Inc()
	c.m.Errors.WithLabelValues(metrics.StageCollector, "decode").Inc()
	if !loggedDecode.Swap(true) {
		c.log.Error("dropping undecodable record (logged once)", logfields.Err, err)
	}
}

// handle decodes one record, resolves its container and passes it on.
func (c *Collector) handle(rec []byte) {
	ev, err := decode(rec, c.opts)
	if err != nil {
		c.dropUndecodable(err)
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
			if ctr.refused {
				// The batcher refused its announcement: the hold ticker
				// offers it again, not every event (each would build it).
				c.holdUnannounced(ctr, ev)
				return
			}
			c.ident.refresh(ctr)
			if !ctr.complete && c.ident.now().Sub(ctr.firstSeen) < c.cfg.MetadataWait && len(ctr.pending) < c.cfg.MaxHeldEvents {
				ctr.pending = append(ctr.pending, ev)
				c.hold(ctr)
				return
			}
			if !c.announce(ctr, ev.MonoNs) {
				c.holdUnannounced(ctr, ev)
				return
			}
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
// It reports false when the batcher refused the announcement even from
// its reserve (bus.Batcher.AppendKeep): ctr stays unannounced, or dirty,
// its held events stay held, and the next event or hold tick announces it
// again. An announcement is never lost while later events of its
// container pass: the enricher would give them no image, and the analyzer
// would score them against a baseline of the container alone.
func (c *Collector) announce(ctr *container, monoNs uint64) bool {
	if len(ctr.pending) > 0 {
		monoNs = ctr.pending[0].MonoNs
	}
	if n := ctr.info.DroppedLabels - ctr.droppedCounted; n > 0 {
		// io.contain.* labels from annotations or image labels.
		c.m.Dropped.WithLabelValues(metrics.StageCollector, reasonSpoofedLabel).Add(float64(n))
		ctr.droppedCounted = ctr.info.DroppedLabels
	}
	info := ctr.infoEvent(c.cfg.Host, monoNs)
	c.finish(info)
	if !c.batcher.AppendKeep(info) {
		if !ctr.waiting {
			ctr.waiting = true
			c.announceDeferred.Inc()
		}
		ctr.dirty = true
		ctr.refused = !ctr.announced
		if len(ctr.pending) > 0 {
			c.hold(ctr)
		}
		return false
	}
	ctr.announced, ctr.refused, ctr.waiting = true, false, false
	c.selectSequence(ctr)
	c.registerSensitive(ctr)
	for _, ev := range ctr.pending {
		ctr.stamp(ev)
		c.finish(ev)
		c.add(ev)
	}
	ctr.pending = nil
	delete(c.held, ctr)
	return true
}

// holdUnannounced keeps ev of ctr, whose announcement the batcher refused,
// with its held events until ctr is announced (at most MaxHeldEvents; one
// more is dropped as the batcher would have).
func (c *Collector) holdUnannounced(ctr *container, ev *containv1.Event) {
	if len(ctr.pending) >= c.cfg.MaxHeldEvents {
		c.batcherDrops.Add(1)
		return
	}
	ctr.pending = append(ctr.pending, ev)
	c.hold(ctr)
}

// hold puts ctr among the held containers the hold ticker releases,
// starting the ticker for the first.
func (c *Collector) hold(ctr *container) {
	if len(c.held) == 0 {
		select {
		case c.heldKick <- struct{}{}:
		default:
		}
	}
	c.held[ctr] = struct{}{}
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
