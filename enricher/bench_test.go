package enricher

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/containsec/contain/internal/metrics"
	"github.com/containsec/contain/internal/testenv"
	"github.com/containsec/contain/schemas/containv1"
)

// benchEnricher is an enricher whose cache knows containers c0..c<n-1>
// on host h1, each with a profile; no NATS is needed on a warm cache.
func benchEnricher(_ testing.TB, n int) *Enricher {
	e := &Enricher{cfg: testConfig(), m: metrics.New(), log: testenv.Discard(),
		cache: map[ckey]*entry{}, misses: map[ckey]time.Time{}, profiles: map[string]string{}, digests: map[string]string{}}
	e.em = newEnricherMetrics(e.m)
	for i := range n {
		p := &Profile{ImageDigest: testDigest, ImageRef: fmt.Sprintf("registry.local/app%d:1", i)}
		p.Seal()
		e.profiles[testDigest] = p.Ref()
		e.store(ContainerImage{Host: "h1", ContainerID: fmt.Sprintf("c%d", i), ImageRef: p.ImageRef, ImageDigest: testDigest})
	}
	return e
}

// BenchmarkEnrichWarm measures enrichBatch per event with a warm cache:
// "same" is runs of one container's events (the common case: a batch holds
// bursts per container), "interleaved" changes container on every event.
func BenchmarkEnrichWarm(b *testing.B) {
	const batch = 1000
	for _, mode := range []string{"same", "interleaved"} {
		b.Run(mode, func(b *testing.B) {
			e := benchEnricher(b, 64)
			evs := make([]*containv1.Event, batch)
			for i := range evs {
				c := i / 100
				if mode == "interleaved" {
					c = i % 64
				}
				evs[i] = execEvent("h1", fmt.Sprintf("c%d", c), uint64(i))
			}
			in := &containv1.Batch{SchemaVersion: 1, Host: "h1", Events: evs}
			ctx := context.Background()
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				if err := e.enrichBatch(ctx, in); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*batch), "ns/event")
			b.ReportMetric(float64(b.N*batch)/b.Elapsed().Seconds(), "events/s")
		})
	}
}
