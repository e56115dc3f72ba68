package bus_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/containsec/contain/internal/bus"
	"github.com/containsec/contain/internal/metrics"
	"github.com/containsec/contain/internal/testenv"
	"github.com/containsec/contain/schemas/containv1"
)

// seqRecorder records the producer sequences handlers see.
type seqRecorder struct {
	mu   sync.Mutex
	seen map[uint64]int
}

func (r *seqRecorder) add(bs []*containv1.Batch) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, b := range bs {
		r.seen[b.Seq]++
	}
}

func (r *seqRecorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.seen)
}

// check fails unless sequences 1..n were each handled exactly once.
func (r *seqRecorder) check(t *testing.T, n int) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	for s := uint64(1); s <= uint64(n); s++ {
		if c := r.seen[s]; c != 1 {
			t.Errorf("batch %d handled %d times, want once", s, c)
		}
	}
	if len(r.seen) != n {
		t.Errorf("%d batches handled, want %d", len(r.seen), n)
	}
}

func publishN(t *testing.T, ctx context.Context, js jetstream.JetStream, p *bus.Producer, n int) {
	t.Helper()
	ids := containv1.NewIDGen()
	for range n {
		if err := bus.Publish(ctx, js, containv1.EventsSubject("h1"), p.Batch([]*containv1.Event{execEvent(ids, "c", "/bin/sh")})); err != nil {
			t.Fatal(err)
		}
	}
}

// TestLongPullStopRedelivers: an Eager consumer's long pull buffers the
// next fetches' messages while its handler holds one fetch; when it is
// stopped (an analyzer losing a partition) it Naks what it buffered, so
// that the next consumer of the durable gets them at once, long before
// AckWait, and every message is handled once.
func TestLongPullStopRedelivers(t *testing.T) {
	_, _, js := testenv.NATS(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	const fetch, total = 4, 40
	cfg := bus.ConsumerConfig{
		Stream: containv1.StreamEvents, Durable: "handover", Stage: "test",
		Fetch: fetch, FetchWait: time.Second, AckWait: time.Minute, Eager: true,
	}
	publishN(t, ctx, js, bus.NewProducer("h1", "test"), total)
	rec := &seqRecorder{seen: map[uint64]int{}}
	hold, release := make(chan struct{}), make(chan struct{})
	var (
		once   sync.Once
		inHand int
	)
	stop, done := make(chan struct{}), make(chan error, 1)
	first := cfg
	first.Stop = stop
	go func() {
		done <- bus.Consume(ctx, js, first, func(_ context.Context, bs []*containv1.Batch) error {
			rec.add(bs)
			once.Do(func() { inHand = len(bs); close(hold); <-release })
			return nil
		}, metrics.New(), testenv.Logger(t))
	}()
	<-hold
	// The handler holds a fetch; the long pull buffers two more.
	cons, err := js.Consumer(ctx, cfg.Stream, cfg.Durable)
	if err != nil {
		t.Fatal(err)
	}
	testenv.WaitForState(t, 10*time.Second, "the long pull buffering", func() (bool, string) {
		ci, err := cons.Info(ctx)
		if err != nil {
			return false, err.Error()
		}
		return ci.NumAckPending >= 2*fetch, fmt.Sprint("ack pending ", ci.NumAckPending)
	})
	close(stop)
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if handled := rec.count(); handled != inHand {
		t.Fatalf("%d batches handled before the stop, want the fetch in hand (%d)", handled, inHand)
	}
	start := time.Now()
	go func() {
		_ = bus.Consume(ctx, js, cfg, func(_ context.Context, bs []*containv1.Batch) error {
			rec.add(bs)
			return nil
		}, metrics.New(), testenv.Logger(t))
	}()
	testenv.WaitFor(t, 10*time.Second, "the next consumer handling the rest", func() bool { return rec.count() == total })
	if d := time.Since(start); d > cfg.AckWait/4 {
		t.Fatalf("the rest took %v, not promptly redelivered (AckWait %v)", d, cfg.AckWait)
	}
	time.Sleep(200 * time.Millisecond) // a duplicate would show
	rec.check(t, total)
}

// TestLongPullExactlyOnceAcrossRestarts: messages published at a steady
// pace while the consumer is stopped and started again and again, its
// handler sometimes slow, are all handled, none twice.
func TestLongPullExactlyOnceAcrossRestarts(t *testing.T) {
	_, _, js := testenv.NATS(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	const total, restarts = 1500, 5
	cfg := bus.ConsumerConfig{
		Stream: containv1.StreamEvents, Durable: "restarts", Stage: "test",
		Fetch: 8, FetchWait: 100 * time.Millisecond, AckWait: time.Minute, Eager: true,
	}
	rec := &seqRecorder{seen: map[uint64]int{}}
	pubDone := make(chan struct{})
	go func() {
		defer close(pubDone)
		p := bus.NewProducer("h1", "test")
		for i := 0; i < total; i += 50 {
			publishN(t, ctx, js, p, 50)
			time.Sleep(20 * time.Millisecond)
		}
	}()
	var calls int
	h := func(_ context.Context, bs []*containv1.Batch) error {
		calls++
		rec.add(bs)
		if calls%20 == 0 {
			time.Sleep(10 * time.Millisecond)
		}
		return nil
	}
	for i := range restarts + 1 {
		stop, done := make(chan struct{}), make(chan error, 1)
		c := cfg
		c.Stop = stop
		go func() { done <- bus.Consume(ctx, js, c, h, metrics.New(), testenv.Discard()) }()
		if i < restarts {
			time.Sleep(150 * time.Millisecond)
		} else {
			<-pubDone
			testenv.WaitFor(t, 10*time.Second, "every batch handled", func() bool { return rec.count() == total })
		}
		close(stop)
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	rec.check(t, total)
}

// TestLongPullLoneMessage: a message that comes to an idle Eager
// consumer is handed to the handler at once, not after FetchWait, one
// after the other.
func TestLongPullLoneMessage(t *testing.T) {
	_, _, js := testenv.NATS(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	const wait = 5 * time.Second
	got := make(chan time.Time, 8)
	go func() {
		_ = bus.Consume(ctx, js, bus.ConsumerConfig{
			Stream: containv1.StreamEvents, Durable: "lone", Stage: "test", Fetch: 16, FetchWait: wait, Eager: true,
		}, func(_ context.Context, bs []*containv1.Batch) error {
			got <- time.Now()
			return nil
		}, metrics.New(), testenv.Logger(t))
	}()
	p := bus.NewProducer("h1", "test")
	time.Sleep(300 * time.Millisecond) // idle: the fetch waits
	for i := range 5 {
		sent := time.Now()
		publishN(t, ctx, js, p, 1)
		select {
		case at := <-got:
			if d := at.Sub(sent); d > wait/5 {
				t.Fatalf("message %d handled %v after it was published (FetchWait %v)", i, d, wait)
			}
		case <-time.After(wait):
			t.Fatalf("message %d not handled within FetchWait", i)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestLongPullServerRestart: the long pull's requests die with the
// server; after it restarts, the consumer asks again and gets the next
// message within a few seconds (the idle heartbeats), not after the
// requests would have expired.
func TestLongPullServerRestart(t *testing.T) {
	store := t.TempDir()
	srv, err := bus.StartEmbedded(bus.EmbeddedConfig{Port: -1, StoreDir: store})
	if err != nil {
		t.Fatal(err)
	}
	port := srv.Addr().(interface{ AddrPort() netAddrPort }).AddrPort().Port()
	nc, js, err := bus.Connect(srv.ClientURL(), t.Name(), testenv.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := bus.EnsureStreams(ctx, js, bus.StreamsConfig{}); err != nil {
		t.Fatal(err)
	}
	rec := &seqRecorder{seen: map[uint64]int{}}
	go func() {
		_ = bus.Consume(ctx, js, bus.ConsumerConfig{
			Stream: containv1.StreamEvents, Durable: "restart", Stage: "test", Fetch: 16, FetchWait: 200 * time.Millisecond, Eager: true,
		}, func(_ context.Context, bs []*containv1.Batch) error {
			rec.add(bs)
			return nil
		}, metrics.New(), testenv.Logger(t))
	}()
	p := bus.NewProducer("h1", "test")
	publishN(t, ctx, js, p, 1)
	testenv.WaitFor(t, 10*time.Second, "the first message handled", func() bool { return rec.count() == 1 })
	srv.Shutdown()
	srv.WaitForShutdown()
	srv2, err := bus.StartEmbedded(bus.EmbeddedConfig{Port: int(port), StoreDir: store})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv2.Shutdown)
	testenv.WaitFor(t, 10*time.Second, "reconnected", nc.IsConnected)
	start := time.Now()
	publishN(t, ctx, js, p, 1)
	testenv.WaitFor(t, 10*time.Second, "the message after the restart handled", func() bool { return rec.count() == 2 })
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("handled %v after the restart's message was published", d)
	}
	rec.check(t, 2)
}

func eager(c *bus.ConsumerConfig) { c.Eager = true }

// TestLongPullPoison: an Eager consumer (its long pull released before
// every back-off) keeps the dead-letter guarantees of TestPoisonBatchDeadLettered.
func TestLongPullPoison(t *testing.T) { runPoisonWith(t, false, bus.DLQHandlerError, false, eager) }

// TestLongPullConsumeMessagesPoison: the same through ConsumeMessages
// (the enricher's), with malformed and other hosts' batches refused.
func TestLongPullConsumeMessagesPoison(t *testing.T) {
	runPoisonWith(t, false, bus.DLQHandlerError, true, eager)
}

// TestLongPullPanic: a panic dead-letters its batch at once.
func TestLongPullPanic(t *testing.T) { runPoisonWith(t, true, bus.DLQPanic, false, eager) }

// TestLongPullOutage: an outage dead-letters nothing, and everything
// arrives after it.
func TestLongPullOutage(t *testing.T) { runOutage(t, eager) }
