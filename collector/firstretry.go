package collector

import (
	"encoding/binary"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/containsec/contain/internal/logfields"
	"github.com/containsec/contain/internal/metrics"
	"github.com/containsec/contain/schemas/containv1"
)

// maxDeferredFirstUses bounds the first-use records held for a retry; one
// more is dropped for good (counted as reasonFirstUseLost).
const maxDeferredFirstUses = 4096

const reasonFirstUseLost = "first_use_lost"

var loggedFirstUseLost atomic.Bool

// deferredFirstUses holds first-use syscall records that the reader queue
// or the batcher refused. The kernel reports a (container, syscall,
// origin) first use once, so a dropped one would never be learned or
// scored (issue 12 §3): they are passed on again at the next hold tick.
// The kernel side of the same guarantee is unsee (a record lost to a full
// ring buffer).
type deferredFirstUses struct {
	mu  sync.Mutex
	raw [][]byte           // refused by the reader queue, not yet decoded
	evs []*containv1.Event // refused by the batcher, already routed
	// retried counts first uses passed on after a refusal
	// (contain_collector_first_uses_retried_total).
	retried prometheus.Counter
}

func newDeferredFirstUses(m *metrics.Metrics) *deferredFirstUses {
	return &deferredFirstUses{retried: metrics.Register(m, metrics.StageCollector, prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: "contain", Subsystem: "collector", Name: "first_uses_retried_total",
		Help: "First-use syscall records refused by a full queue or batcher and passed on again later.",
	}))}
}

// isFirstUseRecord reports whether rec is a kernel syscall record in
// first-use mode (common.h RECORD_SYSCALL, SYSCALL_MODE_FIRST), without
// decoding it.
func isFirstUseRecord(rec []byte) bool {
	return len(rec) >= hdrSize+8 && rec[0] == recordSyscall &&
		binary.LittleEndian.Uint32(rec[hdrSize+4:]) == uint32(containv1.Syscall_MODE_FIRST)
}

func isFirstUseEvent(ev *containv1.Event) bool {
	return ev.GetSyscall().GetMode() == containv1.Syscall_MODE_FIRST
}

// holdRaw keeps a refused record for a retry and reports whether it was
// kept (false: too many held).
func (d *deferredFirstUses) holdRaw(rec []byte) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.raw)+len(d.evs) >= maxDeferredFirstUses {
		return false
	}
	d.raw = append(d.raw, rec)
	return true
}

// holdEvent keeps a refused event for a retry and reports whether it was
// kept.
func (d *deferredFirstUses) holdEvent(ev *containv1.Event) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.raw)+len(d.evs) >= maxDeferredFirstUses {
		return false
	}
	d.evs = append(d.evs, ev)
	return true
}

func (d *deferredFirstUses) pending() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.raw)+len(d.evs) > 0
}

func (d *deferredFirstUses) take() (raw [][]byte, evs []*containv1.Event) {
	d.mu.Lock()
	defer d.mu.Unlock()
	raw, evs = d.raw, d.evs
	d.raw, d.evs = nil, nil
	return raw, evs
}

// deferFirstUse is called for a record or event a full queue refused: it
// holds a first use for a retry and wakes the hold ticker. It reports
// whether it kept it; the caller counts the drop otherwise.
func (c *Collector) deferFirstUse(rec []byte, ev *containv1.Event) bool {
	var kept bool
	switch {
	case rec != nil && isFirstUseRecord(rec):
		kept = c.deferred.holdRaw(rec)
	case ev != nil && isFirstUseEvent(ev):
		kept = c.deferred.holdEvent(ev)
	default:
		return false
	}
	if !kept {
		c.m.Dropped.WithLabelValues(metrics.StageCollector, reasonFirstUseLost).Inc()
		if !loggedFirstUseLost.Swap(true) {
			c.log.Warn("first-use records dropped for good: more than the retry holds (logged once; contain_dropped_total{reason=\"first_use_lost\"})",
				logfields.Limit, maxDeferredFirstUses)
		}
		return false
	}
	select {
	case c.heldKick <- struct{}{}:
	default:
	}
	return true
}

// retryFirstUses passes the held first uses on again; those refused again
// stay held. Call with mu held.
func (c *Collector) retryFirstUses() {
	raw, evs := c.deferred.take()
	for _, rec := range raw {
		c.deferred.retried.Inc()
		c.handle(rec) // route; a refusal at the batcher holds it again
	}
	for _, ev := range evs {
		if c.batcher.Append(ev) {
			c.deferred.retried.Inc()
		} else if !c.deferred.holdEvent(ev) {
			c.m.Dropped.WithLabelValues(metrics.StageCollector, reasonFirstUseLost).Inc()
		}
	}
}
