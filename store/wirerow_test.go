package store

import (
	"reflect"
	"testing"
	"time"

	"github.com/google/uuid"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/containsec/contain/internal/bus"
	"github.com/containsec/contain/schemas/containv1"
)

// wireRowSeeds are encoded batches: every body, and the encodings the
// decoder merges (a body, its process and a repeated field split in two,
// packed and unpacked repeated scalars, fields out of order), a body
// replaced by another member, an unknown field.
func wireRowSeeds(tb testing.TB) [][]byte {
	ids := containv1.NewIDGen()
	evs := sampleEvents(ids, "c-wire", time.Unix(1700000000, 5))
	evs = append(evs,
		&containv1.Event{Id: []byte{1, 2, 3}, WallNs: -5, Body: &containv1.Event_Exec{Exec: &containv1.Exec{}}},
		&containv1.Event{Kind: containv1.Kind(99), Body: &containv1.Event_Action{Action: &containv1.Action{Type: 42}}},
		&containv1.Event{Body: &containv1.Event_Network{Network: &containv1.Network{LocalAddr: []byte{127, 0, 0, 1}, RemotePort: 1 << 20}}},
		&containv1.Event{Body: &containv1.Event_Alert{Alert: &containv1.Alert{Score: 1}}},
		&containv1.Event{Body: &containv1.Event_Commit{Commit: &containv1.Commit{ImageId: "sha256:1"}}},
		&containv1.Event{Kind: containv1.Kind_KIND_PROCESS},
	)
	var out [][]byte
	enc := func(evs []*containv1.Event) {
		data, err := bus.Encode(bus.NewProducer("host-a", "s").Batch(evs))
		if err != nil {
			tb.Fatal(err)
		}
		out = append(out, data)
	}
	enc(evs)
	enc(nil)
	// Hand-made events, each in a batch of its own.
	tag := func(b []byte, num protowire.Number, typ protowire.Type) []byte {
		return protowire.AppendTag(b, num, typ)
	}
	msg := func(b []byte, num protowire.Number, v []byte) []byte {
		return protowire.AppendBytes(tag(b, num, protowire.BytesType), v)
	}
	vint := func(b []byte, num protowire.Number, v uint64) []byte {
		return protowire.AppendVarint(tag(b, num, protowire.VarintType), v)
	}
	proc1 := vint(msg(nil, 8, []byte("sh")), 1, 7)
	proc2 := vint(nil, 2, 9)
	exec1 := msg(msg(msg(nil, 1, proc1), 3, []byte("a")), 2, []byte("/bin/x"))
	exec2 := msg(msg(vint(msg(nil, 3, []byte("b")), 5, 3), 1, proc2), 3, []byte("c"))
	packed := protowire.AppendVarint(protowire.AppendVarint(nil, 1<<40), 5)
	sys := msg(vint(vint(msg(nil, 5, packed), 5, 6), 8, 1<<33), 8, protowire.AppendVarint(nil, 300))
	batch := func(ev []byte) []byte {
		return msg(vint(msg(nil, 2, []byte("host-a")), 1, 1), 6, ev)
	}
	for _, ev := range [][]byte{
		msg(msg(vint(nil, 9, 1), 20, exec1), 20, exec2),               // exec merged
		msg(msg(msg(nil, 20, exec1), 2, []byte("host-a")), 20, exec2), // split by an envelope field
		msg(msg(nil, 21, sys), 21, sys),                               // packed and unpacked, twice
		msg(msg(nil, 20, exec1), 21, sys),                             // body replaced
		msg(msg(msg(nil, 21, sys), 20, exec1), 21, sys),               // replaced and back
		vint(msg(nil, 22, vint(nil, 9, ^uint64(0))), 31, 5),           // negative int32, unknown field
		msg(vint(nil, 8, ^uint64(0)), 26, msg(nil, 1, []byte("q"))),   // negative wall time
	} {
		out = append(out, batch(ev))
	}
	return out
}

// FuzzWireRows holds the rows read from the wire to the decoder's: for a
// batch bus.ScanBatch accepts (and so Decode accepts: FuzzScanBatch),
// every event readWire reads gives the values, id and wall time of the
// decoded event; an event it leaves to the decoder is an alert, action,
// container or commit, or changes its body's member.
func FuzzWireRows(f *testing.F) {
	for _, s := range wireRowSeeds(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var wb bus.WireBatch
		if !bus.ScanBatch(data, &wb) {
			return
		}
		b, err := bus.Decode(data)
		if err != nil {
			t.Fatalf("ScanBatch accepted what Decode refuses: %v", err)
		}
		var a arena
		for i, we := range wb.Events {
			var got, want flatEvent
			id, wall, ok := readWire(we.Raw, &got, &a)
			ev := b.Events[i]
			flatOf(ev, &want)
			if !ok {
				switch ev.GetBody().(type) {
				case *containv1.Event_Alert, *containv1.Event_Action, *containv1.Event_Container, *containv1.Event_Commit:
				default:
					if !bodyReplaced(we.Raw) {
						t.Fatalf("event %d left to the decoder: %v", i, ev)
					}
				}
				continue
			}
			if !equalFlat(&got, &want) || !reflect.DeepEqual(nonNil(id), nonNil(ev.GetId())) || wall != ev.GetWallNs() {
				t.Fatalf("event %d:\nwire    %+v id %x wall %d\ndecoded %+v (%v)", i, got, id, wall, want, ev)
			}
			// Its columns of other parts are the zero row's (sparse
			// buffers, design 021 decision 23).
			checkEventParts(t, []eventRow{{f: got}, {f: want, ct: ev.GetContainer()}})
		}
	})
}

// bodyReplaced reports whether two different members of Event's oneof
// occur in the event message b.
func bodyReplaced(b []byte) bool {
	first := protowire.Number(0)
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeField(b)
		if n < 0 {
			return false
		}
		_ = typ
		b = b[n:]
		if num >= evExec && num <= 29 {
			if first != 0 && num != first {
				return true
			}
			first = num
		}
	}
	return false
}

// equalFlat compares two flatEvents, a nil and an empty slice alike.
func equalFlat(x, y *flatEvent) bool {
	a, b := *x, *y
	a.execArgv, b.execArgv = nonNil(a.execArgv), nonNil(b.execArgv)
	a.sysArgs, b.sysArgs = nonNil(a.sysArgs), nonNil(b.sysArgs)
	a.sysSeq, b.sysSeq = nonNil(a.sysSeq), nonNil(b.sysSeq)
	a.localAddr, b.localAddr = nonNil(a.localAddr), nonNil(b.localAddr)
	a.remoteAddr, b.remoteAddr = nonNil(a.remoteAddr), nonNil(b.remoteAddr)
	return reflect.DeepEqual(a, b)
}

// TestWireRowsMatchDecoded: every column of the rows written from the
// wire holds what the rows of the decoded batch hold, for every seed
// (the events readWire leaves to the decoder included, as writeGroup
// does), and the wire path reads the ordinary events itself.
func TestWireRowsMatchDecoded(t *testing.T) {
	now := time.Unix(1700000000, 0)
	read := 0
	for k, data := range wireRowSeeds(t) {
		b, err := bus.Decode(data)
		if err != nil {
			t.Fatalf("seed %d: %v", k, err)
		}
		want := newRowSet(false)
		want.add(b, now, nil)
		got := newRowSet(false)
		var wb bus.WireBatch
		if !bus.ScanBatch(data, &wb) {
			t.Fatalf("seed %d: not scanned", k)
		}
		bi := batchInfo{host: wb.Host, stage: wb.Stage, producer: wb.ProducerID, seq: wb.Seq}
		for i := range wb.Events {
			r := &got.scratch
			var ev *containv1.Event
			if r.fillWire(&bi, i, wb.Events[i].Raw, now, &got.arena) {
				read++
			} else {
				if ev, err = decodeEvent(wb.Events[i].Raw); err != nil {
					t.Fatal(err)
				}
				r.fill(&bi, i, ev, now, false)
			}
			switch ev.GetBody().(type) {
			case *containv1.Event_Alert:
				got.alerts.add(r)
			case *containv1.Event_Action:
				got.actions.add(r)
			default:
				got.events.add(r)
			}
		}
		for j, bufs := range [][2]*rowBuf[row]{{got.events, want.events}, {got.alerts, want.alerts}, {got.actions, want.actions}} {
			g, w := bufs[0], bufs[1]
			if g.len() != w.len() {
				t.Fatalf("seed %d table %d: %d rows from the wire, %d decoded", k, j, g.len(), w.len())
			}
			for c := range g.bufs {
				gv, wv := g.bufs[c].values(0, g.len()), w.bufs[c].values(0, w.len())
				if !reflect.DeepEqual(gv, wv) {
					t.Errorf("seed %d %s.%s: wire %v, decoded %v", k, g.def.name, g.def.cols[c].colName(), gv, wv)
				}
			}
		}
	}
	if read < 10 {
		t.Fatalf("only %d events read from the wire", read)
	}
}

// BenchmarkWireRows compares the ways a writer reads a message's events
// into rows (ns per event, no ClickHouse): scan (bus.ScanBatch alone),
// wire (ScanBatch, then readWire per event), decoded (bus.DecodeAliased,
// then a row per decoded event).
func BenchmarkWireRows(b *testing.B) {
	msgs := encodeAll(b, benchBatches(20, 1000))
	now := time.Now()
	for _, path := range []string{"scan", "wire", "decoded"} {
		b.Run(path, func(b *testing.B) {
			rs := newRowSet(false)
			r := &rs.scratch
			var wb bus.WireBatch
			n := 0
			for b.Loop() {
				rs.arena.reset()
				for _, data := range msgs {
					if path == "decoded" {
						bt, err := bus.DecodeAliased(data)
						if err != nil {
							b.Fatal(err)
						}
						bi := infoOf(bt)
						for i, ev := range bt.Events {
							r.fill(&bi, i, ev, now, false)
						}
						n += len(bt.Events)
						continue
					}
					if !bus.ScanBatch(data, &wb) {
						b.Fatal("not scanned")
					}
					n += len(wb.Events)
					if path == "scan" {
						continue
					}
					bi := batchInfo{host: wb.Host, stage: wb.Stage, producer: wb.ProducerID, seq: wb.Seq}
					for i := range wb.Events {
						if !r.fillWire(&bi, i, wb.Events[i].Raw, now, &rs.arena) {
							b.Fatal("not read")
						}
					}
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(n), "ns/event")
		})
	}
}

// FuzzCollect: what collect gives the duplicate lookup (each table's ids
// in order, their time range, the sort key prefixes) and the events it
// keeps for the writers are the decoded batch's; a message Decode refuses
// adds nothing.
func FuzzCollect(f *testing.F) {
	for _, s := range wireRowSeeds(f) {
		f.Add(s)
	}
	ids := containv1.NewIDGen()
	evs := []*containv1.Event{
		{Id: []byte("short"), ContainerId: "c-2", ImageRef: "img", WallNs: -5, Body: &containv1.Event_Alert{Alert: &containv1.Alert{Rule: "r"}}},
		{Id: ids.Next(), ContainerId: "c-3", Body: &containv1.Event_Action{Action: &containv1.Action{Actor: "a"}}},
		{},
	}
	for _, b := range []*containv1.Batch{{SchemaVersion: 1, Host: "h", Stage: "s", Seq: 7, ProducerId: "p", Events: evs}, {}} {
		data, err := proto.Marshal(b)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	now := time.Unix(1700000000, 0)
	f.Fuzz(func(t *testing.T, data []byte) {
		var got, want fetchBufs
		got.collect(&fetch{msgs: encoded{data, data}}, now) // the second a redelivery
		for i := range got.probes {
			p := &got.probes[i]
			p.ids = p.ids[:len(p.ids)/2]
		}
		b, err := bus.Decode(data)
		if err != nil {
			for i := range got.probes {
				if len(got.probes[i].ids) > 0 {
					t.Fatalf("ids of a message Decode refuses (%v)", err)
				}
			}
			return
		}
		want.probes.addDecoded(b, now)
		for i := range got.probes {
			g, w := &got.probes[i], &want.probes[i]
			if !reflect.DeepEqual(nonNil(g.ids), nonNil(w.ids)) || len(g.ids) > 0 && (!g.min.Equal(w.min) || !g.max.Equal(w.max)) ||
				len(g.prefixes) != len(w.prefixes) {
				t.Fatalf("table %s: collected %v %v..%v %v, decoded %v %v..%v %v", lookups[i].table,
					g.ids, g.min, g.max, g.prefixes, w.ids, w.min, w.max, w.prefixes)
			}
			for p := range w.prefixes {
				if _, ok := g.prefixes[p]; !ok {
					t.Fatalf("table %s: prefix %q not collected", lookups[i].table, p)
				}
			}
		}
		if got.counts[0] != len(b.Events) || got.counts[1] != len(b.Events) || got.offsets[1] != len(b.Events) {
			t.Fatalf("counted %v events at %v, decoded %d", got.counts, got.offsets, len(b.Events))
		}
		// An event is a duplicate when an earlier one of the fetch has its
		// id: the whole second message, and repeats within the first.
		seen := idSet{}
		for i, ev := range append(b.Events, b.Events...) {
			id := eventID(b, i%len(b.Events), ev)
			_, dup := seen[id]
			seen[id] = struct{}{}
			if got.dup[i] != dup {
				t.Fatalf("event %d (%x): duplicate %v, want %v", i, id, got.dup[i], dup)
			}
		}
		if sc := got.scanned[0]; sc.wire {
			for i, raw := range got.raws[sc.lo:sc.hi] {
				ev, err := decodeEvent(raw)
				if err != nil || !proto.Equal(ev, b.Events[i]) {
					t.Fatalf("event %d: kept %v (%v), decoded %v", i, ev, err, b.Events[i])
				}
			}
		}
	})
}

// BenchmarkCollect measures reading a fetch's ids from the wire (the
// first pass of every fetch: bus.ScanBatch) against decoding it.
func BenchmarkCollect(b *testing.B) {
	msgs := encodeAll(b, benchBatches(20, 1000))
	b.Run("collect", func(b *testing.B) {
		b.ReportAllocs()
		var fb fetchBufs
		now := time.Now()
		for b.Loop() {
			fb.collect(&fetch{msgs: encoded(msgs)}, now)
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*20000), "ns/event")
	})
	b.Run("decode", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			for _, m := range msgs {
				if _, err := bus.Decode(m); err != nil {
					b.Fatal(err)
				}
			}
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*20000), "ns/event")
	})
}

// TestMarkDups: among 50,000 ids (random, and time-ordered as IDGen
// makes them) with a few repeated, markDups marks exactly the later
// occurrences, as a set of every id does.
func TestMarkDups(t *testing.T) {
	gen := containv1.NewIDGen()
	for _, mk := range []func(i int) uuid.UUID{
		func(int) uuid.UUID { return uuid.New() },
		func(int) uuid.UUID { return uuid.UUID(gen.Next()) },
	} {
		var fb fetchBufs
		const n = 50_000
		for i := range n {
			id := mk(i)
			if i%9973 == 17 {
				id = fb.order[i/2].id // a repeat of an earlier one
			}
			fb.order = append(fb.order, idPos{id: id, pos: int32(i)})
		}
		fb.markDups(n)
		seen, dups := idSet{}, 0
		for i, e := range fb.order {
			_, dup := seen[e.id]
			seen[e.id] = struct{}{}
			if fb.dup[i] != dup {
				t.Fatalf("id %d: duplicate %v, want %v", i, fb.dup[i], dup)
			}
			if dup {
				dups++
			}
		}
		if dups != 6 { // i = 17, 9990, 19963, 29936, 39909, 49882
			t.Fatalf("%d duplicates, want 6", dups)
		}
	}
}

// BenchmarkMarkDups: ns per id of markDups for a fetch of 20,000 random
// ids without a repeat (the common case).
func BenchmarkMarkDups(b *testing.B) {
	var fb fetchBufs
	for i := range 20_000 {
		fb.order = append(fb.order, idPos{id: uuid.New(), pos: int32(i)})
	}
	for b.Loop() {
		fb.markDups(len(fb.order))
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(fb.order)), "ns/id")
}
