package containv1

import (
	"fmt"

	"google.golang.org/protobuf/encoding/protowire"
)

// SchemaVersionDictionary is the schema_version of a batch that carries a
// container dictionary (Batch.containers, Event.container_ref): the
// enricher's output. Readers of this build read it; older readers refuse
// it (a version newer than theirs) instead of reading its events without
// their containers.
const SchemaVersionDictionary = 2

// ReadableSchemaVersion is the newest schema_version this build reads.
const ReadableSchemaVersion = SchemaVersionDictionary

// Expand gives each event of b that refers to an entry of b's container
// dictionary the entry's container_id, container_name, image_ref,
// image_digest and profile_ref where the event leaves them empty, then
// drops the references and the dictionary: b reads as a batch written
// without one. It fails on a reference past the dictionary, leaving b
// partly expanded.
func (b *Batch) Expand() error {
	if len(b.Parts) > 0 {
		// Only a fleet batch holds parts, and readers split it
		// (bus.FleetParts) before decoding any part.
		return fmt.Errorf("parts in a batch of schema_version %d (only a fleet batch, %d, holds parts)", b.SchemaVersion, SchemaVersionFleet)
	}
	if len(b.Containers) == 0 {
		for i, ev := range b.Events {
			if ev.ContainerRef != 0 {
				return fmt.Errorf("event %d: container_ref %d, and the batch has no containers", i, ev.ContainerRef)
			}
		}
		b.Containers = nil
		return nil
	}
	for i, ev := range b.Events {
		r := ev.ContainerRef
		if r == 0 {
			continue
		}
		if uint64(r) > uint64(len(b.Containers)) {
			return fmt.Errorf("event %d: container_ref %d past the batch's %d containers", i, r, len(b.Containers))
		}
		ev.ExpandFrom(b.Containers[r-1])
	}
	b.Containers = nil
	return nil
}

// ExpandFrom sets what ev leaves empty of its container fields from c,
// and drops ev's container_ref.
func (ev *Event) ExpandFrom(c *ContainerRef) {
	ev.ContainerRef = 0
	if c == nil {
		return
	}
	FillContainer(&ev.ContainerId, &ev.ContainerName, &ev.ImageRef, &ev.ImageDigest, &ev.ProfileRef,
		c.ContainerId, c.ContainerName, c.ImageRef, c.ImageDigest, c.ProfileRef)
}

// FillContainer sets each of the container fields id, name, ref, digest
// and profile that is empty to its dictionary entry's value: the rule
// every reader of a dictionary batch applies, whatever it reads events
// into.
func FillContainer(id, name, ref, digest, profile *string, eid, ename, eref, edigest, eprofile string) {
	if *id == "" {
		*id = eid
	}
	if *name == "" {
		*name = ename
	}
	if *ref == "" {
		*ref = eref
	}
	if *digest == "" {
		*digest = edigest
	}
	if *profile == "" {
		*profile = eprofile
	}
}

// Compact is Expand's inverse: each distinct container of b's events (by
// id, name, image reference, digest and profile reference) becomes one
// entry of b's dictionary, its events refer to it instead of carrying
// those fields, and b's schema_version becomes SchemaVersionDictionary.
// Events without a container id are left as they are. It changes the
// events in place.
func (b *Batch) Compact() { b.compact(true) }

// CompactIfSmaller compacts b (Compact) when its encoding is then
// smaller, and reports whether it did: a batch whose containers have an
// event each would only grow. The collector's batches (collector.
// container_dictionary) are written so: a host's events repeat their
// container's 64-character id and name, which one entry per container
// replaces with a reference of two or three bytes.
func (b *Batch) CompactIfSmaller() bool { return b.compact(false) }

// compact finds each event's entry in one pass, counting the bytes the
// dictionary saves, then compacts b if force or if it saves any.
func (b *Batch) compact(force bool) bool {
	type key struct{ id, name, ref, digest, profile string }
	var (
		idx   map[key]uint32
		keys  []key // by reference - 1
		refs  []uint32
		saved int
	)
	for i, ev := range b.Events {
		if ev == nil || ev.ContainerId == "" {
			continue
		}
		if idx == nil {
			idx = make(map[key]uint32, 64)
			keys = make([]key, 0, 64)
			refs = make([]uint32, len(b.Events))
		}
		k := key{ev.ContainerId, ev.ContainerName, ev.ImageRef, ev.ImageDigest, ev.ProfileRef}
		fields := stringSize(protoContainerID, k.id) + stringSize(protoContainerName, k.name) + stringSize(protoImageRef, k.ref) +
			stringSize(protoImageDigest, k.digest) + stringSize(protoProfileRef, k.profile)
		r, ok := idx[k]
		if !ok {
			keys = append(keys, k)
			r = uint32(len(keys))
			idx[k] = r
			// The entry, as batch field 7 (its fields are numbered 1-5:
			// one byte tags, as the event's 3-6 and 12).
			saved -= 1 + protowire.SizeBytes(fields)
		}
		refs[i] = r
		saved += fields - protowire.SizeTag(protoContainerRef) - protowire.SizeVarint(uint64(r))
	}
	if !force && saved <= 0 {
		return false
	}
	for i, r := range refs {
		if r != 0 {
			ev := b.Events[i]
			ev.ContainerRef = r
			ev.ContainerId, ev.ContainerName, ev.ImageRef, ev.ImageDigest, ev.ProfileRef = "", "", "", "", ""
		}
	}
	for _, k := range keys {
		b.Containers = append(b.Containers, &ContainerRef{ContainerId: k.id, ContainerName: k.name, ImageRef: k.ref,
			ImageDigest: k.digest, ProfileRef: k.profile})
	}
	b.SchemaVersion = SchemaVersionDictionary
	return true
}

// Field numbers of the container fields of Event.
const (
	protoContainerID   = 3
	protoContainerName = 4
	protoImageRef      = 5
	protoImageDigest   = 6
	protoProfileRef    = 12
	protoContainerRef  = 30
)

// stringSize is the encoded size of string field num holding s (0 for "").
func stringSize(num protowire.Number, s string) int {
	if s == "" {
		return 0
	}
	return protowire.SizeTag(num) + protowire.SizeBytes(len(s))
}
