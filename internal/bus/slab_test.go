package bus_test

import (
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/containsec/contain/internal/bus"
	"github.com/containsec/contain/schemas/containv1"
)

// FuzzDecodeAliasedMatchesDecode holds DecodeAliased, whose events are
// decoded into one slice (unmarshalAliased), to Decode: the same error
// or none, and the same batch.
func FuzzDecodeAliasedMatchesDecode(f *testing.F) {
	p := bus.NewProducer("h", "s")
	ids := containv1.NewIDGen()
	one, _ := bus.Encode(p.Batch([]*containv1.Event{execEvent(ids, "c", "/bin/sh")}))
	f.Add(one)
	three, _ := bus.Encode(p.Batch([]*containv1.Event{execEvent(ids, "c", "/bin/sh"), execEvent(ids, "d", "/bin/ls"), execEvent(ids, "c", "/bin/cat")}))
	f.Add(three)
	// Fields after and between the events, and an unknown field.
	f.Add(append(append([]byte{}, three...), 0x10, 0x01, 0x52, 0x01, 0x41))
	f.Add([]byte{0x08, 0x01, 0x32, 0x00, 0x12, 0x01, 0x68, 0x32, 0x00})
	f.Fuzz(func(t *testing.T, data []byte) {
		want, werr := bus.Decode(data)
		got, err := bus.DecodeAliased(data)
		if (err == nil) != (werr == nil) {
			t.Fatalf("DecodeAliased error %v, Decode error %v", err, werr)
		}
		if err == nil && !proto.Equal(got, want) {
			t.Fatalf("DecodeAliased read %v, Decode %v", got, want)
		}
	})
}

// TestDecodeAliasedEvents: a batch's events decode aliased as they were
// encoded, with the batch's fields before, between and after them.
func TestDecodeAliasedEvents(t *testing.T) {
	p := bus.NewProducer("h1", "s")
	ids := containv1.NewIDGen()
	b := p.Batch([]*containv1.Event{execEvent(ids, "c", "/bin/sh"), execEvent(ids, "d", "/bin/ls"), execEvent(ids, "c", "/bin/cat")})
	data, err := bus.Encode(b)
	if err != nil {
		t.Fatal(err)
	}
	// seq (field 4) again after the events: the last value wins.
	data = append(data, 0x20, 0x07)
	got, err := bus.DecodeAliased(data)
	if err != nil {
		t.Fatal(err)
	}
	b.Seq = 7
	if !proto.Equal(got, b) {
		t.Fatalf("read %v, want %v", got, b)
	}
	if len(got.Events) != 3 || got.Events[1].ContainerId != "d" {
		t.Fatalf("events %v", got.Events)
	}
}
