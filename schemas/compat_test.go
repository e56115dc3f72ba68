package schemas

import (
	"os"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"

	"github.com/containsec/contain/schemas/containv1"
)

// released loads the descriptor of the last released schema
// (contain/v1/released.binpb, written by scripts/release-schema.sh).
func released(t *testing.T) *descriptorpb.FileDescriptorProto {
	t.Helper()
	raw, err := os.ReadFile("contain/v1/released.binpb")
	if err != nil {
		t.Fatal(err)
	}
	var set descriptorpb.FileDescriptorSet
	if err := proto.Unmarshal(raw, &set); err != nil {
		t.Fatal(err)
	}
	for _, f := range set.File {
		if f.GetName() == "contain/v1/events.proto" {
			return f
		}
	}
	t.Fatal("contain/v1/events.proto not in released.binpb")
	return nil
}

func build(t *testing.T, fdp *descriptorpb.FileDescriptorProto) protoreflect.FileDescriptor {
	t.Helper()
	fd, err := protodesc.NewFile(fdp, nil)
	if err != nil {
		t.Fatal(err)
	}
	return fd
}

// TestNoBreakingChange fails when the schema built into this binary breaks
// readers of the released one.
func TestNoBreakingChange(t *testing.T) {
	for _, b := range Breaks(build(t, released(t)), containv1.File_contain_v1_events_proto) {
		t.Error(b)
	}
}

// TestBreaksDetects shows the check can fail: each edit of the released
// descriptor is a breaking change it must report.
func TestBreaksDetects(t *testing.T) {
	edits := map[string]func(f *descriptorpb.FileDescriptorProto){
		"removed without reserving": func(f *descriptorpb.FileDescriptorProto) {
			m := msg(f, "Exec")
			m.Field = m.Field[1:]
		},
		"renamed": func(f *descriptorpb.FileDescriptorProto) {
			msg(f, "Event").Field[0].Name = proto.String("event_id")
		},
		"retyped": func(f *descriptorpb.FileDescriptorProto) {
			msg(f, "Network").Field[1].Type = descriptorpb.FieldDescriptorProto_TYPE_STRING.Enum()
			msg(f, "Network").Field[1].TypeName = nil
		},
		"message contain.v1.Batch removed": func(f *descriptorpb.FileDescriptorProto) {
			for i, m := range f.MessageType {
				if m.GetName() == "Batch" {
					f.MessageType = append(f.MessageType[:i], f.MessageType[i+1:]...)
					return
				}
			}
		},
	}
	for want, edit := range edits {
		cur := proto.Clone(released(t)).(*descriptorpb.FileDescriptorProto)
		edit(cur)
		breaks := Breaks(build(t, released(t)), build(t, cur))
		if !strings.Contains(strings.Join(breaks, "\n"), want) {
			t.Errorf("edit %q: breaks %q", want, breaks)
		}
	}
	// Reserving a removed field's number and name is compatible.
	cur := proto.Clone(released(t)).(*descriptorpb.FileDescriptorProto)
	m := msg(cur, "Exec")
	removed := m.Field[len(m.Field)-1]
	m.Field = m.Field[:len(m.Field)-1]
	m.ReservedRange = append(m.ReservedRange, &descriptorpb.DescriptorProto_ReservedRange{Start: removed.Number, End: proto.Int32(removed.GetNumber() + 1)})
	m.ReservedName = append(m.ReservedName, removed.GetName())
	if b := Breaks(build(t, released(t)), build(t, cur)); len(b) != 0 {
		t.Errorf("a reserved removal was reported: %q", b)
	}
}

func msg(f *descriptorpb.FileDescriptorProto, name string) *descriptorpb.DescriptorProto {
	for _, m := range f.MessageType {
		if m.GetName() == name {
			return m
		}
	}
	panic("no message " + name)
}
