package memgate

import (
	"context"
	"math"
	"runtime/metrics"
	"time"
)

// Fraction of the Go soft memory limit above which the live heap holds
// work back.
const Fraction = 0.9

// poll is how often a waiting caller looks again: the live heap changes
// at each collection, several a second at the limit.
const poll = 20 * time.Millisecond

var names = []string{"/gc/heap/live:bytes", "/gc/gomemlimit:bytes"}

// Over reports whether the live heap is above Fraction of the soft memory
// limit (never without a limit).
func Over() bool {
	s := []metrics.Sample{{Name: names[0]}, {Name: names[1]}}
	metrics.Read(s)
	live, limit := s[0].Value.Uint64(), s[1].Value.Uint64()
	if limit == 0 || limit >= math.MaxInt64 {
		return false
	}
	return float64(live) > Fraction*float64(limit)
}

// Wait blocks while Over, at most max or until ctx ends, and returns how
// long it waited.
func Wait(ctx context.Context, max time.Duration) time.Duration {
	if !Over() {
		return 0
	}
	start := time.Now()
	t := time.NewTicker(poll)
	defer t.Stop()
	for time.Since(start) < max {
		select {
		case <-ctx.Done():
			return time.Since(start)
		case <-t.C:
		}
		if !Over() {
			break
		}
	}
	return time.Since(start)
}
