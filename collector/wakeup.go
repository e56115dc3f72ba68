package collector

import "time"

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
