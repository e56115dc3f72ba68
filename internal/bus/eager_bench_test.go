package bus_test

import (
	"context"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/containsec/contain/internal/bus"
	"github.com/containsec/contain/internal/metrics"
	"github.com/containsec/contain/internal/testenv"
	"github.com/containsec/contain/schemas/containv1"
)

// BenchmarkConsumeEager: one publisher sends b.N one-event batches, each
// waiting for the stream's ack (so the consumer keeps running dry, the
// case Eager changes), a consumer of Fetch 64 takes them; ns/op is per
// message until the last is handled. Reported: handler calls per message
// and this process's CPU per message (user+system: publisher, consumer,
// embedded server). Eager and default alternate with -count.
//
//	go test ./internal/bus -run '^$' -bench ConsumeEager -benchtime 20000x -count 3
func BenchmarkConsumeEager(b *testing.B) {
	for _, eager := range []bool{false, true} {
		b.Run(map[bool]string{true: "eager", false: "default"}[eager], func(b *testing.B) {
			_, _, js := testenv.NATS(b)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			var handled, calls atomic.Int64
			go func() {
				_ = bus.Consume(ctx, js, bus.ConsumerConfig{
					Stream: containv1.StreamEvents, Durable: "bench", Stage: "test", Fetch: 64, Eager: eager,
				}, func(_ context.Context, bs []*containv1.Batch) error {
					calls.Add(1)
					handled.Add(int64(len(bs)))
					return nil
				}, metrics.New(), testenv.Discard())
			}()
			p := bus.NewProducer("h1", "test")
			ids := containv1.NewIDGen()
			cpu0 := cpuTime()
			b.ResetTimer()
			for range b.N {
				if err := bus.Publish(ctx, js, containv1.EventsSubject("h1"), p.Batch([]*containv1.Event{execEvent(ids, "c", "/bin/sh")})); err != nil {
					b.Fatal(err)
				}
			}
			for handled.Load() < int64(b.N) {
				time.Sleep(time.Millisecond)
			}
			b.StopTimer()
			b.ReportMetric(float64(calls.Load())/float64(b.N), "calls/msg")
			b.ReportMetric(float64(cpuTime()-cpu0)/float64(b.N), "cpu-ns/msg")
		})
	}
}

// cpuTime is this process's user+system CPU time in ns.
func cpuTime() int64 {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return ru.Utime.Nano() + ru.Stime.Nano()
}

// BenchmarkConsumeBacklog: b.N one-event batches are published first,
// then an Eager consumer of Fetch 16 (the analyzer's) drains them; ns/op
// and this process's CPU per message (consumer and embedded server) are
// counted from the consumer's start to the last message handled: the
// cost of the fetch path when every fetch finds messages waiting.
//
//	go test ./internal/bus -run '^$' -bench ConsumeBacklog -benchtime 20000x -count 3
func BenchmarkConsumeBacklog(b *testing.B) {
	_, _, js := testenv.NATS(b)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	p := bus.NewProducer("h1", "test")
	ids := containv1.NewIDGen()
	for range b.N {
		if err := bus.Publish(ctx, js, containv1.EventsSubject("h1"), p.Batch([]*containv1.Event{execEvent(ids, "c", "/bin/sh")})); err != nil {
			b.Fatal(err)
		}
	}
	var handled, calls atomic.Int64
	cpu0 := cpuTime()
	b.ResetTimer()
	go func() {
		_ = bus.Consume(ctx, js, bus.ConsumerConfig{
			Stream: containv1.StreamEvents, Durable: "bench", Stage: "test", Fetch: 16, Eager: true,
		}, func(_ context.Context, bs []*containv1.Batch) error {
			calls.Add(1)
			handled.Add(int64(len(bs)))
			return nil
		}, metrics.New(), testenv.Discard())
	}()
	for handled.Load() < int64(b.N) {
		time.Sleep(time.Millisecond)
	}
	b.StopTimer()
	b.ReportMetric(float64(calls.Load())/float64(b.N), "calls/msg")
	b.ReportMetric(float64(cpuTime()-cpu0)/float64(b.N), "cpu-ns/msg")
}
