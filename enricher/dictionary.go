package enricher

import (
	"slices"
	"strings"

	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/encoding/protowire"

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
		en.override(&d.name, &d.ref, &d.digest, &d.profile)
	}
	return d
}

// size is the entry's encoded size as a ContainerRef.
func (d *dictEntry) size() int {
	return stringFieldSize(d.id) + stringFieldSize(d.name) + stringFieldSize(d.ref) + stringFieldSize(d.digest) + stringFieldSize(d.profile)
}

// dictMemo is an entry's place in the dictionary of the raw batch
// numbered gen, for its events named name that carry no image, digest or
// profile of their own (the collector's events): the common case, found
// without hashing the container's strings.
type dictMemo struct {
	gen  uint64
	ref  uint32
	name string
}

// dictScratch is the wire path's dictionary buffers, reused.
type dictScratch struct {
	// The raw batch's containers (batchDictionary): entries, each event's
	// entry (1-based; 0: written without), the size of its bytes
	// without the container fields, and those bytes' ranges
	// spans[spanAt[i]:spanEnd[i]].
	entries         []dictEntry
	idx             map[dictEntry]uint32
	gen             uint64 // numbers the raw batches (entry.dict)
	ref             []uint32
	base            []int
	spans           [][2]int32
	spanAt, spanEnd []int32
	// One output batch's (dictionarySize): its entries (indexes into
	// entries), each raw entry's reference in it (0: not yet), and each
	// event's reference and encoded size.
	out      []uint32
	outRef   []uint32
	refs     []uint32
	stripped []int
}

// forget drops what points into the fetch's payloads.
func (d *dictScratch) forget() {
	clear(d.entries)
	clear(d.idx)
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

// batchDictionary finds the containers of the raw batch sc.wb once, for
// every output batch cut from it: each event with a container id gets
// its entry and the ranges of its bytes kept. An event whose bytes do not
// parse (not expected: ScanBatch accepted them) is written without.
func (sc *wireScratch) batchDictionary() {
	d := &sc.dicts
	evs := sc.wb.Events
	d.gen++
	d.entries = d.entries[:0]
	clear(d.idx)
	d.ref = slices.Grow(d.ref[:0], len(evs))[:len(evs)]
	d.base = slices.Grow(d.base[:0], len(evs))[:len(evs)]
	d.spanAt = slices.Grow(d.spanAt[:0], len(evs))[:len(evs)]
	d.spanEnd = slices.Grow(d.spanEnd[:0], len(evs))[:len(evs)]
	d.spans = d.spans[:0]
	for i := range evs {
		ev := &evs[i]
		d.ref[i] = 0
		if ev.ContainerID == "" {
			continue
		}
		at := len(d.spans)
		var n int
		if f := ev.ContainerFields; !ev.FieldsSpread {
			// One run of container fields (ScanBatch): what is around it.
			if f[0] > 0 {
				d.spans = append(d.spans, [2]int32{0, f[0]})
			}
			if int(f[1]) < len(ev.Raw) {
				d.spans = append(d.spans, [2]int32{f[1], int32(len(ev.Raw))})
			}
			n = len(ev.Raw) - int(f[1]-f[0])
		} else if d.spans, n = keptSpans(ev.Raw, d.spans); n < 0 {
			d.spans = d.spans[:at]
			continue
		}
		d.ref[i], d.base[i] = sc.entryRef(i), n
		d.spanAt[i], d.spanEnd[i] = int32(at), int32(len(d.spans))
	}
}

// entryRef is the entry of event i (which has a container id) in the raw
// batch's dictionary, added when new. The collector's events (no image,
// digest or profile of their own) are found through their cache entry's
// memo; on its miss a new entry is added without looking for an equal
// one (at worst an entry twice, as for one container id on two hosts).
func (sc *wireScratch) entryRef(i int) uint32 {
	d := &sc.dicts
	ev := &sc.wb.Events[i]
	en := sc.ens[i]
	memo := en != nil && ev.ImageRef == "" && ev.ImageDigest == "" && ev.ProfileRef == ""
	if memo && en.dict.gen == d.gen && en.dict.name == ev.ContainerName {
		return en.dict.ref
	}
	e := entryOf(sc, i)
	var r uint32
	if memo {
		d.entries = append(d.entries, e)
		r = uint32(len(d.entries))
		name := en.dict.name
		if name != ev.ContainerName {
			// The cache entry outlives the payload the event's name
			// points into: a copy, made once per name.
			name = strings.Clone(ev.ContainerName)
		}
		en.dict = dictMemo{gen: d.gen, ref: r, name: name}
		return r
	}
	if d.idx == nil {
		d.idx = map[dictEntry]uint32{}
	}
	r, ok := d.idx[e]
	if !ok {
		d.entries = append(d.entries, e)
		r = uint32(len(d.entries))
		d.idx[e] = r
	}
	return r
}

// dictionarySize builds the dictionary of the output batch of the events
// idx from the raw batch's (batchDictionary) and returns the batch's
// encoded size with it.
func (e *Enricher) dictionarySize(sc *wireScratch, producer string, idx []int) int {
	d := &sc.dicts
	wb := &sc.wb
	d.out = d.out[:0]
	d.outRef = slices.Grow(d.outRef[:0], len(d.entries))[:len(d.entries)]
	clear(d.outRef)
	d.refs = slices.Grow(d.refs[:0], len(wb.Events))[:len(wb.Events)]
	d.stripped = slices.Grow(d.stripped[:0], len(wb.Events))[:len(wb.Events)]
	n := headerSize(wb, containv1.SchemaVersionDictionary, producer)
	for _, i := range idx {
		k := d.ref[i]
		if k == 0 {
			d.refs[i] = 0
			n += 1 + protowire.SizeBytes(sc.body[i])
			continue
		}
		r := d.outRef[k-1]
		if r == 0 {
			d.out = append(d.out, k-1)
			r = uint32(len(d.out))
			d.outRef[k-1] = r
			n += 1 + protowire.SizeBytes(d.entries[k-1].size())
		}
		d.refs[i], d.stripped[i] = r, d.base[i]+refFieldSize(r)
		n += 1 + protowire.SizeBytes(d.stripped[i])
	}
	return n
}

// emitDictionary encodes the events idx as one output batch of size
// bytes with the dictionary dictionarySize built.
func (e *Enricher) emitDictionary(sc *wireScratch, subject, producer string, idx []int, size int, msgs []*nats.Msg, sizes []int) ([]*nats.Msg, []int, error) {
	wb := &sc.wb
	buf, at := sc.arenaBuf(size)
	buf = appendBatchHeader(buf, wb, containv1.SchemaVersionDictionary, producer)
	dk := &sc.dicts
	for _, k := range dk.out {
		d := &dk.entries[k]
		buf = protowire.AppendTag(buf, fieldBatchContainers, protowire.BytesType)
		buf = protowire.AppendVarint(buf, uint64(d.size()))
		buf = appendStringField(buf, 1, d.id)
		buf = appendStringField(buf, 2, d.name)
		buf = appendStringField(buf, 3, d.ref)
		buf = appendStringField(buf, 4, d.digest)
		buf = appendStringField(buf, 5, d.profile)
	}
	for _, i := range idx {
		r := dk.refs[i]
		if r == 0 {
			buf = sc.appendEvent(buf, i)
			continue
		}
		ev := &wb.Events[i]
		buf = protowire.AppendTag(buf, fieldBatchEvents, protowire.BytesType)
		buf = protowire.AppendVarint(buf, uint64(dk.stripped[i]))
		for _, sp := range dk.spans[dk.spanAt[i]:dk.spanEnd[i]] {
			buf = append(buf, ev.Raw[sp[0]:sp[1]]...)
		}
		buf = protowire.AppendTag(buf, fieldContainerRef, protowire.VarintType)
		buf = protowire.AppendVarint(buf, uint64(r))
	}
	return e.finishMsg(sc, subject, producer, idx, at, size, containv1.SchemaVersionDictionary, buf, msgs, sizes)
}
