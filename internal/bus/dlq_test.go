package bus_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/containsec/contain/internal/bus"
	"github.com/containsec/contain/internal/metrics"
	"github.com/containsec/contain/internal/testenv"
	"github.com/containsec/contain/schemas/containv1"
)

// poisonConsumer runs Consume on CONTAIN_EVENTS with a handler that
// fails (or panics) on any batch holding /bin/poison until fixed is set.
type poisonConsumer struct {
	mu    sync.Mutex
	files []string
	fixed atomic.Bool
	calls atomic.Int64
}

func (p *poisonConsumer) handler(panics bool) bus.Handler {
	return func(_ context.Context, batches []*containv1.Batch) error {
		p.calls.Add(1)
		for _, b := range batches {
			for _, ev := range b.Events {
				if ev.GetExec().GetFilename() == "/bin/poison" && !p.fixed.Load() {
					if panics {
						var m map[string]int
						m["boom"]++ // a nil-map write: a real runtime panic
					}
					return errors.New("clickhouse: Code: 53, type mismatch")
				}
			}
		}
		p.mu.Lock()
		defer p.mu.Unlock()
		for _, b := range batches {
			for _, ev := range b.Events {
				p.files = append(p.files, ev.GetExec().GetFilename())
			}
		}
		return nil
	}
}

func (p *poisonConsumer) has(file string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, f := range p.files {
		if f == file {
			return true
		}
	}
	return false
}

func publishFile(t *testing.T, ctx context.Context, js jetstream.JetStream, p *bus.Producer, file string) {
	t.Helper()
	ids := containv1.NewIDGen()
	if err := bus.Publish(ctx, js, containv1.EventsSubject("h1"), p.Batch([]*containv1.Event{execEvent(ids, "c", file)})); err != nil {
		t.Fatal(err)
	}
}

// lazy adapts h to bus.ConsumeMessages: every message decoded by the
// handler, one at a time; refused ones (nil) are counted in refused.
func lazy(h bus.Handler, refused *atomic.Int64) bus.MessageHandler {
	return func(ctx context.Context, f *bus.Messages) error {
		var batches []*containv1.Batch
		for i := range f.Len() {
			if b := f.Batch(i); b != nil {
				batches = append(batches, b)
			} else {
				refused.Add(1)
			}
		}
		return h(ctx, batches)
	}
}

func runPoison(t *testing.T, panics bool, reason string) { runPoisonWith(t, panics, reason, false) }

// runPoisonWith runs the poison scenario through Consume, or with lazy
// through ConsumeMessages with a malformed message and one of another
// host's among the batches: each is refused once, never handed over, and
// does not hold the others back. opts change the consumer's config.
func runPoisonWith(t *testing.T, panics bool, reason string, lazyDecode bool, opts ...func(*bus.ConsumerConfig)) {
	_, _, js := testenv.NATS(t)
	m := metrics.New()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ctx = bus.WithReporter(ctx, &bus.Reporter{M: m, Log: testenv.Logger(t), MaxDeliver: 3})
	prod := bus.NewProducer("h1", "test")
	publishFile(t, ctx, js, prod, "/bin/good0")
	if lazyDecode {
		if _, err := js.Publish(ctx, containv1.EventsSubject("h1"), []byte{0xff, 0xff, 0xff}); err != nil {
			t.Fatal(err)
		}
		other := bus.NewProducer("h2", "test").Batch([]*containv1.Event{execEvent(containv1.NewIDGen(), "c", "/bin/other")})
		if err := bus.Publish(ctx, js, containv1.EventsSubject("h1"), other); err != nil {
			t.Fatal(err)
		}
	}
	publishFile(t, ctx, js, prod, "/bin/poison")
	publishFile(t, ctx, js, prod, "/bin/good1")
	var pc poisonConsumer
	var refused atomic.Int64
	done := make(chan error, 1)
	go func() {
		cfg := bus.ConsumerConfig{Stream: containv1.StreamEvents, Durable: "poison", Stage: "test", RetryDelay: 20 * time.Millisecond}
		for _, o := range opts {
			o(&cfg)
		}
		if lazyDecode {
			done <- bus.ConsumeMessages(ctx, js, cfg, lazy(pc.handler(panics), &refused), m, testenv.Logger(t))
			return
		}
		done <- bus.Consume(ctx, js, cfg, pc.handler(panics), m, testenv.Logger(t))
	}()
	testenv.WaitFor(t, 20*time.Second, "poison dead-lettered", func() bool {
		return testutil.ToFloat64(m.DeadLettered.WithLabelValues("test", reason)) == 1
	})
	// Later batches flow.
	publishFile(t, ctx, js, prod, "/bin/good2")
	testenv.WaitFor(t, 10*time.Second, "later batches", func() bool {
		return pc.has("/bin/good0") && pc.has("/bin/good1") && pc.has("/bin/good2")
	})
	dl, err := bus.ListDLQ(ctx, js, "test", 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(dl) != 1 {
		t.Fatalf("dead letters %+v, want 1", dl)
	}
	d := dl[0]
	if d.Subject != containv1.EventsSubject("h1") || d.Stage != "test" || d.Reason != reason || d.Stream != containv1.StreamEvents || d.Size == 0 || d.Error == "" {
		t.Fatalf("dead letter %+v", d)
	}
	if reason == bus.DLQHandlerError && d.Deliveries != 3 {
		t.Fatalf("dead-lettered after %d deliveries, want 3", d.Deliveries)
	}
	if reason == bus.DLQPanic && d.Deliveries != 1 {
		t.Fatalf("panic dead-lettered after %d deliveries, want 1", d.Deliveries)
	}
	if others, _ := bus.ListDLQ(ctx, js, "other", 0); len(others) != 0 {
		t.Fatalf("stage filter: %+v", others)
	}
	// Replay to a fixed handler: consumed, and gone from the DLQ.
	pc.fixed.Store(true)
	n, err := bus.ReplayDLQ(ctx, js, "test", d.Seq)
	if err != nil || n != 1 {
		t.Fatalf("replay: %d, %v", n, err)
	}
	testenv.WaitFor(t, 10*time.Second, "replayed poison consumed", func() bool { return pc.has("/bin/poison") })
	if dl, _ := bus.ListDLQ(ctx, js, "", 0); len(dl) != 0 {
		t.Fatalf("DLQ after replay: %+v", dl)
	}
	select {
	case err := <-done:
		t.Fatalf("Consume returned: %v", err)
	default:
	}
	if n := testutil.ToFloat64(m.DeadLettered.WithLabelValues("test", reason)); n != 1 {
		t.Fatalf("dead-lettered %v times, want 1", n)
	}
	if lazyDecode {
		mal, host := testutil.ToFloat64(m.Malformed.WithLabelValues("test")), testutil.ToFloat64(m.Refused.WithLabelValues("test", bus.ReasonHost))
		if mal != 1 || host != 1 || refused.Load() != 2 || pc.has("/bin/other") {
			t.Fatalf("malformed %v, refused for host %v, nil batches %d (want 1, 1, 2), other host's handled %v", mal, host, refused.Load(), pc.has("/bin/other"))
		}
	}
}

// TestConsumeMessagesPoison: ConsumeMessages (a fetch decoded message
// by message by its handler) keeps Consume's guarantees: a poison batch
// is dead-lettered, later batches flow, malformed and other hosts'
// batches are refused once and never handed over.
func TestConsumeMessagesPoison(t *testing.T) { runPoisonWith(t, false, bus.DLQHandlerError, true) }

// TestConsumeMessagesPanic: a panic in a ConsumeMessages handler
// dead-letters its batch at once.
func TestConsumeMessagesPanic(t *testing.T) { runPoisonWith(t, true, bus.DLQPanic, true) }

// TestPoisonBatchDeadLettered: a batch the handler always fails on is
// dead-lettered after max_deliver deliveries; later batches flow; a
// replay reaches the fixed handler.
func TestPoisonBatchDeadLettered(t *testing.T) { runPoison(t, false, bus.DLQHandlerError) }

// TestPanickingHandlerDeadLetters: a panic is recovered, its batch
// dead-lettered at once, and the consumer goes on.
func TestPanickingHandlerDeadLetters(t *testing.T) { runPoison(t, true, bus.DLQPanic) }

// TestOutageDeadLettersNothing: when the handler fails on everything
// (the downstream is down) nothing is dead-lettered, however many
// deliveries; all of it arrives once the downstream is back.
func TestOutageDeadLettersNothing(t *testing.T) { runOutage(t) }

func runOutage(t *testing.T, opts ...func(*bus.ConsumerConfig)) {
	_, _, js := testenv.NATS(t)
	m := metrics.New()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ctx = bus.WithReporter(ctx, &bus.Reporter{M: m, Log: testenv.Logger(t), MaxDeliver: 2})
	prod := bus.NewProducer("h1", "test")
	for _, f := range []string{"/bin/a", "/bin/b", "/bin/c"} {
		publishFile(t, ctx, js, prod, f)
	}
	var down atomic.Bool
	down.Store(true)
	var got collected
	cfg := bus.ConsumerConfig{Stream: containv1.StreamEvents, Durable: "outage", Stage: "test", RetryDelay: 10 * time.Millisecond}
	for _, o := range opts {
		o(&cfg)
	}
	go func() {
		_ = bus.Consume(ctx, js, cfg, got.handler(func(int) bool { return down.Load() }), m, testenv.Logger(t))
	}()
	testenv.WaitFor(t, 10*time.Second, "many failures", func() bool {
		return testutil.ToFloat64(m.Errors.WithLabelValues("test", "handler")) >= 8
	})
	down.Store(false)
	testenv.WaitFor(t, 20*time.Second, "all events after the outage", func() bool { return got.len() == 3 })
	if n := testutil.ToFloat64(m.DeadLettered.WithLabelValues("test", bus.DLQHandlerError)); n != 0 {
		t.Fatalf("dead-lettered %v during an outage", n)
	}
}
