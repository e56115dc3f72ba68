package store

import (
	"context"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/containsec/contain/internal/metrics"
	"github.com/containsec/contain/schemas/containv1"
)

// storeVariant is one configuration of BenchmarkStoreCPU.
type storeVariant struct {
	name        string
	lowCardFast bool
	perColumn   bool // rows added a column at a time (groupedRows false)
	copyCols    bool // rows copied into the driver's columns (ownColumns false)
}

// BenchmarkStoreCPU measures the store's own CPU per event (this
// process's user+system time, GC included; ClickHouse is another process)
// for one fetch of 20 messages of 1000 events (a 1 s fill at 20,000
// events/s) through handle: decode, duplicate lookup, conversion and the
// INSERT. Configurations are interleaved fetch by fetch, so load from
// other work on the machine spreads over all of them; it reports each
// one's CPU per event (mean and median) and its ratio to the first.
// CONTAIN_BENCH_VARIANTS picks some by name (comma-separated): lowcard
// (the default path), appendrow (rows copied into the driver's columns,
// LowCardinality through its AppendRow), percolumn (rows added a column
// at a time), copy (rows copied into the driver's columns, main's path
// before design 021 decision 23). CONTAIN_BENCH_BLOCK_ROWS sets
// insert_block_rows. With
// CONTAIN_BENCH_CLICKHOUSE_PID (the pid of a server used by nothing else),
// it also reports that server's CPU per event for each configuration
// (/proc/<pid>/stat, 10 ms ticks: the INSERT, the lookup and the merges
// that ran meanwhile).
func BenchmarkStoreCPU(b *testing.B) {
	variants := []storeVariant{
		{"appendrow", false, false, true},
		{"lowcard", true, false, false}, // the default: own columns
		{"percolumn", true, true, false},
		{"copy", true, false, true}, // main's path before own columns
	}
	if v := os.Getenv("CONTAIN_BENCH_VARIANTS"); v != "" {
		want := strings.Split(v, ",")
		variants = slices.DeleteFunc(variants, func(sv storeVariant) bool { return !slices.Contains(want, sv.name) })
	}
	s := benchStore(b, func(cfg *Config) {
		if v, err := strconv.Atoi(os.Getenv("CONTAIN_BENCH_BLOCK_ROWS")); err == nil {
			cfg.InsertBlockRows = v
		}
	})
	defer func() { lowCardFast, groupedRows, ownColumns = true, true, true }()
	ctx := context.Background()
	batches := benchBatches(20, 1000)
	const rows = 20 * 1000
	ids := containv1.NewIDGen()
	fb, m := s.bufs(), metrics.New()
	cpu := make([][]float64, len(variants)) // ns per event of each fetch
	srv := make([]time.Duration, len(variants))
	pid := os.Getenv("CONTAIN_BENCH_CLICKHOUSE_PID")
	b.ResetTimer()
	for b.Loop() {
		for i, v := range variants {
			b.StopTimer()
			nextSecond(ids, batches)
			msgs := encodeAll(b, batches)
			lowCardFast, groupedRows, ownColumns = v.lowCardFast, !v.perColumn, !v.copyCols
			b.StartTimer()
			s0, c0 := procCPU(b, pid), cpuNow(b)
			if err := s.handle(ctx, fb, &fetch{msgs: encoded(msgs)}, m); err != nil {
				b.Fatal(err)
			}
			cpu[i] = append(cpu[i], float64((cpuNow(b)-c0).Nanoseconds())/rows)
			srv[i] += procCPU(b, pid) - s0
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
		if pid != "" {
			b.ReportMetric(float64(srv[i].Nanoseconds())/float64(len(cpu[i])*rows), name+"_clickhouse_cpu-ns/event")
		}
		if i == 0 {
			base = mean
		} else {
			b.ReportMetric(mean/base, name+"/"+strings.ReplaceAll(variants[0].name, "/", "_"))
		}
	}
}

// procCPU is the user+system CPU time of process pid ("": 0).
func procCPU(tb testing.TB, pid string) time.Duration {
	if pid == "" {
		return 0
	}
	data, err := os.ReadFile("/proc/" + pid + "/stat")
	if err != nil {
		tb.Fatal(err)
	}
	// Fields after the command name (which may hold spaces): utime and
	// stime are the 12th and 13th, in clock ticks (100 Hz).
	f := strings.Fields(string(data[strings.LastIndexByte(string(data), ')')+2:]))
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		tb.Fatalf("/proc/%s/stat: %q", pid, data)
	}
	return time.Duration(ut+st) * 10 * time.Millisecond
}

// BenchmarkRowBufAdd measures adding one events row to the column
// buffers (ns per row, no ClickHouse): a type of columns at a time
// (grouped, colGroup) against a column at a time (percolumn), alternated
// in blocks of 4,096 rows so that load on the machine spreads over both.
func BenchmarkRowBufAdd(b *testing.B) {
	defer func() { groupedRows = true }()
	rs := newRowSetCap(false, 4096)
	var rows []eventRow
	bi := batchInfo{host: "host-a", stage: "enricher", producer: "p", seq: 1}
	for _, bt := range benchBatches(1, 64) {
		for i, ev := range bt.Events {
			var r eventRow
			r.fill(&bi, i, ev, time.Now(), false)
			rows = append(rows, r)
		}
	}
	var took [2]time.Duration
	n := 0
	for b.Loop() {
		for k, grouped := range []bool{true, false} {
			groupedRows = grouped
			t0 := time.Now()
			for i := range 4096 {
				rs.events.add(&rows[i%len(rows)])
			}
			took[k] += time.Since(t0)
			rs.events.reset()
		}
		n += 4096
	}
	b.ReportMetric(float64(took[0].Nanoseconds())/float64(n), "grouped_ns/row")
	b.ReportMetric(float64(took[1].Nanoseconds())/float64(n), "percolumn_ns/row")
	b.ReportMetric(took[1].Seconds()/took[0].Seconds(), "percolumn/grouped")
}
