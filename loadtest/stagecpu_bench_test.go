package loadtest

import (
	"fmt"
	"testing"
	"time"

	"github.com/containsec/contain/analyzer"
	"github.com/containsec/contain/internal/bus"
	"github.com/containsec/contain/schemas/containv1"
)

// enrichedStream is the CONTAIN_EVENTS side of one simulated host: span
// of generated events in batches of n (one every 10 ms from the start),
// each event carrying its image as the enricher sets it, encoded.
func enrichedStream(n int, span time.Duration) [][]byte {
	cfg := DefaultGeneratorConfig()
	cfg.DeviationFraction = 0
	start := time.Unix(1_700_000_000, 0)
	h := newHostSim(cfg, 0, start)
	images := map[string]*ctrSim{}
	for _, c := range h.containers {
		images[c.id] = c
	}
	var out [][]byte
	for at := time.Duration(0); at < span; at += 10 * time.Millisecond {
		evs, _, _ := h.batch(n, start.Add(at))
		for _, ev := range evs {
			c := images[ev.ContainerId]
			ev.ImageRef, ev.ImageDigest = imageRef(c.image), imageDigest(c.image)
		}
		data, err := bus.Encode(&containv1.Batch{SchemaVersion: containv1.SchemaVersion, Host: h.name, Stage: "enricher",
			ProducerId: "p", Seq: uint64(len(out) + 1), Events: evs})
		if err != nil {
			panic(err)
		}
		out = append(out, data)
	}
	return out
}

// BenchmarkAnalyzerStageCPU is the analyzer's work per event once its
// baselines converged: decoding each CONTAIN_EVENTS batch (bus.Decode) and
// Engine.Observe on every event, in batches of 20, 50 and 100 events (the
// load test's generator; the NATS client's work per batch is not here).
// cpu-ns/event is the process's CPU time, GC included.
func BenchmarkAnalyzerStageCPU(b *testing.B) {
	for _, n := range []int{20, 50, 100} {
		cfg := analyzer.DefaultConfig()
		cfg.LearningWindow = 3 * time.Second
		eng, err := analyzer.NewEngine(cfg, nil)
		if err != nil {
			b.Fatal(err)
		}
		learn := enrichedStream(n, 6*time.Second)
		for _, data := range learn {
			bt, err := bus.Decode(data)
			if err != nil {
				b.Fatal(err)
			}
			for _, ev := range bt.Events {
				eng.Observe(ev)
			}
		}
		// Scored: the next 2 s of the same hosts' events.
		scored := enrichedStream(n, 8*time.Second)[len(learn):]
		for _, mode := range []string{"copy", "alias"} {
			decodeFn := bus.Decode
			if mode == "alias" {
				decodeFn = bus.DecodeAliased
			}
			b.Run(fmt.Sprintf("n=%d/%s", n, mode), func(b *testing.B) {
				b.ReportAllocs()
				defer cpuPerEvent(b, n)()
				i := 0
				for b.Loop() {
					bt, err := decodeFn(scored[i%len(scored)])
					if err != nil {
						b.Fatal(err)
					}
					for _, ev := range bt.Events {
						eng.Observe(ev)
					}
					i++
				}
			})
		}
	}
}
