package store

import (
	"context"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/containsec/contain/internal/bus"
	"github.com/containsec/contain/internal/metrics"
	"github.com/containsec/contain/schemas/containv1"
)

// TestReaderEventsRoundTrip stores every kind of event without raw
// protobufs and reads them back through Reader.Events: each comes back
// equal to what was sent (container addresses in their canonical form),
// and the selection filters by time, container and kind.
func TestReaderEventsRoundTrip(t *testing.T) {
	cfg := testConfig(t)
	s := openStore(t, cfg)
	ctx := context.Background()
	ids := containv1.NewIDGen()
	base := time.Now().Add(-time.Hour).Truncate(time.Second)
	evs := sampleEvents(ids, "c-read", base)
	other := sampleEvents(ids, "c-other", base)
	if err := s.handle(ctx, s.bufs(), decoded([]*containv1.Batch{bus.NewProducer("host-a", "test").Batch(append(append([]*containv1.Event{}, evs...), other...))}), metrics.New()); err != nil {
		t.Fatal(err)
	}
	r, err := OpenReader(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	var got []*containv1.Event
	if err := r.Events(ctx, Selection{From: base, To: base.Add(time.Minute), Container: "c-read"}, func(ev *containv1.Event) error {
		got = append(got, ev)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(got) != len(evs) {
		t.Fatalf("read %d events, want %d", len(got), len(evs))
	}
	for i, want := range evs {
		want = proto.Clone(want).(*containv1.Event)
		if c := want.GetContainer(); c != nil {
			c.Addresses = [][]byte{{10, 231, 0, 2}, c.Addresses[1]}
		}
		if !proto.Equal(got[i], want) {
			t.Errorf("event %d:\n got %v\nwant %v", i, got[i], want)
		}
	}
	n := 0
	if err := r.Events(ctx, Selection{From: base, Kinds: []string{"exec", "network"}}, func(*containv1.Event) error { n++; return nil }); err != nil {
		t.Fatal(err)
	}
	if n != 4 {
		t.Errorf("exec and network events of both containers: %d, want 4", n)
	}
}

// FuzzEventScan rebuilds events from arbitrary column values (a raw
// protobuf, a kind name, addresses): it never panics, and a raw value
// either decodes or is an error.
func FuzzEventScan(f *testing.F) {
	ev := sampleEvents(containv1.NewIDGen(), "c", time.Unix(1700000000, 0))[2]
	raw, _ := proto.Marshal(ev)
	f.Add(raw, "network", "0123456789abcdef", "10.0.0.1")
	f.Add([]byte{}, "exec", "", "")
	f.Add([]byte{0xff}, "container", "x", "::1")
	f.Fuzz(func(t *testing.T, raw []byte, kind, addr, ctAddr string) {
		x := eventScan{raw: string(raw), kind: kind, raddr: addr, laddr: addr, addrs: []string{ctAddr},
			labelKeys: []string{"a", "b"}, labelVals: []string{"1"}}
		got, err := x.event()
		if err != nil {
			if len(raw) == 0 {
				t.Fatalf("columns without raw: %v", err)
			}
			return
		}
		if len(raw) == 0 && got.GetKind() != containv1.Kind(kindNames.number(kind)) {
			t.Fatalf("kind %q rebuilt as %v", kind, got.GetKind())
		}
	})
}
