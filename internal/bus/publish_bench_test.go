package bus_test

import (
	"context"
	"fmt"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/containsec/contain/internal/bus"
	"github.com/containsec/contain/schemas/containv1"
)

// BenchmarkPublishFetch publishes one fetch's worth of enriched batches
// (64 batches of 10 events, the fleet load test's shape) to a JetStream
// stream on an embedded server, one bus.Publish after the other (a round
// trip each: the enricher before) or with bus.PublishAll (asynchronous,
// acks awaited together), in interleaved rounds. cpu-ns/batch is this
// process's CPU (client and embedded server) per batch.
func BenchmarkPublishFetch(b *testing.B) {
	srv, err := bus.StartEmbedded(bus.EmbeddedConfig{Host: "127.0.0.1", Port: -1, StoreDir: b.TempDir()})
	if err != nil {
		b.Fatal(err)
	}
	defer func() { srv.Shutdown(); srv.WaitForShutdown() }()
	nc, js, err := bus.Connect(srv.ClientURL(), "bench", nil)
	if err != nil {
		b.Fatal(err)
	}
	defer nc.Close()
	ctx := context.Background()
	if err := bus.EnsureStreams(ctx, js, bus.StreamsConfig{EventsMaxAge: time.Hour, AlertsMaxAge: time.Hour, Replicas: 1, MaxBytes: bus.DefaultStreamMaxBytes}); err != nil {
		b.Fatal(err)
	}
	const fetch, perBatch = 64, 10
	ids := containv1.NewIDGen()
	p := bus.NewProducer("h1", "enricher")
	batches := func() []*containv1.Batch {
		out := make([]*containv1.Batch, fetch)
		for i := range out {
			evs := make([]*containv1.Event, perBatch)
			for j := range evs {
				evs[j] = execEvent(ids, "c1", "/usr/bin/app")
			}
			out[i] = p.Batch(evs)
		}
		return out
	}
	subject := containv1.EventsSubject("h1")
	for round := range 3 {
		b.Run(fmt.Sprintf("r%d/sequential", round), func(b *testing.B) {
			defer cpuPerBatch(b, fetch)()
			for b.Loop() {
				for _, bt := range batches() {
					if err := bus.Publish(ctx, js, subject, bt); err != nil {
						b.Fatal(err)
					}
				}
			}
		})
		b.Run(fmt.Sprintf("r%d/all", round), func(b *testing.B) {
			defer cpuPerBatch(b, fetch)()
			for b.Loop() {
				var msgs []*nats.Msg
				for _, bt := range batches() {
					m, err := bus.NewMsg(subject, bt)
					if err != nil {
						b.Fatal(err)
					}
					msgs = append(msgs, m)
				}
				if err := bus.PublishAll(ctx, js, msgs, "enricher"); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// cpuPerBatch reports, when the returned func is called, wall and CPU
// (user + system, all threads) time per batch since it was called.
func cpuPerBatch(b *testing.B, n int) func() {
	cpu := func() time.Duration {
		var ru syscall.Rusage
		_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
		return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	before := cpu()
	return func() {
		k := float64(b.N * n)
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/k, "ns/batch")
		b.ReportMetric(float64((cpu()-before).Nanoseconds())/k, "cpu-ns/batch")
	}
}
