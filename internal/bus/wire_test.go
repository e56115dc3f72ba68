package bus_test

import (
	"errors"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/containsec/contain/internal/bus"
	"github.com/containsec/contain/schemas/containv1"
)

// FuzzDecodeMatchesProto holds the generated codec to the protobuf
// runtime's: Decode accepts exactly what proto.Unmarshal accepts (with a
// supported schema version), both read the same batch, and Encode's bytes
// read back equal under proto.Unmarshal.
func FuzzDecodeMatchesProto(f *testing.F) {
	p := bus.NewProducer("h", "s")
	ev := execEvent(containv1.NewIDGen(), "c", "/bin/sh")
	good, _ := bus.Encode(p.Batch([]*containv1.Event{ev}))
	f.Add(good)
	ctr := proto.Clone(ev).(*containv1.Event)
	ctr.Kind = containv1.Kind_KIND_CONTAINER
	ctr.Body = &containv1.Event_Container{Container: &containv1.ContainerInfo{Runtime: "runc", Labels: map[string]string{"k": "v"}}}
	data, _ := bus.Encode(p.Batch([]*containv1.Event{ctr}))
	f.Add(data)
	for _, d := range dictionarySeeds() {
		f.Add(d)
	}
	f.Add([]byte{0x08, 0x01, 0x12, 0x02, 0xc3, 0x28}) // schema 1, host "\xc3\x28"
	f.Add([]byte{0x08, 0x01, 0x12, 0x02, 0xc3, 0xa9}) // schema 1, host "é"
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		var want containv1.Batch
		werr := proto.Unmarshal(data, &want)
		if werr == nil && (want.SchemaVersion == 0 || want.SchemaVersion > containv1.ReadableSchemaVersion) {
			werr = errors.New("schema version")
		}
		if werr == nil {
			// A container dictionary is read into the events.
			werr = want.Expand()
		}
		got, err := bus.Decode(data)
		if (err == nil) != (werr == nil) {
			t.Fatalf("Decode error %v, proto.Unmarshal error %v", err, werr)
		}
		if _, aerr := bus.DecodeAliased(data); (aerr == nil) != (werr == nil) {
			t.Fatalf("DecodeAliased error %v, proto.Unmarshal error %v", aerr, werr)
		}
		if err != nil {
			return
		}
		// Unknown fields are kept as read; the runtime rewrites an
		// overlong tag in its shortest form, the generated code keeps its
		// bytes: the same field either way.
		canonicalUnknown(&want)
		canonicalUnknown(got)
		if !proto.Equal(got, &want) {
			t.Fatalf("Decode read %v, proto.Unmarshal %v", got, &want)
		}
		aliased, err := bus.DecodeAliased(data)
		if err == nil {
			canonicalUnknown(aliased)
		}
		if err != nil || !proto.Equal(aliased, &want) {
			t.Fatalf("DecodeAliased read %v (%v), proto.Unmarshal %v", aliased, err, &want)
		}
		out, err := bus.Encode(got)
		if err != nil {
			t.Fatalf("decoded batch does not re-encode: %v", err)
		}
		var back containv1.Batch
		if err := proto.Unmarshal(out, &back); err != nil || !proto.Equal(&back, &want) {
			t.Fatalf("Encode wrote what proto.Unmarshal reads as %v (%v)", &back, err)
		}
	})
}

// canonicalUnknown rewrites the unknown fields of m and of every message
// in it with their tags in the shortest form.
func canonicalUnknown(m proto.Message) {
	var walk func(protoreflect.Message)
	walk = func(r protoreflect.Message) {
		if u := r.GetUnknown(); len(u) > 0 {
			var out []byte
			for len(u) > 0 {
				num, typ, n := protowire.ConsumeTag(u)
				if n < 0 {
					return
				}
				v := protowire.ConsumeFieldValue(num, typ, u[n:])
				if v < 0 {
					return
				}
				out = protowire.AppendTag(out, num, typ)
				out = append(out, u[n:n+v]...)
				u = u[n+v:]
			}
			r.SetUnknown(out)
		}
		r.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
			switch {
			case fd.IsList() && fd.Message() != nil:
				for i := 0; i < v.List().Len(); i++ {
					walk(v.List().Get(i).Message())
				}
			case fd.IsMap() && fd.MapValue().Message() != nil:
				v.Map().Range(func(_ protoreflect.MapKey, mv protoreflect.Value) bool {
					walk(mv.Message())
					return true
				})
			case !fd.IsList() && !fd.IsMap() && fd.Message() != nil:
				walk(v.Message())
			}
			return true
		})
	}
	walk(m.ProtoReflect())
}

// TestEncodeRefusesInvalidUTF8 keeps proto.Marshal's refusal of a string
// that is not UTF-8, which the generated marshaller does not check.
func TestEncodeRefusesInvalidUTF8(t *testing.T) {
	p := bus.NewProducer("h", "s")
	ev := execEvent(containv1.NewIDGen(), "c", "/bin/sh")
	ev.GetExec().Argv = append(ev.GetExec().Argv, "\xff")
	if _, err := proto.Marshal(p.Batch([]*containv1.Event{ev})); err == nil {
		t.Fatal("proto.Marshal accepted invalid UTF-8: the test's premise is wrong")
	}
	if _, err := bus.Encode(p.Batch([]*containv1.Event{ev})); err == nil {
		t.Fatal("Encode accepted an argv that is not UTF-8")
	}
}

// dictionarySeeds are batches with a container dictionary (schema 2):
// events referring to entries (one keeping its own image), an event
// without a container, and a reference past the dictionary.
func dictionarySeeds() [][]byte {
	ids := containv1.NewIDGen()
	a, b := execEvent(ids, "", "/bin/sh"), execEvent(ids, "", "/bin/ls")
	a.ContainerRef, b.ContainerRef = 1, 2
	b.ImageRef = "own/ref:1"
	host := execEvent(ids, "", "/bin/true")
	batch := &containv1.Batch{SchemaVersion: containv1.SchemaVersionDictionary, Host: "h", Stage: "enricher", ProducerId: "p", Seq: 1,
		Containers: []*containv1.ContainerRef{
			{ContainerId: "c1", ContainerName: "web", ImageRef: "shop/web:1", ImageDigest: "sha256:" + strings.Repeat("a", 64), ProfileRef: "p@1"},
			{ContainerId: "c2", ImageRef: "shop/db:2"},
		},
		Events: []*containv1.Event{a, b, host}}
	good, _ := batch.MarshalVT()
	past := proto.Clone(batch).(*containv1.Batch)
	past.Events[0].ContainerRef = 3
	bad, _ := past.MarshalVT()
	return [][]byte{good, bad}
}
