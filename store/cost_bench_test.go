package store

import (
	"context"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/containsec/contain/internal/bus"
	"github.com/containsec/contain/internal/metrics"
	"github.com/containsec/contain/internal/testenv"
	"github.com/containsec/contain/schemas/containv1"
)

// storeVariant is one configuration of BenchmarkStoreCPU.
type storeVariant struct {
	name        string
	lowCardFast bool
	compression string
}

// BenchmarkStoreCPU measures the store's own CPU per event (this
// process's user+system time, GC included; ClickHouse is another process)
// for one fetch of 20 messages of 1000 events (a 1 s fill at 20,000
// events/s) through handle: decode, duplicate lookup, conversion and the
// INSERT. Configurations are interleaved fetch by fetch, so load from
// other work on the machine spreads over all of them; it reports each
// one's CPU per event (mean and median) and its ratio to the first.
// CONTAIN_BENCH_VARIANTS picks some by name (comma-separated).
func BenchmarkStoreCPU(b *testing.B) {
	variants := []storeVariant{
		{"appendrow/lz4", false, CompressionLZ4},
		{"lowcard/lz4", true, CompressionLZ4},
		{"lowcard/none", true, CompressionNone},
	}
	if v := os.Getenv("CONTAIN_BENCH_VARIANTS"); v != "" {
		want := strings.Split(v, ",")
		variants = slices.DeleteFunc(variants, func(sv storeVariant) bool { return !slices.Contains(want, sv.name) })
	}
	cfg := testConfig(b)
	cfg.InsertTimeout, cfg.AckWait = time.Minute, 3*time.Minute // a loaded machine
	stores := map[string]*Store{}
	for _, c := range []string{CompressionLZ4, CompressionNone} {
		cfg.Compression = c
		s, err := Open(context.Background(), cfg, testenv.Discard())
		if err != nil {
			b.Fatal(err)
		}
		defer s.Close()
		stores[c] = s
	}
	defer func() { lowCardFast = true }()
	ctx := context.Background()
	batches := benchBatches(20, 1000)
	const rows = 20 * 1000
	ids := containv1.NewIDGen()
	fb, m := stores[CompressionLZ4].bufs(), metrics.New()
	cpu := make([][]float64, len(variants)) // ns per event of each fetch
	b.ResetTimer()
	for b.Loop() {
		for i, v := range variants {
			b.StopTimer()
			nextSecond(ids, batches)
			msgs := make([][]byte, len(batches))
			for j, bt := range batches {
				var err error
				if msgs[j], err = bus.Encode(bt); err != nil {
					b.Fatal(err)
				}
			}
			lowCardFast = v.lowCardFast
			b.StartTimer()
			c0 := cpuNow(b)
			if err := stores[v.compression].handle(ctx, fb, &fetch{msgs: encoded(msgs)}, m); err != nil {
				b.Fatal(err)
			}
			cpu[i] = append(cpu[i], float64((cpuNow(b)-c0).Nanoseconds())/rows)
		}
	}
	var base float64
	for i, v := range variants {
		mean := 0.0
		for _, x := range cpu[i] {
			mean += x
		}
		mean /= float64(len(cpu[i]))
		slices.Sort(cpu[i])
		name := strings.ReplaceAll(v.name, "/", "_")
		b.ReportMetric(mean, name+"_cpu-ns/event")
		b.ReportMetric(cpu[i][len(cpu[i])/2], name+"_median_cpu-ns/event")
		if i == 0 {
			base = mean
		} else {
			b.ReportMetric(mean/base, name+"/"+strings.ReplaceAll(variants[0].name, "/", "_"))
		}
	}
}
