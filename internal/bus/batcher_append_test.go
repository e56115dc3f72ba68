package bus_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/containsec/contain/internal/bus"
	"github.com/containsec/contain/internal/metrics"
	"github.com/containsec/contain/internal/testenv"
	"github.com/containsec/contain/schemas/containv1"
)

// Appended events are published in order: full batches at once (the
// flush interval is an hour here), the rest at shutdown.
func TestBatcherAppendKeepsOrderFlushesFullBatches(t *testing.T) {
	_, _, js := testenv.NATS(t)
	m := metrics.New()
	log := testenv.Logger(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	b, err := bus.NewBatcher(js, bus.BatcherConfig{
		Subject: containv1.RawSubject("h1"), Stage: metrics.StageCollector, Host: "h1",
		QueueLen: 10000, MaxEvents: 100, MaxBytes: 1 << 20, FlushInterval: time.Hour,
	}, m, log)
	if err != nil {
		t.Fatal(err)
	}
	bctx, bcancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { _ = b.Run(bctx); close(done) }()
	ids := containv1.NewIDGen()
	const full, rest = 1000, 7
	file := func(i int) string { return "/bin/x" + string(rune('a'+i%26)) }
	for i := range full {
		if !b.Append(execEvent(ids, "c1", file(i))) {
			t.Fatalf("event %d dropped with room in the queue", i)
		}
		if i%100 == 99 {
			// Let Run take each full batch before the next fills.
			testenv.WaitFor(t, 5*time.Second, "full batch published", func() bool {
				return testutil.ToFloat64(m.EventsOut.WithLabelValues(metrics.StageCollector)) == float64(i+1)
			})
		}
	}
	for i := full; i < full+rest; i++ {
		b.Append(execEvent(ids, "c1", file(i)))
	}
	time.Sleep(50 * time.Millisecond)
	if v := testutil.ToFloat64(m.EventsOut.WithLabelValues(metrics.StageCollector)); v != full {
		t.Fatalf("events_out = %v before shutdown, want %d (a partial batch waits for the tick)", v, full)
	}
	bcancel()
	<-done
	var got collected
	go func() {
		_ = bus.Consume(ctx, js, bus.ConsumerConfig{Stream: containv1.StreamRaw, Durable: "t", Stage: "test"}, got.handler(nil), m, log)
	}()
	testenv.WaitFor(t, 10*time.Second, "all events consumed", func() bool { return got.len() == full+rest })
	got.mu.Lock()
	defer got.mu.Unlock()
	for i, ev := range got.events {
		if ev.GetExec().GetFilename() != file(i) {
			t.Fatalf("event %d: filename %q, want %q (order lost)", i, ev.GetExec().GetFilename(), file(i))
		}
	}
}

// A partial batch of appended events goes out at the flush tick.
func TestBatcherAppendFlushesAtTick(t *testing.T) {
	_, _, js := testenv.NATS(t)
	m := metrics.New()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	b, err := bus.NewBatcher(js, bus.BatcherConfig{
		Subject: containv1.RawSubject("h1"), Stage: metrics.StageCollector, Host: "h1",
		QueueLen: 100, MaxEvents: 100, MaxBytes: 1 << 20, FlushInterval: 20 * time.Millisecond,
	}, m, testenv.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = b.Run(ctx) }()
	ids := containv1.NewIDGen()
	for range 3 {
		b.Append(execEvent(ids, "c1", "/bin/sh"))
	}
	testenv.WaitFor(t, 5*time.Second, "3 events published", func() bool {
		return testutil.ToFloat64(m.EventsOut.WithLabelValues(metrics.StageCollector)) == 3
	})
}

func TestBatcherAppendCountsDropsWhenFull(t *testing.T) {
	m := metrics.New()
	var js jetstream.JetStream // never used: Run is not started
	b, err := bus.NewBatcher(js, bus.BatcherConfig{
		Subject: "x", Stage: "test", QueueLen: 4, MaxEvents: 10, MaxBytes: 1024, FlushInterval: time.Second,
	}, m, testenv.Discard())
	if err != nil {
		t.Fatal(err)
	}
	ids := containv1.NewIDGen()
	taken := 0
	for range 10 {
		if b.Append(execEvent(ids, "c", "/bin/sh")) {
			taken++
		}
	}
	if taken != 4 || b.Len() != 4 {
		t.Fatalf("taken = %d, len = %d, want 4", taken, b.Len())
	}
	if v := testutil.ToFloat64(m.Dropped.WithLabelValues("test", "queue_full")); v != 6 {
		t.Fatalf("dropped = %v, want 6", v)
	}
}

// AppendKeep takes what Append refuses, up to KeepReserve more; past the
// reserve it refuses too, counted apart from Append's drops.
func TestBatcherAppendKeepUsesReserve(t *testing.T) {
	m := metrics.New()
	var js jetstream.JetStream // never used: Run is not started
	const queueLen = 16
	b, err := bus.NewBatcher(js, bus.BatcherConfig{
		Subject: "x", Stage: "test", QueueLen: queueLen, MaxEvents: 1000, MaxBytes: 1024, FlushInterval: time.Second,
	}, m, testenv.Discard())
	if err != nil {
		t.Fatal(err)
	}
	ids := containv1.NewIDGen()
	for b.Append(execEvent(ids, "c", "/bin/sh")) {
	}
	if b.Len() != queueLen {
		t.Fatalf("len = %d after Append filled the queue, want %d", b.Len(), queueLen)
	}
	kept := 0
	for b.AppendKeep(&containv1.Event{Kind: containv1.Kind_KIND_CONTAINER, ContainerId: "c"}) {
		kept++
		if kept > 10*queueLen {
			t.Fatal("AppendKeep takes without bound")
		}
	}
	if want := bus.KeepReserve(queueLen); kept != want || want < 1 {
		t.Fatalf("AppendKeep took %d past the full queue, want the reserve %d", kept, want)
	}
	if b.Append(execEvent(ids, "c", "/bin/sh")) {
		t.Fatal("Append took an event into the reserve")
	}
	if v := testutil.ToFloat64(m.Dropped.WithLabelValues("test", "queue_full_keep")); v != 0 {
		t.Fatalf("queue_full_keep = %v, want 0 (a refused AppendKeep is kept by its caller, not dropped)", v)
	}
	if v := testutil.ToFloat64(m.Dropped.WithLabelValues("test", "queue_full")); v != 2 {
		t.Fatalf("queue_full = %v, want 2 (Append's refusals)", v)
	}
}
