package store

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/containsec/contain/internal/metrics"
	"github.com/containsec/contain/schemas/containv1"
)

// BenchmarkLowCardColumns compares, interleaved fetch by fetch, the store
// writing events whose per-container columns (migration 8's) are String
// (the schema of version 7) with the same rows into LowCardinality(String)
// columns (docs/design/021-store-inserts.md, decision 18). A fetch is 20
// messages of 1000 events of 50 containers with production-sized values
// (64-hex container ids, 71-byte digests); CONTAIN_BENCH_SHUFFLE=1
// interleaves the containers row by row. It reports the store's CPU per
// event (this process) for each schema and the ratio. With
// CONTAIN_BENCH_CLICKHOUSE_B (a second server) the LowCardinality store
// writes there, and with CONTAIN_BENCH_CLICKHOUSE_PID and
// CONTAIN_BENCH_CLICKHOUSE_B_PID (servers used by nothing else) it also
// reports each server's CPU per stored event over the whole run (INSERTs
// and the merges meanwhile).
func BenchmarkLowCardColumns(b *testing.B) {
	ctx := context.Background()
	str := benchStore(b, nil)
	revertLowCardColumns(b, str)
	lc := benchStore(b, func(c *Config) {
		if addr := os.Getenv("CONTAIN_BENCH_CLICKHOUSE_B"); addr != "" {
			c.Addr = []string{addr}
			b.Cleanup(func() { dropDatabase(b, addr, c.Database) })
		}
	})
	stores := []struct {
		name string
		s    *Store
		pid  string
	}{
		{"string", str, os.Getenv("CONTAIN_BENCH_CLICKHOUSE_PID")},
		{"lowcard", lc, os.Getenv("CONTAIN_BENCH_CLICKHOUSE_B_PID")},
	}
	for _, v := range stores {
		types := columnTypes(b, v.s, "events")
		b.Logf("%s: container_name %s, image_digest %s", v.name, types["container_name"], types["image_digest"])
	}
	batches := benchBatches(20, 1000)
	realisticValues(batches)
	if os.Getenv("CONTAIN_BENCH_SHUFFLE") == "1" {
		// Containers interleaved row by row: the LowCardinality path's
		// "same as the row before" shortcut rarely applies.
		r := rand.New(rand.NewPCG(1, 2))
		for _, bt := range batches {
			r.Shuffle(len(bt.Events), func(i, j int) { bt.Events[i], bt.Events[j] = bt.Events[j], bt.Events[i] })
		}
	}
	const rows = 20 * 1000
	ids := containv1.NewIDGen()
	m := metrics.New()
	fbs := []*fetchBufs{str.bufs(), lc.bufs()}
	cpu := make([][]float64, len(stores))
	srv0 := make([]time.Duration, len(stores))
	for i, v := range stores {
		srv0[i] = procCPU(b, v.pid)
	}
	b.ResetTimer()
	for b.Loop() {
		for i, v := range stores {
			b.StopTimer()
			nextSecond(ids, batches)
			msgs := encodeAll(b, batches)
			b.StartTimer()
			c0 := cpuNow(b)
			if err := v.s.handle(ctx, fbs[i], &fetch{msgs: encoded(msgs)}, m); err != nil {
				b.Fatal(err)
			}
			cpu[i] = append(cpu[i], float64((cpuNow(b)-c0).Nanoseconds())/rows)
		}
	}
	b.StopTimer()
	var base float64
	for i, v := range stores {
		mean := 0.0
		for _, x := range cpu[i] {
			mean += x
		}
		mean /= float64(len(cpu[i]))
		slices.Sort(cpu[i])
		b.ReportMetric(mean, v.name+"_cpu-ns/event")
		b.ReportMetric(cpu[i][len(cpu[i])/2], v.name+"_median_cpu-ns/event")
		if v.pid != "" {
			srv := procCPU(b, v.pid) - srv0[i]
			b.ReportMetric(float64(srv.Nanoseconds())/float64(len(cpu[i])*rows), v.name+"_clickhouse_cpu-ns/event")
		}
		if i == 0 {
			base = mean
		} else {
			b.ReportMetric(mean/base, v.name+"/"+stores[0].name)
		}
	}
}

// realisticValues gives the events of batches the sizes of production's
// per-container values: a 64-hex container id, a registry image ref, a
// 71-byte digest, a profile ref (digest@version).
func realisticValues(batches []*containv1.Batch) {
	hexOf := func(s string) string {
		h := sha256.Sum256([]byte(s))
		return hex.EncodeToString(h[:])
	}
	for _, bt := range batches {
		for _, ev := range bt.Events {
			short := ev.ContainerId
			ev.ContainerId = hexOf(short)
			img := int(ev.ContainerId[0]) % 10
			ev.ContainerName = "shop-" + short + "-7d4b9c8f6d-x2x9q"
			ev.ImageRef = fmt.Sprintf("registry.example.com/shop/svc%d:1.%d.0", img, img)
			ev.ImageDigest = "sha256:" + hexOf(ev.ImageRef)
			ev.ProfileRef = ev.ImageDigest + "@3"
		}
	}
}

// revertLowCardColumns gives s's events the String columns and the view
// of schema version 7 (what migration 8 changes).
func revertLowCardColumns(tb testing.TB, s *Store) {
	ctx := context.Background()
	stmts := []string{ddlDropEventsPerMinuteMV}
	for _, c := range lowCardEventColumns {
		stmts = append(stmts, fmt.Sprintf("ALTER TABLE %s MODIFY COLUMN %s String", c.table, c.name))
	}
	stmts = append(stmts, ddlEventsPerMinuteMV)
	for _, st := range stmts {
		if err := s.conn.Exec(ctx, st); err != nil {
			tb.Fatalf("%s: %v", st, err)
		}
	}
	if t := columnTypes(tb, s, "events")["image_digest"]; t != "String" {
		tb.Fatalf("image_digest is %s after the revert", t)
	}
}
