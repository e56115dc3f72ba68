package store

import (
	"context"
	"os"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ClickHouse/ch-go"
	"github.com/ClickHouse/ch-go/proto"

	"github.com/containsec/contain/schemas/containv1"
)

// cpuNow is the process's user+system CPU time.
func cpuNow(tb testing.TB) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		tb.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// columnTypes are the ClickHouse types of table's columns by name.
func columnTypes(tb testing.TB, s *Store, table string) map[string]string {
	rows, err := s.conn.Query(context.Background(), "SELECT name, type FROM system.columns WHERE database = ? AND table = ?", s.cfg.Database, table)
	if err != nil {
		tb.Fatal(err)
	}
	defer rows.Close()
	types := map[string]string{}
	for rows.Next() {
		var name, typ string
		if err := rows.Scan(&name, &typ); err != nil {
			tb.Fatal(err)
		}
		types[name] = typ
	}
	return types
}

// dialChGo opens a ch-go client on s's database. ch-go v0.74 sends no
// client info below protocol revision 54420 and ClickHouse 18.16
// (54412) then misreads the query: the benchmark says so and stops.
func dialChGo(tb testing.TB, s *Store) *ch.Client {
	ctx := context.Background()
	// LZ4, as the store's clickhouse-go connections (store.go).
	c, err := ch.Dial(ctx, ch.Options{Address: s.cfg.Addr[0], Database: s.cfg.Database, User: s.cfg.Username, Password: s.cfg.Password, Compression: ch.CompressionLZ4})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = c.Close() })
	var one proto.ColUInt8
	if err := c.Do(ctx, ch.Query{Body: "SELECT 1", Result: proto.Results{{Name: "1", Data: &one}}}); err != nil {
		tb.Skipf("ch-go cannot query the server (%s, revision %d): %q -- ch-go gates the client info on revision 54420, 18.16 expects it from 54032 (design 021, \"ch-go\")",
			c.ServerInfo().Name, c.ServerInfo().Revision, err.Error())
	}
	return c
}

// BenchmarkChGoVsClickHouseGo inserts the same events rows through
// clickhouse-go (today's path: PrepareBatch, appendBlock, Send) and
// through ch-go (reused columns, Reset between INSERTs), interleaved: one
// INSERT of each per iteration, fresh ids every time. It reports the
// client's CPU per row of each (getrusage of the process, a GC after each
// INSERT counted to it), their ratio, and rows/s of each; chgo_load is
// the part of ch-go's CPU that copies the store's column buffers into
// ch-go's columns (what converting straight into them would save).
func BenchmarkChGoVsClickHouseGo(b *testing.B) {
	s := benchStore(b, nil)
	c := dialChGo(b, s)
	ctx := context.Background()
	const rows = 20 * 1000
	batches := benchBatches(20, 1000)
	ids := containv1.NewIDGen()
	rs := newRowSetCap(false, rows)
	types := columnTypes(b, s, "events")
	cols, err := newChColumns(eventsTable, rs.events, types)
	if err != nil {
		b.Fatal(err)
	}
	insert := eventsTable.insertSQL() + " VALUES"
	fill := func() {
		rs.reset()
		nextSecond(ids, batches)
		for _, bt := range batches {
			rs.add(bt, time.Now(), nil)
		}
	}
	fill()
	checkSameRows(b, s, c, cols, rs, types)
	var goCPU, chCPU, goWall, chWall, loadCPU time.Duration
	var ratios []float64
	runtime.GC()
	b.ResetTimer()
	for b.Loop() {
		fill()
		w0, c0 := time.Now(), cpuNow(b)
		batch, err := s.conn.PrepareBatch(ctx, eventsTable.insertSQL())
		if err != nil {
			b.Fatal(err)
		}
		if err := appendBlock(batch, rs.events, false, nil); err != nil {
			b.Fatal(err)
		}
		if err := batch.Send(); err != nil {
			b.Fatal(err)
		}
		runtime.GC()
		gc, gw := cpuNow(b)-c0, time.Since(w0)

		fill()
		w0, c0 = time.Now(), cpuNow(b)
		if err := cols.load(rs.events, 0, rs.events.len()); err != nil {
			b.Fatal(err)
		}
		loadCPU += cpuNow(b) - c0
		if err := c.Do(ctx, ch.Query{Body: insert, Input: cols.input}); err != nil {
			b.Fatal(err)
		}
		runtime.GC()
		cc, cw := cpuNow(b)-c0, time.Since(w0)
		goCPU, chCPU, goWall, chWall = goCPU+gc, chCPU+cc, goWall+gw, chWall+cw
		ratios = append(ratios, cc.Seconds()/gc.Seconds())
	}
	b.StopTimer()
	n := float64(b.N * rows)
	if got := queryUint(b, s, "SELECT count() FROM events"); got != uint64(2*b.N*rows) {
		b.Fatalf("events holds %d rows, want %d", got, 2*b.N*rows)
	}
	slices.Sort(ratios)
	b.ReportMetric(float64(goCPU.Nanoseconds())/n, "clickhousego_cpu-ns/row")
	b.ReportMetric(float64(chCPU.Nanoseconds())/n, "chgo_cpu-ns/row")
	b.ReportMetric(float64(loadCPU.Nanoseconds())/n, "chgo_load_cpu-ns/row")
	b.ReportMetric(chCPU.Seconds()/goCPU.Seconds(), "chgo/clickhousego_cpu")
	b.ReportMetric(ratios[len(ratios)/2], "median_pair_cpu_ratio")
	b.ReportMetric(n/goWall.Seconds(), "clickhousego_rows/s")
	b.ReportMetric(n/chWall.Seconds(), "chgo_rows/s")
	if os.Getenv("CONTAIN_BENCH_VERBOSE") != "" {
		b.Logf("clickhouse-go %v CPU, ch-go %v CPU over %d rows each", goCPU, chCPU, b.N*rows)
	}
}

// rowsDigest is an order-independent digest of every column of table.
func rowsDigest(tb testing.TB, s *Store, table string, types map[string]string) uint64 {
	parts := make([]string, 0, len(eventsTable.cols))
	for _, cd := range eventsTable.cols {
		name := cd.colName()
		switch t := types[name]; {
		case strings.HasPrefix(t, "Array("):
			parts = append(parts, "arrayStringConcat(arrayMap(x -> toString(x), "+name+"), ',')")
		case strings.HasPrefix(t, "FixedString"):
			parts = append(parts, "hex("+name+")")
		default:
			parts = append(parts, "toString("+name+")")
		}
	}
	return queryUint(tb, s, "SELECT sum(cityHash64(concat("+strings.Join(parts, ", '|', ")+"))) FROM "+table)
}

// checkSameRows inserts rs's events through both drivers into two tables
// and fails unless they hold the same rows.
func checkSameRows(tb testing.TB, s *Store, c *ch.Client, cols *chColumns, rs *rowSet, types map[string]string) {
	ctx := context.Background()
	if err := s.conn.Exec(ctx, "CREATE TABLE events_chgo AS events"); err != nil {
		tb.Fatal(err)
	}
	if err := s.conn.Exec(ctx, "CREATE TABLE events_ref AS events"); err != nil {
		tb.Fatal(err)
	}
	ref := &tableDef[row]{name: "events_ref", cols: eventsTable.cols}
	if err := insertRows(ctx, s.conn, &rowBuf[row]{def: ref, bufs: rs.events.bufs, n: rs.events.n}, rs.events.len(), s.addr); err != nil {
		tb.Fatal(err)
	}
	if err := cols.load(rs.events, 0, rs.events.len()); err != nil {
		tb.Fatal(err)
	}
	chgo := &tableDef[row]{name: "events_chgo", cols: eventsTable.cols}
	if err := c.Do(ctx, ch.Query{Body: chgo.insertSQL() + " VALUES", Input: cols.input}); err != nil {
		tb.Fatal(err)
	}
	n := queryUint(tb, s, "SELECT count() FROM events_chgo")
	a, b := rowsDigest(tb, s, "events_ref", types), rowsDigest(tb, s, "events_chgo", types)
	if n != uint64(rs.events.len()) || a != b {
		tb.Fatalf("ch-go stored %d rows (digest %x), clickhouse-go %d (digest %x)", n, b, rs.events.len(), a)
	}
}
