package bus_test

import (
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/containsec/contain/internal/bus"
	"github.com/containsec/contain/schemas/containv1"
)

// scanSeeds are wire batches for FuzzScanBatch: a canonical batch of each
// body, a container event, an event about another host, duplicated and
// out-of-order fields, an unknown field, a known field with another wire
// type, a packed and an unpacked repeated field, bad UTF-8.
func scanSeeds() [][]byte {
	p := bus.NewProducer("h1", "collector")
	ids := containv1.NewIDGen()
	ev := execEvent(ids, "c1", "/bin/sh")
	ctr := proto.Clone(ev).(*containv1.Event)
	ctr.Kind = containv1.Kind_KIND_CONTAINER
	ctr.Body = &containv1.Event_Container{Container: &containv1.ContainerInfo{Runtime: "runc", Labels: map[string]string{"k": "v"}}}
	sys := &containv1.Event{Id: ids.Next(), Host: "h1", ContainerId: "c2", Kind: containv1.Kind_KIND_SYSCALL, SchemaVersion: 1,
		Body: &containv1.Event_Syscall{Syscall: &containv1.Syscall{Name: "read", Args: []uint64{1, 1 << 40}, Sequence: []uint32{0, 1, 300}}}}
	other := proto.Clone(ev).(*containv1.Event)
	other.Host = "h2"
	var out [][]byte
	for _, evs := range [][]*containv1.Event{{ev}, {ctr, ev, sys}, {other}, {}} {
		data, _ := bus.Encode(p.Batch(evs))
		out = append(out, data)
	}
	evb, _ := ev.MarshalVT()
	dup := append([]byte{0x08, 0x01, 0x12, 0x02, 'h', '1', 0x32, byte(len(evb) + 4)}, evb...)
	dup = append(dup, 0x1a, 0x02, 'c', '9') // container_id again: the last wins
	out = append(out, dup)
	out = append(out, []byte{0x08, 0x01, 0x12, 0x02, 'h', '1', 0xf8, 0x01, 0x05}) // unknown field 31
	out = append(out, []byte{0x08, 0x01, 0x10, 0x05})                             // host as a varint
	out = append(out, []byte{0x08, 0x01, 0x32, 0x04, 0x1a, 0x02, 0xc3, 0x28})     // container_id not UTF-8
	out = append(out, dictionarySeeds()...)
	out = append(out, []byte{0x08, 0x01, 0x32, 0x05, 0xaa, 0x01, 0x02, 0x28, 0x07}) // syscall args unpacked
	return out
}

// FuzzScanBatch holds ScanBatch to Decode: what it accepts Decode accepts
// with the same batch fields, and each event's Raw decodes to Decode's
// event with the envelope fields ScanBatch read; BoundTo never accepts
// what CheckHost refuses; a canonical encoding of a batch Decode accepts
// without unknown fields is scanned (the fast path is not left for
// ordinary input).
func FuzzScanBatch(f *testing.F) {
	for _, s := range scanSeeds() {
		f.Add(s, "h1")
	}
	f.Add([]byte{}, "h1")
	for _, s := range hostSeeds() {
		f.Add(s, "h_1")
	}
	f.Fuzz(func(t *testing.T, data []byte, host string) {
		var wb bus.WireBatch
		ok := bus.ScanBatch(data, &wb)
		b, err := bus.Decode(data)
		if err != nil {
			if ok {
				t.Fatalf("ScanBatch accepted what Decode refuses: %v", err)
			}
			return
		}
		if ok {
			checkScanned(t, &wb, b)
			subject := containv1.RawSubject(host)
			if wb.BoundTo(subject) && bus.CheckHost(subject, b) != nil {
				t.Fatalf("BoundTo accepted what CheckHost refuses: %v", bus.CheckHost(subject, b))
			}
		}
		if hasUnknown(b.ProtoReflect()) {
			return // an unknown field may hold a known number with another wire type
		}
		canon, err := bus.Encode(b)
		if err != nil {
			t.Fatal(err)
		}
		if !bus.ScanBatch(canon, &wb) {
			t.Fatalf("ScanBatch left a canonical batch to decoding: %v", b)
		}
		checkScanned(t, &wb, b)
		if subject := containv1.RawSubject(host); (bus.CheckHost(subject, b) == nil) != wb.BoundTo(subject) {
			t.Fatalf("BoundTo %v, CheckHost %v", wb.BoundTo(subject), bus.CheckHost(subject, b))
		}
	})
}

// hostSeeds are batches of host "h.1" whose events name hosts of the
// same subject token ("h_1", "h.1", none) and, last, another ("h2").
func hostSeeds() [][]byte {
	ids := containv1.NewIDGen()
	var evs []*containv1.Event
	var out [][]byte
	for _, h := range []string{"h_1", "h.1", "", "h_1", "h2"} {
		ev := execEvent(ids, "c1", "/bin/sh")
		ev.Host = h
		evs = append(evs, ev)
		data, _ := bus.Encode(&containv1.Batch{SchemaVersion: 1, Host: "h.1", Events: evs})
		out = append(out, data)
	}
	return out
}

// TestBoundToHosts: BoundTo is CheckHost on batches whose events name
// their batch's host, another host of the same subject token, none, or
// another host; on every kind of subject.
func TestBoundToHosts(t *testing.T) {
	for i, data := range hostSeeds() {
		var wb bus.WireBatch
		if !bus.ScanBatch(data, &wb) {
			t.Fatalf("seed %d not scanned", i)
		}
		b, err := bus.Decode(data)
		if err != nil {
			t.Fatal(err)
		}
		for _, subject := range []string{containv1.RawSubject("h_1"), containv1.RawSubject("h.1"), containv1.RawSubject("h2"),
			containv1.EventsSubject("h.1"), containv1.AlertsSubject("h_1"), containv1.AlertsSubject("h2")} {
			if got, want := wb.BoundTo(subject), bus.CheckHost(subject, b) == nil; got != want {
				t.Errorf("seed %d on %s: BoundTo %v, CheckHost %v", i, subject, got, want)
			}
		}
	}
}

func checkScanned(t *testing.T, wb *bus.WireBatch, b *containv1.Batch) {
	t.Helper()
	if wb.SchemaVersion != b.SchemaVersion || wb.Host != b.Host || wb.Stage != b.Stage || wb.ProducerID != b.ProducerId ||
		wb.Seq != b.Seq || len(wb.Events) != len(b.Events) {
		t.Fatalf("scanned %+v, decoded %v", wb, b)
	}
	for i, we := range wb.Events {
		var ev containv1.Event
		err := proto.Unmarshal(we.Raw, &ev)
		if r := ev.ContainerRef; err == nil && r != 0 {
			if we.ContainerRef != r || int(r) > len(wb.Containers) {
				t.Fatalf("event %d: container_ref %d scanned as %d of %d containers", i, r, we.ContainerRef, len(wb.Containers))
			}
			c := wb.Containers[r-1]
			ev.ExpandFrom(&containv1.ContainerRef{ContainerId: c.ContainerID, ContainerName: c.ContainerName,
				ImageRef: c.ImageRef, ImageDigest: c.ImageDigest, ProfileRef: c.ProfileRef})
		}
		if err != nil || !proto.Equal(&ev, b.Events[i]) {
			t.Fatalf("event %d: raw reads %v (%v), decoded %v", i, &ev, err, b.Events[i])
		}
		if f := we.ContainerFields; !we.FieldsSpread {
			// Without its one run of container fields the event has none.
			kept := append(append([]byte{}, we.Raw[:f[0]]...), we.Raw[f[1]:]...)
			var k containv1.Event
			if err := proto.Unmarshal(kept, &k); err != nil || k.ContainerId != "" || k.ContainerName != "" || k.ImageRef != "" ||
				k.ImageDigest != "" || k.ProfileRef != "" || k.ContainerRef != 0 {
				t.Fatalf("event %d: without its container fields %v it reads %v (%v)", i, f, &k, err)
			}
		}
		if we.Host != ev.Host || we.ContainerID != ev.ContainerId || we.ContainerName != ev.ContainerName ||
			we.ImageRef != ev.ImageRef || we.ImageDigest != ev.ImageDigest || we.ProfileRef != ev.ProfileRef || we.Kind != ev.Kind ||
			string(we.ID) != string(ev.Id) || we.WallNs != ev.WallNs || we.Body != bodyNumber(&ev) {
			t.Fatalf("event %d: scanned %+v, decoded %v", i, we, &ev)
		}
	}
}

// bodyNumber is the field number of ev's oneof member, 0 for none.
func bodyNumber(ev *containv1.Event) protowire.Number {
	m := ev.ProtoReflect()
	if fd := m.WhichOneof(m.Descriptor().Oneofs().ByName("body")); fd != nil {
		return fd.Number()
	}
	return 0
}

// TestScanBatchFieldNumbers: the field numbers ScanBatch reads are the
// schema's.
func TestScanBatchFieldNumbers(t *testing.T) {
	check := func(md protoreflect.MessageDescriptor, name string, num protoreflect.FieldNumber) {
		if fd := md.Fields().ByName(protoreflect.Name(name)); fd == nil || fd.Number() != num {
			t.Errorf("%s.%s is not field %d", md.FullName(), name, num)
		}
	}
	bm := (&containv1.Batch{}).ProtoReflect().Descriptor()
	for name, num := range map[string]protoreflect.FieldNumber{"schema_version": 1, "host": 2, "stage": 3, "seq": 4, "producer_id": 5, "events": 6, "containers": 7} {
		check(bm, name, num)
	}
	em := (&containv1.Event{}).ProtoReflect().Descriptor()
	for name, num := range map[string]protoreflect.FieldNumber{"id": 1, "host": 2, "container_id": 3, "container_name": 4, "image_ref": 5, "image_digest": 6, "wall_ns": 8, "kind": 9, "profile_ref": 12, "exec": 20, "commit": 29, "container_ref": 30} {
		check(em, name, num)
	}
	cm := (&containv1.ContainerRef{}).ProtoReflect().Descriptor()
	for name, num := range map[string]protoreflect.FieldNumber{"container_id": 1, "container_name": 2, "image_ref": 3, "image_digest": 4, "profile_ref": 5} {
		check(cm, name, num)
	}
}

// hasUnknown reports whether m or a message in it has unknown fields.
func hasUnknown(m protoreflect.Message) bool {
	if len(m.GetUnknown()) > 0 {
		return true
	}
	found := false
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		switch {
		case fd.IsMap():
			if fd.MapValue().Message() != nil {
				v.Map().Range(func(_ protoreflect.MapKey, mv protoreflect.Value) bool {
					found = found || hasUnknown(mv.Message())
					return !found
				})
			}
		case fd.IsList() && fd.Message() != nil:
			for i := range v.List().Len() {
				found = found || hasUnknown(v.List().Get(i).Message())
			}
		case fd.Message() != nil:
			found = hasUnknown(v.Message())
		}
		return !found
	})
	return found
}
