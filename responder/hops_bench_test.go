package responder

import (
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containsec/contain/internal/bus"
	"github.com/containsec/contain/internal/metrics"
	"github.com/containsec/contain/schemas/containv1"
)

// hops are the points of an exec's way to the freeze, in order, that
// hopTracer times: the kernel's exec (the event's wall time), the
// collector's batcher starting to publish (its ring-buffer read and the
// batcher's wakeup before it), each stage's publish acknowledged by the
// stream, each consumer's receipt, and the responder's receipt and
// verified freeze (from the action's detail).
var hops = []string{
	"exec",
	metrics.StageCollector + "_" + bus.TraceFlushing,
	metrics.StageCollector + "_" + bus.TracePublished,
	metrics.StageEnricher + "_" + bus.TraceReceived,
	metrics.StageEnricher + "_" + bus.TracePublished,
	metrics.StageAnalyzer + "_" + bus.TraceReceived,
	metrics.StageAnalyzer + "_" + bus.TracePublished,
	metrics.StageResponder + "_" + bus.TraceReceived,
	"frozen",
}

// hopTracer is a bus.Reporter's Trace for BenchmarkExecToFrozen: it notes
// when each trial's exec (a /bin/evil-<n>, or an alert it triggered)
// first passes each point.
type hopTracer struct {
	mu sync.Mutex
	at map[string]map[string]int64 // exe -> hop -> wall ns
	// alerts counts the alerts the analyzer published; analyzed is the
	// latest event time among the batches its handler finished with.
	alerts   int
	analyzed int64
}

func newHopTracer() *hopTracer { return &hopTracer{at: map[string]map[string]int64{}} }

const benchExePrefix = "/bin/evil-"

func (t *hopTracer) trace(point, stage string, b *containv1.Batch) {
	now := time.Now().UnixNano()
	if stage == metrics.StageAnalyzer {
		t.analyzer(point, b)
	}
	for _, ev := range b.Events {
		x := ev.GetExec()
		if al := ev.GetAlert(); al != nil {
			x = al.GetTrigger().GetExec()
		}
		if x == nil || !strings.HasPrefix(x.Filename, benchExePrefix) {
			continue
		}
		t.mark(x.Filename, stage+"_"+point, now)
		if ev.GetExec() != nil {
			t.mark(x.Filename, "exec", ev.WallNs)
		}
	}
}

// analyzer counts the alerts published and notes how far in event time
// the analyzer has scored.
func (t *hopTracer) analyzer(point string, b *containv1.Batch) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, ev := range b.Events {
		switch {
		case point == bus.TracePublished && ev.GetAlert() != nil:
			t.alerts++
		case point == bus.TraceHandled:
			t.analyzed = max(t.analyzed, ev.WallNs)
		}
	}
}

// published is how many alerts the analyzer published.
func (t *hopTracer) published() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.alerts
}

// scoredPast reports whether the analyzer finished scoring an event later
// than wallNs: every alert about earlier events is published by then.
func (t *hopTracer) scoredPast(wallNs int64) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.analyzed > wallNs
}

// mark keeps the first time exe passed hop.
func (t *hopTracer) mark(exe, hop string, ns int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	m := t.at[exe]
	if m == nil {
		m = map[string]int64{}
		t.at[exe] = m
	}
	if _, ok := m[hop]; !ok {
		m[hop] = ns
	}
}

// trial completes exe's record with the responder's points, from its
// action: the exec's wall time plus latency_ns is the verified freeze,
// less received_to_frozen_us the receipt.
func (t *hopTracer) trial(exe string, a *containv1.Action, d Detail) {
	t.mu.Lock()
	exec, ok := t.at[exe]["exec"]
	t.mu.Unlock()
	if !ok {
		return
	}
	frozen := exec + a.LatencyNs
	t.mark(exe, "frozen", frozen)
	t.mark(exe, metrics.StageResponder+"_"+bus.TraceReceived, frozen-d.ReceivedToFrozenUs*1000)
}

// report gives each hop's latency (from the point before it) as
// percentiles; a trial missing a point is left out of the hops around it.
func (t *hopTracer) report(b *testing.B) {
	t.mu.Lock()
	defer t.mu.Unlock()
	per := make([][]int64, len(hops))
	for _, at := range t.at {
		for i := 1; i < len(hops); i++ {
			from, ok1 := at[hops[i-1]]
			to, ok2 := at[hops[i]]
			if ok1 && ok2 {
				per[i] = append(per[i], to-from)
			}
		}
	}
	for i := 1; i < len(hops); i++ {
		percentiles(b, "hop_"+hops[i], per[i])
	}
}
