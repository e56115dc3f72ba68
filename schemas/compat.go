package schemas

import (
	"fmt"

	"google.golang.org/protobuf/reflect/protoreflect"
)

// Breaks lists the changes from released to current that break readers of
// the released schema: a message, field or enum value removed without
// reserving its number, or a field renumbered, renamed or retyped.
// Adding is always compatible.
func Breaks(released, current protoreflect.FileDescriptor) []string {
	var out []string
	walkMessages(released.Messages(), func(old protoreflect.MessageDescriptor) {
		cur := findMessage(current, old.FullName())
		if cur == nil {
			out = append(out, fmt.Sprintf("message %s removed", old.FullName()))
			return
		}
		fields := old.Fields()
		for i := range fields.Len() {
			of := fields.Get(i)
			cf := cur.Fields().ByNumber(of.Number())
			if cf == nil {
				if !cur.ReservedRanges().Has(of.Number()) || !cur.ReservedNames().Has(of.Name()) {
					out = append(out, fmt.Sprintf("field %s = %d removed without reserving its number and name", of.FullName(), of.Number()))
				}
				continue
			}
			if cf.Name() != of.Name() {
				out = append(out, fmt.Sprintf("field %d of %s renamed %s -> %s", of.Number(), old.FullName(), of.Name(), cf.Name()))
			}
			if cf.Kind() != of.Kind() || cf.Cardinality() != of.Cardinality() || cf.IsMap() != of.IsMap() {
				out = append(out, fmt.Sprintf("field %s = %d retyped %v %v -> %v %v", of.FullName(), of.Number(), of.Cardinality(), of.Kind(), cf.Cardinality(), cf.Kind()))
			}
			if of.Message() != nil && cf.Message() != nil && of.Message().FullName() != cf.Message().FullName() {
				out = append(out, fmt.Sprintf("field %s = %d changed message %s -> %s", of.FullName(), of.Number(), of.Message().FullName(), cf.Message().FullName()))
			}
		}
		out = append(out, enumBreaks(old.Enums(), cur)...)
	})
	out = append(out, enumBreaks(released.Enums(), current)...)
	return out
}

type enumParent interface {
	Enums() protoreflect.EnumDescriptors
}

func enumBreaks(old protoreflect.EnumDescriptors, parent enumParent) []string {
	var out []string
	for i := range old.Len() {
		oe := old.Get(i)
		ce := parent.Enums().ByName(oe.Name())
		if ce == nil {
			out = append(out, fmt.Sprintf("enum %s removed", oe.FullName()))
			continue
		}
		vals := oe.Values()
		for j := range vals.Len() {
			ov := vals.Get(j)
			cv := ce.Values().ByNumber(ov.Number())
			switch {
			case cv == nil && !ce.ReservedRanges().Has(ov.Number()):
				out = append(out, fmt.Sprintf("enum value %s = %d removed without reserving it", ov.FullName(), ov.Number()))
			case cv != nil && cv.Name() != ov.Name():
				out = append(out, fmt.Sprintf("enum value %d of %s renamed %s -> %s", ov.Number(), oe.FullName(), ov.Name(), cv.Name()))
			}
		}
	}
	return out
}

func walkMessages(ms protoreflect.MessageDescriptors, fn func(protoreflect.MessageDescriptor)) {
	for i := range ms.Len() {
		m := ms.Get(i)
		if m.IsMapEntry() {
			continue
		}
		fn(m)
		walkMessages(m.Messages(), fn)
	}
}

func findMessage(fd protoreflect.FileDescriptor, name protoreflect.FullName) protoreflect.MessageDescriptor {
	var found protoreflect.MessageDescriptor
	walkMessages(fd.Messages(), func(m protoreflect.MessageDescriptor) {
		if m.FullName() == name {
			found = m
		}
	})
	return found
}
