package enricher

import (
	"slices"
	"strconv"

	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/containsec/contain/internal/bus"
	"github.com/containsec/contain/schemas/containv1"
)

// The container dictionary (enricher.container_dictionary, schema_version
// 2): an output batch lists each of its containers once (Batch.containers:
// id, name, image reference and digest, profile reference), and each event
// of a container refers to its entry (Event.container_ref) instead of
// repeating them; those fields are left out of the event's bytes. Readers
// fill them back as they decode (containv1.Batch.Expand, bus.ScanBatch),
// so a batch reads as the same events either way
// (TestWireMatchesDecoded). An event without a container id is written
// as before. A batch is written this way only when that is smaller.

// Field numbers the dictionary writes or leaves out.
const (
	fieldContainerID     = 3
	fieldContainerRef    = 30
	fieldBatchContainers = 7
)

// dictEntry is one container of an output batch as its events read.
type dictEntry struct {
	id, name, ref, digest, profile string
}

// entryOf is what event i of sc.wb reads of its container once enriched
// (the entry's values over the event's own, as en.wire appends them).
func entryOf(sc *wireScratch, i int) dictEntry {
	ev := &sc.wb.Events[i]
	d := dictEntry{id: ev.ContainerID, name: ev.ContainerName, ref: ev.ImageRef, digest: ev.ImageDigest, profile: ev.ProfileRef}
	if en := sc.ens[i]; en != nil {
		if en.rec.ImageRef != "" {
			d.ref = en.rec.ImageRef
		}
		if en.rec.ImageDigest != "" {
			d.digest = en.rec.ImageDigest
		}
		if en.profileRef != "" {
			d.profile = en.profileRef
		}
		if d.name == "" {
			d.name = en.rec.Name
		}
	}
	return d
}

// size is the entry's encoded size as a ContainerRef.
func (d *dictEntry) size() int {
	return stringFieldSize(d.id) + stringFieldSize(d.name) + stringFieldSize(d.ref) + stringFieldSize(d.digest) + stringFieldSize(d.profile)
}

// dictionaryField reports whether event field num is one the dictionary
// carries (or the reference itself).
func dictionaryField(num protowire.Number) bool {
	switch num {
	case fieldContainerID, fieldContainerName, fieldImageRef, fieldImageDigest, fieldProfileRef, fieldContainerRef:
		return true
	}
	return false
}

// strippedSize is the size of raw without the fields the dictionary
// carries; -1 for bytes that do not parse (ScanBatch accepted them: not
// expected).
func strippedSize(raw []byte) int {
	n := 0
	for b := raw; len(b) > 0; {
		num, typ, tn := protowire.ConsumeTag(b)
		if tn < 0 {
			return -1
		}
		vn := protowire.ConsumeFieldValue(num, typ, b[tn:])
		if vn < 0 {
			return -1
		}
		if !dictionaryField(num) {
			n += tn + vn
		}
		b = b[tn+vn:]
	}
	return n
}

// appendStripped appends raw without the fields the dictionary carries.
func appendStripped(buf, raw []byte) []byte {
	for b := raw; len(b) > 0; {
		num, typ, tn := protowire.ConsumeTag(b)
		vn := protowire.ConsumeFieldValue(num, typ, b[tn:])
		if !dictionaryField(num) {
			buf = append(buf, b[:tn+vn]...)
		}
		b = b[tn+vn:]
	}
	return buf
}

// refFieldSize is the size of container_ref r.
func refFieldSize(r uint32) int {
	return protowire.SizeTag(fieldContainerRef) + protowire.SizeVarint(uint64(r))
}

// dictionarySize builds the dictionary of the output batch of the events
// idx (sc.dict, sc.refs, sc.stripped) and returns the batch's encoded
// size with it; a size no smaller than any batch when an event's bytes do
// not parse.
func (e *Enricher) dictionarySize(sc *wireScratch, producer string, idx []int) int {
	wb := &sc.wb
	sc.dict = sc.dict[:0]
	if sc.dictIdx == nil {
		sc.dictIdx = map[dictEntry]uint32{}
	}
	clear(sc.dictIdx)
	sc.refs = slices.Grow(sc.refs[:0], len(wb.Events))[:len(wb.Events)]
	clear(sc.refs)
	sc.stripped = slices.Grow(sc.stripped[:0], len(wb.Events))[:len(wb.Events)]
	n := headerSize(wb, containv1.SchemaVersionDictionary, producer)
	var last dictEntry
	var lastRef uint32
	for _, i := range idx {
		ev := &wb.Events[i]
		if ev.ContainerID == "" {
			n += 1 + protowire.SizeBytes(sc.body[i])
			continue
		}
		d := entryOf(sc, i)
		r := lastRef
		if r == 0 || d != last {
			var ok bool
			if r, ok = sc.dictIdx[d]; !ok {
				sc.dict = append(sc.dict, d)
				r = uint32(len(sc.dict))
				sc.dictIdx[d] = r
				n += 1 + protowire.SizeBytes(d.size())
			}
			last, lastRef = d, r
		}
		s := strippedSize(ev.Raw)
		if s < 0 {
			return int(^uint(0) >> 1)
		}
		sc.refs[i], sc.stripped[i] = r, s+refFieldSize(r)
		n += 1 + protowire.SizeBytes(sc.stripped[i])
	}
	return n
}

// emitDictionary encodes the events idx as one output batch of size
// bytes with the dictionary dictionarySize built.
func (e *Enricher) emitDictionary(sc *wireScratch, subject, producer string, idx []int, size int, msgs []*nats.Msg, sizes []int) ([]*nats.Msg, []int, error) {
	wb := &sc.wb
	buf, at := sc.arenaBuf(size)
	buf = appendBatchHeader(buf, wb, containv1.SchemaVersionDictionary, producer)
	for i := range sc.dict {
		d := &sc.dict[i]
		buf = protowire.AppendTag(buf, fieldBatchContainers, protowire.BytesType)
		buf = protowire.AppendVarint(buf, uint64(d.size()))
		buf = appendStringField(buf, 1, d.id)
		buf = appendStringField(buf, 2, d.name)
		buf = appendStringField(buf, 3, d.ref)
		buf = appendStringField(buf, 4, d.digest)
		buf = appendStringField(buf, 5, d.profile)
	}
	for _, i := range idx {
		ev := &wb.Events[i]
		buf = protowire.AppendTag(buf, fieldBatchEvents, protowire.BytesType)
		r := sc.refs[i]
		if r == 0 {
			buf = protowire.AppendVarint(buf, uint64(sc.body[i]))
			buf = append(buf, ev.Raw...)
			if en := sc.ens[i]; en != nil {
				buf = append(buf, en.wire...)
				if ev.ContainerName == "" {
					buf = append(buf, en.nameWire...)
				}
			}
			continue
		}
		buf = protowire.AppendVarint(buf, uint64(sc.stripped[i]))
		buf = appendStripped(buf, ev.Raw)
		buf = protowire.AppendTag(buf, fieldContainerRef, protowire.VarintType)
		buf = protowire.AppendVarint(buf, uint64(r))
	}
	msgs, sizes, err := e.finishMsg(sc, subject, producer, idx, at, size, buf, msgs, sizes)
	if err == nil {
		msgs[len(msgs)-1].Header.Set(bus.HeaderSchema, strconv.Itoa(containv1.SchemaVersionDictionary))
	}
	return msgs, sizes, err
}
