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

// dictMemo is an entry's reference in the dictionary of the output batch
// numbered gen, for its events named name that carry no image, digest or
// profile of their own (the collector's events): the common case, found
// without hashing the container's strings.
type dictMemo struct {
	gen  uint64
	ref  uint32
	name string
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

// keptSpans appends to spans the byte ranges of raw that remain once the
// fields the dictionary carries are left out (adjacent fields merged),
// and returns their total size; -1 for bytes that do not parse
// (ScanBatch accepted them: not expected).
func keptSpans(raw []byte, spans [][2]int32) ([][2]int32, int) {
	n, first := 0, len(spans)
	for at := 0; at < len(raw); {
		num, typ, tn := protowire.ConsumeTag(raw[at:])
		if tn < 0 {
			return spans, -1
		}
		vn := skipValue(typ, raw[at+tn:])
		if vn < 0 {
			return spans, -1
		}
		end := at + tn + vn
		if !dictionaryField(num) {
			n += end - at
			if k := len(spans) - 1; k >= first && spans[k][1] == int32(at) {
				spans[k][1] = int32(end)
			} else {
				spans = append(spans, [2]int32{int32(at), int32(end)})
			}
		}
		at = end
	}
	return spans, n
}

// skipValue is the size of a field value of wire type typ at the start of
// b (protowire.ConsumeFieldValue for the types an event holds; groups are
// refused: ScanBatch leaves them to decoding).
func skipValue(typ protowire.Type, b []byte) int {
	switch typ {
	case protowire.VarintType:
		for i := 0; i < len(b) && i < 10; i++ {
			if b[i] < 0x80 {
				return i + 1
			}
		}
		return -1
	case protowire.BytesType:
		l, n := protowire.ConsumeVarint(b)
		if n < 0 || l > uint64(len(b)-n) {
			return -1
		}
		return n + int(l)
	case protowire.Fixed32Type:
		if len(b) < 4 {
			return -1
		}
		return 4
	case protowire.Fixed64Type:
		if len(b) < 8 {
			return -1
		}
		return 8
	}
	return -1
}

// refFieldSize is the size of container_ref r.
func refFieldSize(r uint32) int {
	return protowire.SizeTag(fieldContainerRef) + protowire.SizeVarint(uint64(r))
}

// dictionarySize builds the dictionary of the output batch of the events
// idx (sc.dict, sc.refs, sc.stripped, sc.spans) and returns the batch's
// encoded size with it; a size no smaller than any batch when an event's
// bytes do not parse.
func (e *Enricher) dictionarySize(sc *wireScratch, producer string, idx []int) int {
	wb := &sc.wb
	sc.dict = sc.dict[:0]
	clear(sc.dictIdx)
	sc.gen++
	sc.refs = slices.Grow(sc.refs[:0], len(wb.Events))[:len(wb.Events)]
	clear(sc.refs)
	sc.stripped = slices.Grow(sc.stripped[:0], len(wb.Events))[:len(wb.Events)]
	sc.spanAt = slices.Grow(sc.spanAt[:0], len(wb.Events))[:len(wb.Events)]
	sc.spanEnd = slices.Grow(sc.spanEnd[:0], len(wb.Events))[:len(wb.Events)]
	sc.spans = sc.spans[:0]
	n := headerSize(wb, containv1.SchemaVersionDictionary, producer)
	for _, i := range idx {
		ev := &wb.Events[i]
		if ev.ContainerID == "" {
			n += 1 + protowire.SizeBytes(sc.body[i])
			continue
		}
		r := sc.ref(i)
		sc.spanAt[i] = int32(len(sc.spans))
		var s int
		if sc.spans, s = keptSpans(ev.Raw, sc.spans); s < 0 {
			return int(^uint(0) >> 1)
		}
		sc.spanEnd[i] = int32(len(sc.spans))
		sc.refs[i], sc.stripped[i] = r, s+refFieldSize(r)
		n += 1 + protowire.SizeBytes(sc.stripped[i])
	}
	for i := range sc.dict {
		n += 1 + protowire.SizeBytes(sc.dict[i].size())
	}
	return n
}

// ref is the dictionary reference of event i (which has a container id),
// adding its entry to sc.dict when new.
func (sc *wireScratch) ref(i int) uint32 {
	ev := &sc.wb.Events[i]
	en := sc.ens[i]
	own := ev.ImageRef != "" || ev.ImageDigest != "" || ev.ProfileRef != ""
	if en != nil && !own && en.dict.gen == sc.gen && en.dict.name == ev.ContainerName {
		return en.dict.ref
	}
	d := entryOf(sc, i)
	r, ok := sc.dictIdx[d]
	if !ok {
		sc.dict = append(sc.dict, d)
		r = uint32(len(sc.dict))
		if sc.dictIdx == nil {
			sc.dictIdx = map[dictEntry]uint32{}
		}
		sc.dictIdx[d] = r
	}
	if en != nil && !own {
		en.dict = dictMemo{gen: sc.gen, ref: r, name: ev.ContainerName}
	}
	return r
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
		for _, sp := range sc.spans[sc.spanAt[i]:sc.spanEnd[i]] {
			buf = append(buf, ev.Raw[sp[0]:sp[1]]...)
		}
		buf = protowire.AppendTag(buf, fieldContainerRef, protowire.VarintType)
		buf = protowire.AppendVarint(buf, uint64(r))
	}
	msgs, sizes, err := e.finishMsg(sc, subject, producer, idx, at, size, buf, msgs, sizes)
	if err == nil {
		msgs[len(msgs)-1].Header.Set(bus.HeaderSchema, strconv.Itoa(containv1.SchemaVersionDictionary))
	}
	return msgs, sizes, err
}
