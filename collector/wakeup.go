package collector

import (
	"errors"
	"os"
	"sync/atomic"
	"time"

	"github.com/cilium/ebpf"
	"github.com/prometheus/client_golang/prometheus"
)

// The reader's side of the wakeup protocol (design 029), apart from its
// actions so that it can be model-checked against the kernel's side
// (submit_flags in bpf/common.h; wakeup_model_test.go).
//
// The kernel closes a gate when it sends a wakeup; only the reader opens
// them. The reader may wait unboundedly for a wakeup (the idle wait) only
// when both gates are open, the ring was empty when it looked after
// opening them, and nothing was reserved since it looked: a record
// reserved later reads an open gate, or one closed by a record that woke
// the reader.

// gateID names a wakeup gate.
type gateID uint8

const (
	gateNone gateID = iota
	gateWake        // wake_gate: urgent records
	gateIdle        // idle_gate: any record
)

// drainResult is what one pass over the ring found.
type drainResult struct {
	urgent bool // a waking record (wake_types) was read
	n      int  // records read
	// inflight: the ring still holds a record: one reserved but not yet
	// committed stops the reader (records are read in order).
	inflight bool
}

// readerPlan is what the reader does after a drain: open a gate and drain
// again, or wait.
type readerPlan struct {
	open gateID        // gateNone: wait
	wait time.Duration // with gateNone
	// idle: the wait is the idle wait; the reader parks only if the ring's
	// producer position has not moved since the drain (see ringWait.wait).
	idle bool
	// inflight: the wait is short because a record was in flight.
	inflight bool
}

// wakeupParams are the reader's settings for the protocol.
type wakeupParams struct {
	gated    bool          // Config.WakeupCoalesce > 0 (the kernel's gates are used)
	coalesce time.Duration // Config.WakeupCoalesce
	poll     time.Duration // Config.PollInterval
	seq      bool          // sequence records, which never wake, are polled every poll
}

// readerState is the reader's wakeup state between drains.
type readerState struct {
	storm  bool          // polling urgent records: wake_gate closed
	busy   bool          // polling other records: idle_gate closed
	period time.Duration // the storm's poll period
}

// inflightPoll is the wait while a record is being written: its commit
// may carry no wakeup (its program read the gates before they opened).
const inflightPoll = 250 * time.Microsecond

// next decides what follows a drain.
func (s *readerState) next(d drainResult, p wakeupParams) readerPlan {
	if !p.gated {
		return readerPlan{wait: p.poll}
	}
	switch {
	case d.urgent:
		// Urgent records keep coming: poll again soon (the kernel closed
		// both gates), backing off (doubling) to coalesce while they do.
		if !s.storm {
			s.period = min(coalesceFirst, p.coalesce)
		} else {
			s.period = min(2*s.period, p.coalesce)
		}
		s.storm, s.busy = true, true
		return readerPlan{wait: s.period}
	case s.storm:
		// No urgent record in this poll: the next one wakes the reader
		// again. Drain once more, since one written before the gate opened
		// woke no one.
		s.storm = false
		return readerPlan{open: gateWake}
	case d.n > 0:
		// Other records: they go at the batcher's tick anyway.
		s.busy = true
		return readerPlan{wait: p.coalesce}
	case s.busy:
		// Nothing read: any record wakes the reader again. Drain once more
		// (a record written before it opened).
		s.busy = false
		return readerPlan{open: gateIdle}
	case d.inflight:
		// Both gates open, but a record is being written: its program may
		// have read the gates while they were closed, and then its commit
		// wakes no one; a record behind it may have woken the reader
		// already. Poll until it is committed.
		return readerPlan{wait: inflightPoll, inflight: true}
	default:
		// Idle, both gates open, the ring empty. The timeout is a safety
		// net (and sequence records, which never wake the reader, are
		// polled every poll interval).
		w := idleWait
		if p.seq {
			w = p.poll
		}
		return readerPlan{wait: w, idle: true}
	}
}

// legacyReader selects the reader before design 029, for the tests that
// find its lost wakeups (the model and the real programs).
type legacyReader struct {
	noInflight bool // a record in flight does not shorten the idle wait
	noRecheck  bool // the idle wait parks without re-checking the ring
}

// ringLoop is the reader's loop around a drain: readLoop's, apart from
// the collector so that a test drives it with the real programs' records.
type ringLoop struct {
	rr             *ringRead
	rw             *ringWait
	gate, idleGate *ebpf.Variable // nil: not gated
	params         wakeupParams
	// drain handles every committed record; ok false stops the loop.
	drain    func() (urgent bool, n int, ok bool)
	flush    func()      // after a drain that read an urgent record
	stopping func() bool // true: drain once more and return
	wakeups  *prometheus.CounterVec
	errors   func(kind string)
	legacy   legacyReader // tests: the reader before design 029
}

func (l *ringLoop) run() {
	var st readerState
	wakeKernel := l.wakeups.WithLabelValues("kernel")
	wakeTimer := l.wakeups.WithLabelValues("timer")
	wakeInflight := l.wakeups.WithLabelValues("inflight")
	wakeRecheck := l.wakeups.WithLabelValues("recheck")
	for {
		stopping := l.stopping() // the programs are detached: drain once more
		urgent, n, ok := l.drain()
		if !ok {
			return
		}
		// After the drain (and after any gate opened before it): a record
		// reserved from here on reads the gates as they are now.
		seen := l.rr.producer()
		if urgent {
			l.flush()
		}
		if stopping {
			return
		}
		plan := st.next(drainResult{urgent: urgent, n: n, inflight: seen != l.rr.consumer()}, l.params)
		if l.legacy.noInflight && plan.inflight {
			plan = readerPlan{wait: idleWait, idle: true}
		}
		switch plan.open {
		case gateWake:
			l.setGate(l.gate)
			continue
		case gateIdle:
			l.setGate(l.idleGate)
			continue
		}
		var moved func() bool
		if plan.idle && !l.legacy.noRecheck {
			// A wakeup the netpoller saw before the wait began is
			// discarded by it (the runtime's pollReset): park only if
			// nothing was reserved since the drain.
			moved = func() bool { return l.rr.producer() != seen }
		}
		switch err := l.rw.wait(time.Now().Add(plan.wait), moved); {
		case errors.Is(err, errRingMoved):
			wakeRecheck.Inc()
		case err == nil:
			wakeKernel.Inc()
		case isWaitTimeout(err) && plan.inflight:
			wakeInflight.Inc()
		case isWaitTimeout(err):
			wakeTimer.Inc()
		case errors.Is(err, os.ErrClosed):
			return
		default:
			l.errors("ringbuf_wait")
			time.Sleep(l.params.poll) // do not spin on a broken poller
		}
	}
}

func (l *ringLoop) setGate(g *ebpf.Variable) {
	if err := openGate(g); err != nil {
		l.errors("wake_gate")
	}
}

// openGate opens a wakeup gate (a store into the mmapped .data), then
// orders that store before the reader's next load of the ring's producer
// position (a full barrier): with the kernel's barrier in submit_flags,
// either the reader sees a record reserved after it looked, or that
// record's program sees the gate open (design 029).
func openGate(g *ebpf.Variable) error {
	err := g.Set(uint64(1))
	gateFence.Add(1) // a locked read-modify-write: a full barrier
	return err
}

// gateFence is openGate's barrier.
var gateFence atomic.Uint64
