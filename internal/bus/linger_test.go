package bus_test

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/containsec/contain/internal/bus"
	"github.com/containsec/contain/internal/metrics"
	"github.com/containsec/contain/internal/testenv"
	"github.com/containsec/contain/schemas/containv1"
)

// TestLingerOnlyWhenBusy: an Eager consumer with Linger merges the
// messages of a steady stream into larger fetches (the enricher's fleet
// batches hold more hosts), and still hands a lone message over at once
// when messages are few (a quiet host's exec keeps its latency).
func TestLingerOnlyWhenBusy(t *testing.T) {
	_, _, js := testenv.NATS(t)
	m := metrics.New()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	const linger = time.Second
	var (
		mu    sync.Mutex
		sizes []int // events per handler call
		got   = map[string]time.Time{}
	)
	go func() {
		_ = bus.Consume(ctx, js, bus.ConsumerConfig{
			Stream: containv1.StreamEvents, Durable: "linger", Stage: "test",
			Eager: true, Linger: linger, Fetch: 64, FetchWait: 100 * time.Millisecond,
		}, func(_ context.Context, bs []*containv1.Batch) error {
			mu.Lock()
			defer mu.Unlock()
			n := 0
			for _, b := range bs {
				for _, ev := range b.Events {
					got[ev.GetExec().GetFilename()] = time.Now()
					n++
				}
			}
			sizes = append(sizes, n)
			return nil
		}, m, testenv.Logger(t))
	}()
	p := bus.NewProducer("h1", "test")
	ids := containv1.NewIDGen()
	send := func(name string) {
		t.Helper()
		if err := bus.Publish(ctx, js, containv1.EventsSubject("h1"), p.Batch([]*containv1.Event{execEvent(ids, "c", name)})); err != nil {
			t.Fatal(err)
		}
	}
	count := func() int { mu.Lock(); defer mu.Unlock(); return len(got) }

	// Quiet: one message, handed over well before Linger.
	start := time.Now()
	send("/quiet/1")
	testenv.WaitFor(t, 5*time.Second, "the lone message", func() bool { return count() == 1 })
	if d := time.Since(start); d >= linger/2 {
		t.Errorf("a lone message took %s: a quiet consumer lingered (Linger %s)", d, linger)
	}

	// Busy: 300 messages a second for 3 s.
	mu.Lock()
	sizes = nil
	mu.Unlock()
	tick := time.NewTicker(time.Second / 300)
	for i := range 900 {
		<-tick.C
		send("/busy/" + string(rune('a'+i%26)) + time.Now().Format("150405.000000000"))
	}
	tick.Stop()
	testenv.WaitFor(t, 10*time.Second, "the stream handled", func() bool { return count() == 901 })
	mu.Lock()
	calls := slices.Clone(sizes)
	mu.Unlock()
	// Once the rate is known (within a second), fetches merge: far
	// fewer handler calls than messages.
	if len(calls) > 450 {
		t.Errorf("%d handler calls for 900 messages at 300/s: a busy consumer did not linger (sizes %v)", len(calls), calls)
	}

	// Quiet again (the rate falls within a second): at once.
	time.Sleep(1500 * time.Millisecond)
	start = time.Now()
	send("/quiet/2")
	testenv.WaitFor(t, 5*time.Second, "the lone message after the stream", func() bool { return count() == 902 })
	if d := time.Since(start); d >= linger/2 {
		t.Errorf("a lone message after the stream took %s: the consumer still lingered", d)
	}
}
