package store

import (
	"bytes"
	"testing"
	"time"

	"github.com/containsec/contain/internal/bus"
	"github.com/containsec/contain/schemas/containv1"
)

// FuzzSkimBatch: on every message that decodes and that skimBatch reads,
// the skim gives each event's row id, wall time, table and sort key prefix
// as the decoded batch does (what the duplicate lookup asks for must be
// what the rows carry).
func FuzzSkimBatch(f *testing.F) {
	ids := containv1.NewIDGen()
	evs := sampleEvents(ids, "c-1", time.Unix(1_700_000_000, 0))
	evs = append(evs,
		&containv1.Event{Id: []byte("short"), ContainerId: "c-2", ImageRef: "img", WallNs: -5,
			Body: &containv1.Event_Alert{Alert: &containv1.Alert{Rule: "r"}}},
		&containv1.Event{ContainerId: "c-3", Body: &containv1.Event_Action{Action: &containv1.Action{Actor: "a"}}},
		&containv1.Event{})
	for _, b := range []*containv1.Batch{
		bus.NewProducer("host-a", "enricher").Batch(evs),
		{Host: "h", Stage: "s", Seq: 7, ProducerId: "p", Events: evs[len(evs)-3:]},
		{},
	} {
		data, err := bus.Encode(b)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var got []skimmed
		n, err := skimBatch(data, func(s skimmed) {
			s.prefix = bytes.Clone(s.prefix)
			got = append(got, s)
		})
		b, derr := bus.Decode(data)
		if err != nil || derr != nil {
			return
		}
		if n != len(got) || n != len(b.GetEvents()) {
			t.Fatalf("skimmed %d (called %d), decoded %d events", n, len(got), len(b.GetEvents()))
		}
		for i, ev := range b.GetEvents() {
			l, prefix := lookupOf(ev)
			want := skimmed{id: eventID(b, i, ev), wallNs: ev.GetWallNs(), table: l, prefix: []byte(prefix)}
			g := got[i]
			if g.id != want.id || g.wallNs != want.wallNs || g.table != want.table || !bytes.Equal(g.prefix, want.prefix) {
				t.Fatalf("event %d: skimmed %+v, decoded %+v", i, g, want)
			}
		}
	})
}

// BenchmarkSkim measures reading a fetch's ids from the wire (the first
// pass of every fetch) against decoding it.
func BenchmarkSkim(b *testing.B) {
	batches := benchBatches(20, 1000)
	msgs := make([][]byte, len(batches))
	for i, bt := range batches {
		var err error
		if msgs[i], err = bus.Encode(bt); err != nil {
			b.Fatal(err)
		}
	}
	b.Run("skim", func(b *testing.B) {
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
