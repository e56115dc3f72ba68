package analyzer

import (
	"testing"
	"time"

	"github.com/containsec/contain/internal/bus"
	"github.com/containsec/contain/schemas/containv1"
)

// BenchmarkFleetObserve is the engine alone on the fleet load test's mix
// (fleetMix) against converged baselines: the events are decoded before
// the timer starts, so that a change of Engine.observe is not drowned in
// decoding. Per op: one event. Shapes: mix is BenchmarkFleetHandle's (20
// hosts of 50 containers of 100 images, 81 events a batch); fleet is one
// analyzer's share of the fleet run (200 hosts of 50 containers over 3
// analyzers): 67 hosts of 50 containers of 300 images, 83 events a batch.
//
//	go test ./analyzer -run '^$' -bench FleetObserve -benchmem -count 5
func BenchmarkFleetObserve(b *testing.B) {
	for _, tc := range []struct {
		name                             string
		hosts, perHost, images, perBatch int
		step                             time.Duration
	}{
		{"mix", 20, 50, 100, 81, 10 * time.Millisecond},
		{"fleet", 67, 50, 300, 83, 20 * time.Millisecond},
	} {
		b.Run(tc.name, func(b *testing.B) {
			cfg := testConfig()
			e := newEngine(b, cfg, nil)
			mix := newFleetMix(tc.hosts, tc.perHost, tc.images, tc.perBatch)
			step := int64(tc.step)
			at := t0
			for at < t0+2*int64(cfg.LearningWindow) {
				for _, data := range mix.batches(b, at) {
					bt, err := bus.DecodeAliased(data)
					if err != nil {
						b.Fatal(err)
					}
					for _, ev := range bt.Events {
						e.Observe(ev)
					}
				}
				at += step
			}
			var evs []*containv1.Event
			for range 10 {
				for _, data := range mix.batches(b, at) {
					bt, err := bus.DecodeAliased(data)
					if err != nil {
						b.Fatal(err)
					}
					evs = append(evs, bt.Events...)
				}
				at += step
			}
			b.ReportAllocs()
			b.ResetTimer()
			cpu0 := cpuNs()
			for i := 0; i < b.N; i++ {
				if out := e.Observe(evs[i%len(evs)]); len(out) != 0 {
					b.Fatalf("benign event alerted: %v", out[0].GetAlert().Reasons)
				}
			}
			b.StopTimer()
			b.ReportMetric(float64(cpuNs()-cpu0)/float64(b.N), "cpu-ns/event")
			if st := e.Stats(); st.Scored == 0 {
				b.Fatalf("nothing scored: %+v", st)
			}
		})
	}
}
