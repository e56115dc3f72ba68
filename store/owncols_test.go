package store

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
	"time"

	chproto "github.com/ClickHouse/ch-go/proto"
	"github.com/ClickHouse/clickhouse-go/v2/ext"
	chcol "github.com/ClickHouse/clickhouse-go/v2/lib/column"
	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/containsec/contain/internal/bus"
	"github.com/containsec/contain/internal/metrics"
	"github.com/containsec/contain/schemas/containv1"
)

// encodeCol is what the driver writes of column c in a block after its
// name and type: the state prefix of a column that has one, the values.
func encodeCol(tb testing.TB, c chcol.Interface) []byte {
	var b chproto.Buffer
	if s, ok := c.(chcol.CustomSerialization); ok {
		if err := s.WriteStatePrefix(&b); err != nil {
			tb.Fatal(err)
		}
	}
	c.Encode(&b)
	return b.Buf
}

// checkOwnEncoding appends vals to a buffer of one column of ClickHouse
// type typ (half of them before its own column is made, half after, as
// the first block of a writer is), then encodes them twice: copied into
// the driver's column (appendTo, main's path) and as the buffer's own
// column. The bytes must be the same; again after leaving some rows out
// (keep).
func checkOwnEncoding[T any](t *testing.T, typ string, vals []T) {
	t.Helper()
	var groups []colGroup[T]
	buf := col("c", func(v T) T { return v }).newBuf(0, &groups, &bufEnv[T]{}).(*typedBuf[T, T])
	driverCol := func() chcol.Interface {
		c, err := chcol.Type(typ).Column("c", &chcol.ServerContext{})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	half := len(vals) / 2
	for _, v := range vals[:half] {
		groups[0].add(v)
	}
	own := buf.own(driverCol())
	if own == nil {
		t.Fatalf("%s: no own column for %T", typ, vals)
	}
	for _, v := range vals[half:] {
		groups[0].add(v)
	}
	compare := func(what string) {
		t.Helper()
		drv := driverCol()
		if err := buf.appendTo(drv); err != nil {
			t.Fatal(err)
		}
		if own.Rows() != drv.Rows() {
			t.Fatalf("%s %s: own column %d rows, driver's %d", typ, what, own.Rows(), drv.Rows())
		}
		want, got := encodeCol(t, drv), encodeCol(t, own)
		if !bytes.Equal(got, want) {
			t.Fatalf("%s %s (%d rows): own column encodes %d bytes, the driver's %d; first difference at %d",
				typ, what, own.Rows(), len(got), len(want), firstByteDiff(got, want))
		}
	}
	compare("all rows")
	keep := make([]bool, len(vals))
	for i := range keep {
		keep[i] = i%3 != 1
	}
	buf.keep(keep)
	compare("kept rows")
	buf.reset()
	for _, v := range vals[half:] {
		groups[0].add(v)
	}
	compare("after reset")
}

func firstByteDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// TestOwnEncodersMatchDriver holds every encoding of the store's own
// columns to the driver's column of the same type, byte for byte, on
// values at the edges of each encoding: strings of 0, 127, 128 and 20,000
// bytes, LowCardinality dictionaries that need 8-, 16- and 32-bit keys,
// the empty string among them, empty and long arrays, FixedString values
// shorter and longer than the column, the zero time.
func TestOwnEncodersMatchDriver(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	str := func(n int) string {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte('a' + rng.IntN(26))
		}
		return string(b)
	}
	strs := []string{"", "exec", "ümlaut", str(127), str(128), str(20000), "exec", ""}
	for range 300 {
		strs = append(strs, str(rng.IntN(200)))
	}
	checkOwnEncoding(t, "String", strs)
	for _, distinct := range []int{1, 3, 254, 255, 256, 65534, 65535, 70000} {
		vals := make([]string, 0, 2*distinct+10)
		for i := range 2*distinct + 10 {
			switch {
			case i%7 == 3:
				vals = append(vals, "")
			case i%5 == 0:
				vals = append(vals, "v"+strings.Repeat("x", i%3)) // a few repeated values
			default:
				vals = append(vals, fmt.Sprintf("value-%d", rng.IntN(distinct)))
			}
		}
		t.Run(fmt.Sprintf("lowcard%d", distinct), func(t *testing.T) { checkOwnEncoding(t, lowCardString, vals) })
	}
	nums := func(n int) []uint64 {
		out := make([]uint64, n)
		for i := range out {
			out[i] = rng.Uint64() >> rng.IntN(64)
		}
		return out
	}
	u64 := nums(500)
	checkOwnEncoding(t, "UInt64", u64)
	conv := func(f func(uint64)) {
		for _, v := range u64 {
			f(v)
		}
	}
	var u8s []uint8
	var u16s []uint16
	var u32s []uint32
	var i32s []int32
	var i64s []int64
	var f64s []float64
	var ids []uuid.UUID
	var times []time.Time
	var fixed [][]byte
	conv(func(v uint64) {
		u8s, u16s, u32s = append(u8s, uint8(v)), append(u16s, uint16(v)), append(u32s, uint32(v))
		i32s, i64s, f64s = append(i32s, int32(v)), append(i64s, int64(v)), append(f64s, float64(int64(v))/3)
		var id uuid.UUID
		for i := range id {
			id[i] = byte(v >> (i % 8 * 8))
		}
		ids = append(ids, id)
		switch v % 4 {
		case 0:
			times = append(times, time.Time{})
		default:
			times = append(times, time.Unix(int64(uint32(v)), int64(v%1e9)).UTC())
		}
		fixed = append(fixed, bytes.Repeat([]byte{byte(v)}, int(v%20)))
	})
	fixed = append(fixed, nil, []byte{})
	checkOwnEncoding(t, "UInt8", u8s)
	checkOwnEncoding(t, "UInt16", u16s)
	checkOwnEncoding(t, "UInt32", u32s)
	checkOwnEncoding(t, "Int32", i32s)
	checkOwnEncoding(t, "Int64", i64s)
	checkOwnEncoding(t, "Float64", f64s)
	checkOwnEncoding(t, "UUID", ids)
	checkOwnEncoding(t, "DateTime", times)
	checkOwnEncoding(t, "FixedString(16)", fixed)
	var aStr [][]string
	var aU64 [][]uint64
	var aU32 [][]uint32
	var aF64 [][]float64
	var aIDs [][]uuid.UUID
	for i := range 200 {
		n := 0
		if i%3 == 0 {
			n = rng.IntN(12)
		}
		aStr = append(aStr, strs[i:i+n])
		aU64 = append(aU64, u64[i:i+n])
		aU32 = append(aU32, u32s[i:i+n])
		aF64 = append(aF64, f64s[i:i+n])
		aIDs = append(aIDs, ids[i:i+n])
	}
	checkOwnEncoding(t, "Array(String)", aStr)
	checkOwnEncoding(t, "Array(UInt64)", aU64)
	checkOwnEncoding(t, "Array(UInt32)", aU32)
	checkOwnEncoding(t, "Array(Float64)", aF64)
	checkOwnEncoding(t, "Array(UUID)", aIDs)
}

// TestOwnColumnsEncodeAsDriver: every column of the events, alerts and
// actions tables, as the server types them, is the store's own (bindOwn)
// and encodes the rows of every kind (wireRowSeeds, sampleEvents, the
// benchmark's fetch) as the driver's column does, byte for byte, before
// and after the duplicate lookup leaves rows out. It fails when the
// driver's batch hides its block (blockOf) or a column's type is not one
// ownCol encodes.
func TestOwnColumnsEncodeAsDriver(t *testing.T) {
	s := openStore(t, testConfig(t))
	ctx := context.Background()
	rs := newRowSetCap(false, 1024)
	// Own columns bound before the rows are added, as from a writer's
	// second INSERT on: LowCardinality columns keyed as rows are added
	// (through the container for the per-container ones).
	for _, buf := range []*rowBuf[row]{rs.events, rs.alerts, rs.actions} {
		b, err := s.conn.PrepareBatch(ctx, buf.def.insertSQL())
		if err != nil {
			t.Fatal(err)
		}
		if bindOwn(b, buf) == nil {
			t.Fatalf("%s: no column of the driver's block is the store's own", buf.def.name)
		}
		_ = b.Abort()
	}
	now := time.Unix(1700000000, 0)
	for _, data := range wireRowSeeds(t) {
		b, err := bus.Decode(data)
		if err != nil {
			t.Fatal(err)
		}
		rs.add(b, now, nil)
	}
	ids := containv1.NewIDGen()
	for _, b := range rtBatches(ids) {
		rs.add(b, now, nil)
	}
	for _, b := range benchBatches(2, 500) {
		rs.add(b, now, nil)
	}
	for _, b := range fleetBatches(3, 400, 60) {
		rs.add(b, now, nil)
	}
	for _, buf := range []*rowBuf[row]{rs.events, rs.alerts, rs.actions} {
		if buf.len() < 2 {
			t.Fatalf("%s: %d rows", buf.def.name, buf.len())
		}
		compare := func(what string) {
			t.Helper()
			ref, err := s.conn.PrepareBatch(ctx, buf.def.insertSQL())
			if err != nil {
				t.Fatal(err)
			}
			defer ref.Abort()
			if err := appendBlock(ref, buf, false, nil); err != nil {
				t.Fatal(err)
			}
			b, err := s.conn.PrepareBatch(ctx, buf.def.insertSQL())
			if err != nil {
				t.Fatal(err)
			}
			defer b.Abort()
			owned := bindOwn(b, buf)
			if owned == nil {
				t.Fatalf("%s: no column of the driver's block is the store's own (the driver's batch changed? store/owncols.go blockOf)", buf.def.name)
			}
			for i, o := range owned {
				if !o {
					t.Errorf("%s.%s (%s): not the store's own column", buf.def.name, buf.def.cols[i].colName(), blockOf(b).Columns[i].Type())
				}
			}
			if err := appendBlock(b, buf, false, owned); err != nil {
				t.Fatal(err)
			}
			want, got := blockOf(ref), blockOf(b)
			if got.Rows() != want.Rows() || got.Rows() != buf.len() {
				t.Fatalf("%s %s: %d rows own, %d copied, %d buffered", buf.def.name, what, got.Rows(), want.Rows(), buf.len())
			}
			for i := range want.Columns {
				var wb, gb chproto.Buffer
				if err := want.EncodeColumn(&wb, 0, i); err != nil {
					t.Fatal(err)
				}
				if err := got.EncodeColumn(&gb, 0, i); err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(wb.Buf, gb.Buf) {
					t.Errorf("%s.%s %s: own column encodes %d bytes, the driver's %d; first difference at %d",
						buf.def.name, buf.def.cols[i].colName(), what, len(gb.Buf), len(wb.Buf), firstByteDiff(gb.Buf, wb.Buf))
				}
			}
		}
		compare("every row")
		keep := make([]bool, buf.len())
		for i := range keep {
			keep[i] = i%4 != 0 // the first row, and every fourth, left out
		}
		buf.keep(keep)
		compare("rows kept")
	}
}

// rtBatches are batches with alerts and actions beside events of every
// kind (each with a wall time: rows of two runs compare equal).
func rtBatches(ids *containv1.IDGen) []*containv1.Batch {
	base := time.Unix(1700000100, 0)
	evs := sampleEvents(ids, "c-own", base)
	alert := &containv1.Event{Id: ids.Next(), Host: "host-a", ContainerId: "c-own", ContainerName: "web-1", ImageRef: "docker.io/library/nginx:1.27",
		ImageDigest: "sha256:abc", WallNs: base.Add(10 * time.Second).UnixNano(), Kind: containv1.Kind_KIND_ALERT, CgroupId: 4242,
		Body: &containv1.Event_Alert{Alert: &containv1.Alert{Score: 0.93, Rule: "baseline.deviation", Priority: "Critical", BaselineVersion: "v3", Count: 2,
			Reasons: []*containv1.Reason{
				{Code: "network.unseen_peer", Message: "connect to 10.1.2.3:4444", Score: 0.6, Mitre: []string{"T1071", "T1041"}},
				{Code: "exec.unseen", Message: "wget never ran", Score: 0.33, Mitre: []string{"T1105", "T1071"}},
			},
			EvidenceIds: [][]byte{evs[0].Id, evs[2].Id}, Trigger: evs[2], IncidentId: evs[5].Id,
			Pod: "web-7d4b9c8f6d-x2x9q", Namespace: "shop", Labels: map[string]string{"app": "web", "io.kubernetes.pod.namespace": "shop"}}}}
	bare := &containv1.Event{Id: ids.Next(), WallNs: base.UnixNano(), Body: &containv1.Event_Alert{Alert: &containv1.Alert{}}}
	action := &containv1.Event{Id: ids.Next(), Host: "host-a", ContainerId: "c-own", ImageRef: "docker.io/library/nginx:1.27",
		WallNs: base.Add(11 * time.Second).UnixNano(), Kind: containv1.Kind_KIND_ACTION,
		Body: &containv1.Event_Action{Action: &containv1.Action{Type: containv1.Action_TYPE_PAUSE, Result: containv1.Action_RESULT_OK, Actor: "responder",
			Reason: "score 0.93", Method: "cgroup.freeze", Detail: "froze 3 tasks", AlertId: alert.Id, Score: 0.93, LatencyNs: 1234567}}}
	action2 := &containv1.Event{Id: ids.Next(), WallNs: base.UnixNano(), Body: &containv1.Event_Action{Action: &containv1.Action{Type: 99}}}
	p := bus.NewProducer("host-a", "enricher")
	return []*containv1.Batch{p.Batch(append(evs, alert, action)), p.Batch([]*containv1.Event{bare, action2, alert})}
}

// TestOwnColumnsStoreAsCopied inserts the same fetches through handle
// twice, with the store's own columns and with the copy into the
// driver's columns (ownColumns false), each into a database of its own:
// first a part of the rows, then every row (the duplicate lookup leaves
// the first part out of the second INSERT, its first block among them),
// in two writers' blocks of a few hundred rows. Every column of every
// table must read back the same, and the duplicates be counted the same.
func TestOwnColumnsStoreAsCopied(t *testing.T) {
	defer func() { ownColumns = true }()
	ids := containv1.NewIDGen()
	batches := append(append(rtBatches(ids), benchBatches(3, 400)...), fleetBatches(3, 400, 60)...)
	// Payload-like strings: the messages are encoded, and the store reads
	// its rows from their bytes.
	var msgs [][]byte
	for _, b := range batches {
		data, err := bus.Encode(b)
		if err != nil {
			t.Fatal(err)
		}
		msgs = append(msgs, data)
	}
	var digests [2]map[string]uint64
	var dups [2]float64
	for k, own := range []bool{true, false} {
		ownColumns = own
		cfg := testConfig(t)
		cfg.InsertBlockRows, cfg.InsertsInFlight = 300, 2
		s := openStore(t, cfg)
		m := metrics.New()
		fb := s.bufs()
		for _, f := range [][][]byte{{msgs[0], msgs[3], msgs[5]}, msgs} {
			// A copy the store may hold: handle's rows point into it.
			cp := make([][]byte, len(f))
			for i := range f {
				cp[i] = bytes.Clone(f[i])
			}
			if err := s.handle(context.Background(), fb, &fetch{msgs: encoded(cp)}, m); err != nil {
				t.Fatal(err)
			}
			for _, b := range cp { // what the store kept of the payloads is a copy
				for i := range b {
					b[i] = 0xee
				}
			}
		}
		dups[k] = testutil.ToFloat64(m.Dropped.WithLabelValues(metrics.StageStore, reasonDuplicate))
		digests[k] = map[string]uint64{}
		for _, table := range []*tableDef[row]{eventsTable, alertsTable, actionsTable} {
			digests[k][table.name] = tableDigest(t, s, table)
		}
		if n := queryUint(t, s, "SELECT count() FROM events"); n < 2400 {
			t.Fatalf("own %v: %d events rows", own, n)
		}
	}
	if dups[0] != dups[1] || dups[0] == 0 {
		t.Errorf("duplicates: %v own, %v copied", dups[0], dups[1])
	}
	for table, d := range digests[0] {
		if digests[1][table] != d {
			t.Errorf("%s: own columns stored digest %x, copied %x", table, d, digests[1][table])
		}
	}
}

// tableDigest is an order-independent digest of every column of table.
func tableDigest(tb testing.TB, s *Store, table *tableDef[row]) uint64 {
	types := map[string]string{}
	rows, err := s.conn.Query(context.Background(), "SELECT name, type FROM system.columns WHERE database = currentDatabase() AND table = ?", table.name)
	if err != nil {
		tb.Fatal(err)
	}
	for rows.Next() {
		var n, ty string
		if err := rows.Scan(&n, &ty); err != nil {
			tb.Fatal(err)
		}
		types[n] = ty
	}
	rows.Close()
	parts := make([]string, 0, len(table.cols))
	for _, cd := range table.cols {
		name := cd.colName()
		switch ty := types[name]; {
		case strings.HasPrefix(ty, "Array("):
			parts = append(parts, "arrayStringConcat(arrayMap(x -> hex(toString(x)), "+name+"), ',')")
		default:
			parts = append(parts, "hex(toString("+name+"))")
		}
	}
	return queryUint(tb, s, "SELECT sum(cityHash64(concat("+strings.Join(parts, ", '|', ")+"))) + count() FROM "+table.name)
}

// TestOwnLowCardRebuildsBadKeys: a LowCardinality block whose keys do not
// all fall in its dictionary (a bug; ClickHouse 18.16 crashes on such a
// block) is rebuilt from the values before it is encoded.
func TestOwnLowCardRebuildsBadKeys(t *testing.T) {
	var groups []colGroup[string]
	buf := col("c", func(v string) string { return v }).newBuf(0, &groups, &bufEnv[string]{}).(*typedBuf[string, string])
	drv := func() chcol.Interface {
		c, err := chcol.Type(lowCardString).Column("c", &chcol.ServerContext{})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	own := buf.own(drv())
	for _, v := range []string{"a", "b", "a", "c"} {
		groups[0].add(v)
	}
	buf.keys.keys[2] = 7 // past the dictionary of 4
	ref := drv()
	if err := buf.appendTo(ref); err != nil {
		t.Fatal(err)
	}
	if got, want := encodeCol(t, own), encodeCol(t, ref); !bytes.Equal(got, want) {
		t.Fatalf("encoded %v, want %v", got, want)
	}
}

// checkEventParts fails unless rows buffered sparse (the columns of a
// part hold only that part's rows) read back as rows buffered dense
// (every getter called for every row): the columns of a part take their
// zero row's value on every row of another part.
func checkEventParts(tb testing.TB, rows []eventRow) {
	tb.Helper()
	sparse, dense := newRowBufSparse(eventsTable, len(rows), true), newRowBufSparse(eventsTable, len(rows), false)
	if !sparse.sparse || dense.sparse {
		tb.Fatal("sparse and dense row buffers are the same")
	}
	for i := range rows {
		sparse.add(&rows[i])
		dense.add(&rows[i])
	}
	for c := range sparse.bufs {
		sv, dv := sparse.bufs[c].values(0, sparse.len()), dense.bufs[c].values(0, dense.len())
		if !reflect.DeepEqual(sv, dv) {
			tb.Fatalf("events.%s: sparse %v, dense %v", eventsTable.cols[c].colName(), sv, dv)
		}
	}
}

// TestEventParts: the events rows of every kind, read from the wire and
// decoded (wireRowSeeds, rtBatches), buffered sparse, are the rows
// buffered dense; so are they after the duplicate lookup leaves some out.
func TestEventParts(t *testing.T) {
	now := time.Unix(1700000000, 0)
	var rows []eventRow
	add := func(b *containv1.Batch) {
		bi := infoOf(b)
		for i, ev := range b.Events {
			var r eventRow
			r.fill(&bi, i, ev, now, false)
			rows = append(rows, r)
		}
	}
	var a arena
	for _, data := range wireRowSeeds(t) {
		b, err := bus.Decode(data)
		if err != nil {
			t.Fatal(err)
		}
		add(b)
		var wb bus.WireBatch
		if !bus.ScanBatch(data, &wb) {
			t.Fatal("seed not scanned")
		}
		bi := infoOf(b)
		for i := range wb.Events {
			var r eventRow
			if r.fillWire(&bi, i, wb.Events[i].Raw, now, &a) {
				rows = append(rows, r)
			}
		}
	}
	for _, b := range rtBatches(containv1.NewIDGen()) {
		add(b)
	}
	parts := map[uint8]int{}
	for i := range rows {
		parts[eventPart(&rows[i])]++
	}
	if len(parts) != int(partContainer)+1 {
		t.Fatalf("rows of %d parts, want every one of %d: %v", len(parts), partContainer+1, parts)
	}
	checkEventParts(t, rows)
	// Kept rows: buffers compacted by keep read back as the rows kept.
	sparse := newRowBufSparse(eventsTable, 0, true)
	for i := range rows {
		sparse.add(&rows[i])
	}
	keep := make([]bool, len(rows))
	var kept []eventRow
	for i := range keep {
		if keep[i] = i%3 != 0; keep[i] {
			kept = append(kept, rows[i])
		}
	}
	sparse.keep(keep)
	dense := newRowBufSparse(eventsTable, 0, false)
	for i := range kept {
		dense.add(&kept[i])
	}
	for c := range sparse.bufs {
		sv, dv := sparse.bufs[c].values(0, sparse.len()), dense.bufs[c].values(0, dense.len())
		if !reflect.DeepEqual(sv, dv) {
			t.Fatalf("events.%s after keep: sparse %v, dense %v", eventsTable.cols[c].colName(), sv, dv)
		}
	}
}

// fleetBatches are n batches of per events over containers containers in
// random order, each with its own name, image and digest (as the load
// test's fleet; benchBatches' containers share theirs); every fifth
// container changes its profile after a third of the rows and every
// seventh event of container 0 names another image.
func fleetBatches(n, per, containers int) []*containv1.Batch {
	ids := containv1.NewIDGen()
	rng := rand.New(rand.NewPCG(7, 8))
	p := bus.NewProducer("host-f", "enricher")
	base := time.Now().Add(-time.Minute)
	out := make([]*containv1.Batch, n)
	total := 0
	for i := range out {
		evs := make([]*containv1.Event, 0, per)
		for len(evs) < per {
			c := rng.IntN(containers)
			cid := fmt.Sprintf("%064x", c*7919)
			e := sampleEvents(ids, cid, base)[rng.IntN(4)]
			e.Host = "host-f"
			e.ContainerName = fmt.Sprintf("host-f-svc%d-%d", c%9, c)
			e.ImageRef = fmt.Sprintf("registry.example.com/shop/svc%d:1.%d.0", c%9, c%9)
			e.ImageDigest = fmt.Sprintf("sha256:%064x", uint64(c%9)*0x9e3779b97f4a7c15)
			e.ProfileRef = e.ImageDigest + "@1"
			if c%5 == 0 && total > n*per/3 {
				e.ProfileRef = e.ImageDigest + "@2"
			}
			if c == 0 && total%7 == 0 {
				e.ImageRef = "registry.example.com/other:2"
			}
			evs = append(evs, e)
			total++
		}
		out[i] = p.Batch(evs)
	}
	return out
}

// BenchmarkLowCardKeyed measures adding an events row to buffers whose
// LowCardinality columns are keyed as rows are added (ns per row, no
// ClickHouse), on rows of 50 containers in random order with names,
// images and digests of their own (fleetBatches): the per-container
// columns keyed through the container (keyed) against a lookup per
// column (percolumn), alternated in blocks of 8,192 rows.
func BenchmarkLowCardKeyed(b *testing.B) {
	lowCard := map[string]bool{}
	for _, line := range strings.Split(ddlEvents, "\n") {
		if f := strings.Fields(line); len(f) == 2 && strings.HasPrefix(f[1], lowCardString) {
			lowCard[f[0]] = true
		}
	}
	for _, c := range lowCardEventColumns {
		lowCard[c.name] = true
	}
	unkeyed := *eventsTable
	unkeyed.key = nil
	var bufs [2]*rowBuf[row]
	for k, def := range []*tableDef[row]{eventsTable, &unkeyed} {
		bufs[k] = newRowBuf(def, 8192)
		for i, c := range def.cols {
			if lowCard[c.colName()] {
				drv, err := chcol.Type(lowCardString).Column(c.colName(), &chcol.ServerContext{})
				if err != nil {
					b.Fatal(err)
				}
				if bufs[k].bufs[i].own(drv) == nil {
					b.Fatalf("%s: no own column", c.colName())
				}
			}
		}
	}
	var rows []eventRow
	now := time.Now()
	for _, bt := range fleetBatches(8, 1024, 50) {
		bi := infoOf(bt)
		for i, ev := range bt.Events {
			var r eventRow
			r.fill(&bi, i, ev, now, false)
			rows = append(rows, r)
		}
	}
	var took [2]time.Duration
	n := 0
	for b.Loop() {
		for k, buf := range bufs {
			t0 := time.Now()
			for i := range rows {
				buf.add(&rows[i])
			}
			took[k] += time.Since(t0)
			buf.reset()
		}
		n += len(rows)
	}
	b.ReportMetric(float64(took[0].Nanoseconds())/float64(n), "keyed_ns/row")
	b.ReportMetric(float64(took[1].Nanoseconds())/float64(n), "percolumn_ns/row")
	b.ReportMetric(took[0].Seconds()/took[1].Seconds(), "keyed/percolumn")
}

// TestLookupIDsAsTheyAre: the duplicate lookup's external table of ids
// takes the probe's slice as its column (setVals) and encodes it as the
// driver's column does the ids appended one by one.
func TestLookupIDsAsTheyAre(t *testing.T) {
	var ids []uuid.UUID
	gen := containv1.NewIDGen()
	for range 1000 {
		ids = append(ids, uuid.UUID(gen.Next()))
	}
	own, err := ext.NewTable("fetch_ids", ext.Column("id", "UUID"))
	if err != nil {
		t.Fatal(err)
	}
	if !setVals(own.Block(), ids) {
		t.Fatal("the external table's UUID column is not the ids' own (the driver's ext.Table changed?)")
	}
	ref, err := ext.NewTable("fetch_ids", ext.Column("id", "UUID"))
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range ids {
		if err := ref.Append(id); err != nil {
			t.Fatal(err)
		}
	}
	var got, want chproto.Buffer
	if err := own.Block().Encode(&got, 0); err != nil {
		t.Fatal(err)
	}
	if err := ref.Block().Encode(&want, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.Buf, want.Buf) || own.Structure() != ref.Structure() {
		t.Fatalf("external table encodes %d bytes (%s), the driver's %d (%s)", len(got.Buf), own.Structure(), len(want.Buf), ref.Structure())
	}
}
