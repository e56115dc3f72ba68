package bus

import (
	"math"
	"time"
)

// FlushPacer sizes batches to the event rate: it gives the interval after
// which a batch that is not full closes. While events come at no more
// than TargetBatchRate per second it is the configured flush interval
// (each event, or a few, a batch: the lowest latency); once they come
// faster it stretches to 1/TargetBatchRate, at most MaxFlushInterval, so
// that a busy producer publishes about TargetBatchRate batches a second,
// each holding rate/TargetBatchRate events, instead of one batch per
// flush interval. Every message costs NATS (and each consumer) about the
// same whatever it holds, so this divides the per-message cost by the
// batch size; the price is up to MaxFlushInterval of latency for events
// that wait for the timer (a collector publishes urgent ones at once:
// Batcher.Flush). The rate is an exponential average over about a
// second of what Observe was told, so an idle spell brings the interval
// back to the minimum.
//
// A FlushPacer is not safe for concurrent use: one goroutine (a Batcher's
// Run, a load generator's host) owns it.
type FlushPacer struct {
	min, max time.Duration
	target   float64 // batches per second
	rate     float64 // events per second, averaged
	events   int     // since last
	last     time.Time
}

// pacerTau is the time constant of the rate average.
const pacerTau = time.Second

// NewFlushPacer paces between flushInterval and maxFlushInterval for
// targetBatchRate batches a second; maxFlushInterval <= flushInterval or
// targetBatchRate <= 0 keeps flushInterval always.
func NewFlushPacer(flushInterval, maxFlushInterval time.Duration, targetBatchRate float64) *FlushPacer {
	return &FlushPacer{min: flushInterval, max: maxFlushInterval, target: targetBatchRate}
}

// Observe counts n events entering batches.
func (p *FlushPacer) Observe(n int) { p.events += n }

// Rate is the averaged event rate (events per second) as of the last
// Interval call.
func (p *FlushPacer) Rate() float64 { return p.rate }

// Interval folds the events observed since the last call into the rate
// and returns the flush interval to arm now.
func (p *FlushPacer) Interval(now time.Time) time.Duration {
	if p.max <= p.min || p.target <= 0 {
		return p.min
	}
	if !p.last.IsZero() {
		if dt := now.Sub(p.last); dt > 0 {
			inst := float64(p.events) / dt.Seconds()
			// The weight of the new sample grows with the time it
			// covers: a long idle spell replaces the average.
			w := 1 - math.Exp(-float64(dt)/float64(pacerTau))
			p.rate += w * (inst - p.rate)
			p.events = 0
			p.last = now
		}
	} else {
		p.last = now
	}
	if p.rate <= p.target {
		return p.min
	}
	return min(p.max, max(p.min, time.Duration(float64(time.Second)/p.target)))
}
