package store

import (
	"math/rand/v2"
	"reflect"
	"testing"
	"time"

	"github.com/containsec/contain/internal/bus"
	"github.com/containsec/contain/schemas/containv1"
)

// FuzzBatchRows feeds arbitrary bytes through the store's decoding path:
// bus.Decode, then rows for the three tables. It must never panic, every
// decoded event must make exactly one row, and every column must hold one
// value per row.
func FuzzBatchRows(f *testing.F) {
	ids := containv1.NewIDGen()
	evs := sampleEvents(ids, "c-fuzz", time.Unix(1700000000, 5))
	evs = append(evs,
		&containv1.Event{Id: []byte{1, 2, 3}, WallNs: -5, Body: &containv1.Event_Alert{Alert: &containv1.Alert{
			EvidenceIds: [][]byte{nil, {1}}, Trigger: &containv1.Event{WallNs: 1 << 62}}}},
		&containv1.Event{Kind: containv1.Kind(99), Body: &containv1.Event_Action{Action: &containv1.Action{Type: 42}}},
		&containv1.Event{Body: &containv1.Event_Network{Network: &containv1.Network{LocalAddr: []byte{127, 0, 0, 1}, RemotePort: 1 << 20}}},
	)
	for _, b := range []*containv1.Batch{
		bus.NewProducer("h", "s").Batch(evs),
		bus.NewProducer("h", "s").Batch(nil),
	} {
		data, err := bus.Encode(b)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Add([]byte{})
	f.Add([]byte("\x08\x01\x32\x02\x4a\x00"))
	f.Add([]byte("\xff\xff\xff"))
	now := time.Unix(1700000000, 0)
	f.Fuzz(func(t *testing.T, data []byte) {
		b, err := bus.Decode(data)
		if err != nil {
			return
		}
		rs := newRowSet(true)
		dups := rs.add(b, now, nil)
		want := 0
		for _, ev := range b.Events {
			if ev != nil {
				want++
			}
		}
		if rs.len()+dups != want {
			t.Fatalf("%d rows and %d duplicates for %d events", rs.len(), dups, want)
		}
		for _, buf := range []*rowBuf[row]{rs.events, rs.alerts, rs.actions} {
			for i, c := range buf.bufs {
				if n := reflect.ValueOf(c.values(0, buf.len())).Len(); n != buf.len() {
					t.Fatalf("%s.%s has %d values for %d rows", buf.def.name, buf.def.cols[i].colName(), n, buf.len())
				}
			}
		}
		for _, v := range rs.events.bufs[0].values(0, rs.events.len()).([]time.Time) {
			if v.Before(time.Unix(0, 0)) || v.After(maxTime) {
				t.Fatalf("ts %v outside DateTime", v)
			}
		}
	})
}

func TestWallTime(t *testing.T) {
	now := time.Unix(1700000000, 0)
	for _, c := range []struct {
		ns     int64
		want   time.Time
		wantNs uint32
	}{
		{1_700_000_001_999_999_999, time.Unix(1_700_000_001, 0), 999_999_999},
		{0, now, 0},
		{-1, now, 0},
		{1 << 62, maxTime, 0},
		{maxTime.UnixNano(), maxTime, 0},
		{maxTime.UnixNano() + 1, maxTime, 0},
		{maxTime.UnixNano() - 1, maxTime.Add(-time.Second), 999_999_999},
	} {
		got, gotNs := wallTime(c.ns, now)
		if !got.Equal(c.want) || gotNs != c.wantNs {
			t.Errorf("wallTime(%d) = %v, %d; want %v, %d", c.ns, got, gotNs, c.want, c.wantNs)
		}
	}
	// The same value, location included, as truncating a time.Time (the
	// form it replaced).
	truncated := func(ns int64, now time.Time) (time.Time, uint32) {
		if ns <= 0 {
			ns = now.UnixNano()
		}
		t := time.Unix(0, ns).UTC()
		if t.After(maxTime) {
			return maxTime, 0
		}
		return t.Truncate(time.Second), uint32(t.Nanosecond())
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range 100_000 {
		ns := rng.Int64N(maxTime.UnixNano() + 10*int64(time.Second))
		switch i % 4 {
		case 1:
			ns = rng.Int64()
		case 2:
			ns = -ns
		}
		now := time.Unix(0, rng.Int64N(1<<62))
		got, gotNs := wallTime(ns, now)
		want, wantNs := truncated(ns, now)
		if got != want || gotNs != wantNs {
			t.Fatalf("wallTime(%d, %v) = %#v, %d; want %#v, %d", ns, now, got, gotNs, want, wantNs)
		}
	}
}

func TestAddr16(t *testing.T) {
	v4 := addr16([]byte{10, 0, 0, 1})
	if string(v4) != "\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\xff\xff\x0a\x00\x00\x01" {
		t.Errorf("v4: %x", v4)
	}
	if z := addr16([]byte{1, 2, 3}); len(z) != 16 || string(z) != string(make([]byte, 16)) {
		t.Errorf("bad length: %x", z)
	}
}
