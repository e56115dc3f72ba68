package store

import (
	"context"
	"testing"
	"time"

	"github.com/containsec/contain/internal/metrics"
	"github.com/containsec/contain/internal/testenv"
)

// BenchmarkClusterInsert inserts the same kind of fetch (10 messages of
// 1,000 events, 50 containers) through write=distributed and write=local
// on two real shards, alternating, and reports each mode's rows/s and the
// servers' CPU per row (both servers, measured from /proc).
//
//	go test -run '^$' -bench BenchmarkClusterInsert -benchtime 20x ./store
func BenchmarkClusterInsert(b *testing.B) {
	c := testenv.StartClickHouseCluster(b, testenv.ClickHouseClusterConfig{Name: "contain", Shards: 2, Replicas: 1})
	stores := map[string]*Store{
		WriteDistributed: openStore(b, clusterConfig(c, "bench_distributed", WriteDistributed)),
		WriteLocal:       openStore(b, clusterConfig(c, "bench_local", WriteLocal)),
	}
	ctx := context.Background()
	m := metrics.New()
	wall := map[string]time.Duration{}
	cpu := map[string]time.Duration{}
	rows, i := 0, 0
	for b.Loop() {
		order := []string{WriteDistributed, WriteLocal}
		if i%2 == 1 {
			order = []string{WriteLocal, WriteDistributed}
		}
		i++
		for _, mode := range order {
			batches := benchBatches(10, 1000)
			c0, t0 := c.CPU(b), time.Now()
			if err := stores[mode].Insert(ctx, m, batches...); err != nil {
				b.Fatal(err)
			}
			wall[mode] += time.Since(t0)
			cpu[mode] += c.CPU(b) - c0
		}
		rows += 10_000
	}
	for _, mode := range []string{WriteDistributed, WriteLocal} {
		if n := queryUint(b, stores[mode], "SELECT count() FROM events"); n != uint64(rows) {
			b.Fatalf("%s: %d rows stored, %d inserted", mode, n, rows)
		}
		b.ReportMetric(float64(rows)/wall[mode].Seconds(), mode+"_rows/s")
		b.ReportMetric(float64(cpu[mode].Microseconds())/float64(rows), mode+"_server_cpu_us/row")
	}
}
