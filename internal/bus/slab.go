package bus

import (
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/containsec/contain/schemas/containv1"
)

// batchEventsField is containv1.Batch's repeated events field.
const batchEventsField = 6

// unmarshalAliased is b.UnmarshalVTUnsafe(data) with the batch's events
// allocated a slab at a time instead of one by one: a batch of 80 events
// is a handful of allocations instead of 80, for every consumer that
// decodes aliased (the events were a third of the fleet analyzer's
// allocations). The generated code merges (it does not reset b), so the
// fields between the events are given to it run by run, and each event
// is the generated decode of its bytes, as the generated Batch decode
// does: the batch read is the same, and so is every error (a run or an
// event the generated code refuses; bytes that do not parse as fields go
// to the generated code whole). Retaining one event keeps its slab alive;
// an aliased batch already keeps its payload alive the same way.
func unmarshalAliased(b *containv1.Batch, data []byte) error {
	var slab []containv1.Event
	run := 0 // start of the fields not yet decoded
	for i := 0; i < len(data); {
		var (
			num protowire.Number
			typ protowire.Type
			l   = 1
		)
		if c := data[i]; c < 0x80 {
			num, typ = protowire.Number(c>>3), protowire.Type(c&7)
		} else if num, typ, l = protowire.ConsumeTag(data[i:]); l < 0 {
			b.Reset()
			return b.UnmarshalVTUnsafe(data)
		}
		if num != batchEventsField || typ != protowire.BytesType {
			m := protowire.ConsumeFieldValue(num, typ, data[i+l:])
			if m < 0 {
				b.Reset()
				return b.UnmarshalVTUnsafe(data)
			}
			i += l + m
			continue
		}
		v, m := protowire.ConsumeBytes(data[i+l:])
		if m < 0 {
			b.Reset()
			return b.UnmarshalVTUnsafe(data)
		}
		if run < i {
			if err := b.UnmarshalVTUnsafe(data[run:i]); err != nil {
				return err
			}
		}
		if len(slab) == 0 {
			// Room for the events the rest of the payload holds at 256
			// bytes each (a fleet load test event is ~340), at most 64.
			slab = make([]containv1.Event, min(64, (len(data)-i)/256+1))
		}
		ev := &slab[0]
		slab = slab[1:]
		if err := ev.UnmarshalVTUnsafe(v); err != nil {
			return err
		}
		b.Events = append(b.Events, ev)
		i += l + m
		run = i
	}
	if run < len(data) {
		return b.UnmarshalVTUnsafe(data[run:])
	}
	return nil
}
