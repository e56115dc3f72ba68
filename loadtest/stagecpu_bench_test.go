package loadtest

import (
	"fmt"
	"testing"
	"time"

	"github.com/containsec/contain/analyzer"
	"github.com/containsec/contain/internal/bus"
)

// BenchmarkAnalyzerStageCPU is the analyzer's work per event once its
// baselines converged: decoding each CONTAIN_EVENTS batch and
// Engine.Observe on every event, in batches of 20, 50 and 100 events of
// the generator's fleet (stageStream; the NATS client's work per batch is
// not here). "alias" decodes as the analyzer does (bus.DecodeAliased),
// "copy" with bus.Decode. cpu-ns/event is the process's CPU time, GC
// included.
func BenchmarkAnalyzerStageCPU(b *testing.B) {
	for _, n := range []int{20, 50, 100} {
		cfg := analyzer.DefaultConfig()
		cfg.LearningWindow = 3 * time.Second
		eng, err := analyzer.NewEngine(cfg, nil)
		if err != nil {
			b.Fatal(err)
		}
		// Learning: the first 6 s of the fleet's events (10,000/s).
		_, learn := stageStream(n, 60_000, true)
		for _, bt := range learn {
			for _, ev := range bt.Events {
				eng.Observe(ev)
			}
		}
		// Scored: the next 2 s of the same stream, encoded.
		_, all := stageStream(n, 80_000, true)
		var scored [][]byte
		for _, bt := range all[len(learn):] {
			data, err := bus.Encode(bt)
			if err != nil {
				b.Fatal(err)
			}
			scored = append(scored, data)
		}
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
