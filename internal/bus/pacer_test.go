package bus_test

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/containsec/contain/internal/bus"
	"github.com/containsec/contain/internal/metrics"
	"github.com/containsec/contain/internal/testenv"
	"github.com/containsec/contain/schemas/containv1"
)

// TestFlushPacer follows the interval through a quiet spell, a busy one
// and an idle one, on a simulated clock.
func TestFlushPacer(t *testing.T) {
	const min, max = 20 * time.Millisecond, 200 * time.Millisecond
	p := bus.NewFlushPacer(min, max, 5)
	now := time.Unix(1000, 0)
	// run feeds rate events/s in batches closed at the interval the
	// pacer gives, for d, and returns the last interval.
	run := func(rate float64, d time.Duration) time.Duration {
		iv := p.Interval(now)
		for end := now.Add(d); now.Before(end); {
			now = now.Add(iv)
			p.Observe(int(rate * iv.Seconds()))
			iv = p.Interval(now)
		}
		return iv
	}
	if iv := run(4, 5*time.Second); iv != min {
		t.Fatalf("4 events/s (under 5 batches/s): interval %v, want %v", iv, min)
	}
	if iv := run(250, 5*time.Second); iv != 200*time.Millisecond {
		t.Fatalf("250 events/s: interval %v, want 1/5 s = 200ms (rate %.0f)", iv, p.Rate())
	}
	// A target above what the bound allows: the bound wins.
	q := bus.NewFlushPacer(min, 100*time.Millisecond, 2)
	for range 100 {
		now = now.Add(50 * time.Millisecond)
		q.Observe(50)
		q.Interval(now)
	}
	if iv := q.Interval(now); iv != 100*time.Millisecond {
		t.Fatalf("target 2/s under a 100ms bound: interval %v, want 100ms", iv)
	}
	// Idle for 10 s, then one event: back to the minimum at once.
	now = now.Add(10 * time.Second)
	p.Observe(1)
	if iv := p.Interval(now); iv != min {
		t.Fatalf("after 10 s idle: interval %v, want %v (rate %.1f)", iv, min, p.Rate())
	}
	for _, off := range []*bus.FlushPacer{bus.NewFlushPacer(min, 0, 5), bus.NewFlushPacer(min, max, 0)} {
		off.Observe(1e6)
		off.Interval(now)
		off.Observe(1e6)
		if iv := off.Interval(now.Add(time.Second)); iv != min {
			t.Fatalf("pacing off: interval %v, want %v", iv, min)
		}
	}
}

// TestBatcherSizesBatchesToTheRate appends 500 events/s for 2 s to a
// real batcher (embedded NATS) with and without pacing, and counts the
// messages in the stream: paced (2 batches/s target, 500ms bound) about
// 2 a second once the rate is seen, against one per 10 ms flush
// interval without. An event followed by Flush (how the collector
// publishes an exec) is published at once while the interval is
// stretched.
func TestBatcherSizesBatchesToTheRate(t *testing.T) {
	_, _, js := testenv.NATS(t)
	m := metrics.New()
	log := testenv.Logger(t)
	ctx := context.Background()
	ids := containv1.NewIDGen()
	sent := 0
	msgs := func() uint64 {
		st, err := js.Stream(ctx, containv1.StreamRaw)
		if err != nil {
			t.Fatal(err)
		}
		info, err := st.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return info.State.Msgs
	}
	feed := func(host string, maxFlush time.Duration) (batches uint64, b *bus.Batcher, stop func()) {
		b, err := bus.NewBatcher(js, bus.BatcherConfig{
			Subject: containv1.RawSubject(host), Stage: metrics.StageCollector, Host: host,
			QueueLen: 10000, MaxEvents: 1000, MaxBytes: 1 << 20, FlushInterval: 10 * time.Millisecond,
			MaxFlushInterval: maxFlush, TargetBatchRate: 2,
		}, m, log)
		if err != nil {
			t.Fatal(err)
		}
		bctx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() { _ = b.Run(bctx); close(done) }()
		before := msgs()
		for end := time.Now().Add(2 * time.Second); time.Now().Before(end); {
			b.Append(execEvent(ids, "c1", "/bin/true"))
			sent++
			time.Sleep(2 * time.Millisecond)
		}
		waitPublished(t, m, sent)
		return msgs() - before, b, func() { cancel(); <-done }
	}
	plain, _, stopPlain := feed("h1", 0)
	stopPlain()
	paced, b, stopPaced := feed("h1", 500*time.Millisecond)
	defer stopPaced()
	t.Logf("batches in 2 s at 500 events/s: %d with a 10ms flush interval, %d paced (target 2/s, bound 500ms)", plain, paced)
	if plain < 60 {
		t.Fatalf("without pacing: %d batches, want one per ~10ms flush (>= 60)", plain)
	}
	if paced > 12 || paced*5 > plain {
		t.Fatalf("paced: %d batches (unpaced %d), want about 2 a second (<= 12) and 5x fewer", paced, plain)
	}
	// Urgent: published at once, not after the stretched interval.
	start := time.Now()
	b.Append(execEvent(ids, "c1", "/bin/sh"))
	sent++
	b.Flush()
	waitPublished(t, m, sent)
	if d := time.Since(start); d > 250*time.Millisecond {
		t.Fatalf("an event followed by Flush took %v to publish while paced (interval 500ms)", d)
	}
}

// waitPublished waits until n events were published.
func waitPublished(t *testing.T, m *metrics.Metrics, n int) {
	t.Helper()
	testenv.WaitFor(t, 5*time.Second, "every event published", func() bool {
		return testutil.ToFloat64(m.EventsOut.WithLabelValues(metrics.StageCollector)) == float64(n)
	})
}
