package bus_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/containsec/contain/internal/bus"
	"github.com/containsec/contain/internal/metrics"
	"github.com/containsec/contain/internal/testenv"
	"github.com/containsec/contain/schemas/containv1"
)

// TestConsumerEager counts the pull requests the server receives. An
// idle default consumer has sent two (the no-wait fetch, the waiting
// one); when a lone message ends the wait, it asks for what came with it
// first (a third request, one round trip before the handler). An Eager
// consumer's long pull (design 032) has sent one, which the lone message
// and the next ones come on: the handler is called with no further
// request.
func TestConsumerEager(t *testing.T) {
	for _, eager := range []bool{true, false} {
		name := map[bool]string{true: "eager", false: "default"}[eager]
		t.Run(name, func(t *testing.T) {
			_, nc, js := testenv.NATS(t)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			durable := "eager_" + name
			var requests atomic.Int64
			sub, err := nc.Subscribe("$JS.API.CONSUMER.MSG.NEXT."+containv1.StreamEvents+"."+durable, func(*nats.Msg) { requests.Add(1) })
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = sub.Unsubscribe() }()
			atHandler := make(chan int64, 1)
			handler := func(context.Context, []*containv1.Batch) error {
				// A request sent before the call may reach the counting
				// subscription a little later: give it time.
				deadline := time.Now().Add(300 * time.Millisecond)
				for requests.Load() < 3 && time.Now().Before(deadline) {
					time.Sleep(5 * time.Millisecond)
				}
				select {
				case atHandler <- requests.Load():
				default:
				}
				return nil
			}
			go func() {
				_ = bus.Consume(ctx, js, bus.ConsumerConfig{
					Stream: containv1.StreamEvents, Durable: durable, Stage: "test",
					Fetch: 64, FetchWait: 5 * time.Second, Eager: eager,
				}, handler, metrics.New(), testenv.Logger(t))
			}()
			idle := map[bool]int64{true: 1, false: 2}[eager]
			testenv.WaitFor(t, 10*time.Second, "the consumer waiting", func() bool { return requests.Load() == idle })
			p := bus.NewProducer("h1", "test")
			if err := bus.Publish(ctx, js, containv1.EventsSubject("h1"), p.Batch([]*containv1.Event{execEvent(containv1.NewIDGen(), "c", "/bin/sh")})); err != nil {
				t.Fatal(err)
			}
			want := map[bool]int64{true: 1, false: 3}[eager]
			select {
			case got := <-atHandler:
				if got != want {
					t.Fatalf("%d pull requests when the handler was called, want %d", got, want)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("handler not called")
			}
		})
	}
}
