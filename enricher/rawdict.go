package enricher

import (
	"github.com/containsec/contain/internal/bus"
)

// Raw batches with a container dictionary (collector.container_dictionary,
// schema_version 2): the collector lists each container of a batch once
// and its events refer to the entry (Event.container_ref) instead of
// repeating its 64-character id and name. bus.ScanBatch fills each
// event's container fields from its entry (bus.WireEvent), and notes
// where the event's own container fields are (ContainerFields: for the
// collector's events, the reference alone). The wire path writes such an
// event's bytes without those fields and with the filled-in ones in
// their place (appendRefExpanded), or, in an output batch with a
// dictionary of its own, without them and with a reference to its
// output entry (emitDictionary), so the output reads as the decoded
// path's (Expand, then enrichment): TestWireMatchesDecoded.

// wireReadable reports whether the wire path can write every event of the
// scanned raw batch wb: an event that refers to an entry must hold its
// container fields in one run (bus.WireEvent.FieldsSpread is false), as
// the generated code writes a collector's compacted event (the reference
// alone). A batch with an event that spreads them is decoded instead.
func wireReadable(wb *bus.WireBatch) bool {
	if len(wb.Containers) == 0 {
		return true
	}
	for i := range wb.Events {
		if ev := &wb.Events[i]; ev.ContainerRef != 0 && ev.FieldsSpread {
			return false
		}
	}
	return true
}

// refExpandedDelta is how many bytes longer event ev (which refers to an
// entry) is once its container fields are written out in place of its own.
func refExpandedDelta(ev *bus.WireEvent) int {
	f := ev.ContainerFields
	return containerFieldsSize(ev) - int(f[1]-f[0])
}

// containerFieldsSize is the encoded size of ev's container fields as
// ScanBatch filled them.
func containerFieldsSize(ev *bus.WireEvent) int {
	return stringFieldSize(ev.ContainerID) + stringFieldSize(ev.ContainerName) + stringFieldSize(ev.ImageRef) +
		stringFieldSize(ev.ImageDigest) + stringFieldSize(ev.ProfileRef)
}

// appendRefExpanded appends event ev's bytes with its container fields
// (the reference among them) replaced by the fields its entry filled in.
func appendRefExpanded(buf []byte, ev *bus.WireEvent) []byte {
	f := ev.ContainerFields
	buf = append(buf, ev.Raw[:f[0]]...)
	buf = append(buf, ev.Raw[f[1]:]...)
	buf = appendStringField(buf, fieldContainerID, ev.ContainerID)
	buf = appendStringField(buf, fieldContainerName, ev.ContainerName)
	buf = appendStringField(buf, fieldImageRef, ev.ImageRef)
	buf = appendStringField(buf, fieldImageDigest, ev.ImageDigest)
	return appendStringField(buf, fieldProfileRef, ev.ProfileRef)
}
