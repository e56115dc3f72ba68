package enricher

import (
	"context"
	"fmt"
	"slices"
	"strconv"

	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/containsec/contain/internal/bus"
	"github.com/containsec/contain/internal/metrics"
	"github.com/containsec/contain/schemas/containv1"
)

// The enricher relays events on the wire (docs/design/030-enricher-wire.md):
// a raw batch is scanned (bus.ScanBatch: validated as decoding would, the
// events left encoded), each event's bytes are copied into the output
// batch followed by the enrichment fields of its container, and the batch
// fields are written as outputBatch and route set them. A protobuf field
// that occurs twice decodes as its last occurrence, so an appended
// image_ref, image_digest, profile_ref or container_name overrides the
// collector's, and a field the entry does not know is not appended: the
// output decodes exactly as the decoded path's (enrichBatch, route,
// messages), which stays for the batches ScanBatch leaves to decoding and
// is the reference of TestWireMatchesDecoded and FuzzWireMatchesDecoded.

// Field numbers of containv1.Event that the enrichment appends.
const (
	fieldContainerName = 4
	fieldImageRef      = 5
	fieldImageDigest   = 6
	fieldProfileRef    = 12
)

// Field numbers of containv1.Batch that the output batch header holds.
const (
	fieldBatchSchemaVersion = 1
	fieldBatchHost          = 2
	fieldBatchStage         = 3
	fieldBatchSeq           = 4
	fieldBatchProducerID    = 5
	fieldBatchEvents        = 6
)

// newEntry is the entry of rec with its encoded enrichment: what applyEntry
// sets, as fields to append to an event (wire), and the container name for
// an event that has none (nameWire).
func newEntry(rec ContainerImage, profileRef string) *entry {
	en := &entry{rec: rec, profileRef: profileRef}
	en.wire = appendStringField(en.wire, fieldImageRef, rec.ImageRef)
	en.wire = appendStringField(en.wire, fieldImageDigest, rec.ImageDigest)
	en.wire = appendStringField(en.wire, fieldProfileRef, profileRef)
	en.nameWire = appendStringField(nil, fieldContainerName, rec.Name)
	return en
}

// appendStringField appends field num holding s, unless s is empty.
func appendStringField(b []byte, num protowire.Number, s string) []byte {
	if s == "" {
		return b
	}
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendString(b, s)
}

// wireScratch is one handler call's buffers, reused across calls.
type wireScratch struct {
	wb    bus.WireBatch
	ens   []*entry // each event's entry (nil: unknown or no container)
	parts []int    // each event's partition
	body  []int    // each output event's length
	idx   []int    // the events of one output batch
	order []int    // partitions in order of first event
	ev    containv1.Event
	// The container dictionary of the output batch emitOne writes
	// (dictionary.go): its entries, each event's reference (0: none) and
	// size once its container fields are left out.
	dicts dictScratch
	// arena holds the output messages' bytes (emitOne), one chunk after
	// another; used is the chunk the last fetch wrote last, free a chunk
	// no message refers to any more (recycle), which the next fetch
	// writes into.
	arena, used, free []byte
}

// Output arena chunks: at least minChunk, grown by doubling up to
// maxChunk (or a message's size, when larger).
const (
	minChunk = 64 << 10
	maxChunk = 4 << 20
)

// handleMessages enriches each message of one fetch, in order, on the
// wire (or decoded when bus.Messages.Wire leaves it to decoding), then
// republishes them all at once as handle did.
func (e *Enricher) handleMessages(ctx context.Context, f *bus.Messages) error {
	e.deferPuts = true
	msgs, sizes, err := e.fetchMessages(ctx, f)
	if err == nil && e.cfg.FleetBatches {
		msgs, err = e.fleetMessages(msgs)
	}
	e.deferPuts = false
	puts := e.puts
	e.puts = nil
	if err != nil {
		e.unstore(puts)
		return err
	}
	all := msgs
	if len(puts) > 0 {
		// The container records first: a consumer of the events that
		// reads KV finds them (as when they were put one by one before).
		all = make([]*nats.Msg, 0, len(puts)+len(msgs))
		for _, p := range puts {
			all = append(all, p.msg)
		}
		all = append(all, msgs...)
	}
	if len(all) == 0 {
		e.recycle() // nothing was written
		return nil
	}
	if err := f.PublishAll(ctx, e.js, all, metrics.StageEnricher); err != nil {
		e.unstore(puts)
		e.em.publishErrors.Inc()
		return err
	}
	e.published()
	for _, n := range sizes {
		e.em.out.Add(float64(n))
		e.em.batchEvents.Observe(float64(n))
	}
	return nil
}

// fetch is the handler's view of one fetch (*bus.Messages).
type fetch interface {
	Len() int
	Wire(i int, wb *bus.WireBatch) bool
	Batch(i int) *containv1.Batch
}

// fetchMessages is the output messages of a fetch and the number of events
// of each. A refused message (malformed, not bound to its host) has none.
func (e *Enricher) fetchMessages(ctx context.Context, f fetch) ([]*nats.Msg, []int, error) {
	e.scratchMu.Lock() // handler calls are sequential: never contended
	sc := &e.scratch
	defer func() {
		clear(sc.wb.Events) // they point into the payloads
		clear(sc.wb.Containers)
		sc.wb = bus.WireBatch{Events: sc.wb.Events[:0], Containers: sc.wb.Containers[:0]}
		clear(sc.ens)
		sc.dicts.forget()
		sc.used, sc.arena = sc.arena, nil
		e.scratchMu.Unlock()
	}()
	sc.arena, sc.free, sc.used = sc.free[:0], nil, nil
	var (
		msgs  = make([]*nats.Msg, 0, f.Len())
		sizes = make([]int, 0, f.Len())
	)
	for i := range f.Len() {
		// A raw batch with a container dictionary (collector.
		// container_dictionary) is read on the wire too, unless an
		// event spreads its container fields (wireReadable).
		if f.Wire(i, &sc.wb) && wireReadable(&sc.wb) {
			var err error
			if msgs, sizes, err = e.wireBatch(ctx, sc, msgs, sizes); err != nil {
				return nil, nil, err
			}
			continue
		}
		b := f.Batch(i)
		if b == nil {
			continue // refused, counted
		}
		m, s, err := e.messages(ctx, []*containv1.Batch{b})
		if err != nil {
			return nil, nil, err
		}
		msgs, sizes = append(msgs, m...), append(sizes, s...)
	}
	return msgs, sizes, nil
}

// published recycles the output arena once PublishAll has stored every
// message of the fetch: unless an asynchronous publish is still
// outstanding on e.js (one whose ack PublishAll stopped waiting for,
// which the client may publish again from msg.Data, or another user's),
// nothing refers to the messages' bytes any more.
func (e *Enricher) published() {
	if e.js.PublishAsyncPending() == 0 {
		e.recycle()
	}
}

// recycle lets the next fetch write its messages into the last chunk of
// the output arena: call it only once no message of the last fetch
// (fetchMessages) is referred to by anyone.
func (e *Enricher) recycle() {
	e.scratchMu.Lock()
	defer e.scratchMu.Unlock()
	e.scratch.free, e.scratch.used = e.scratch.used, nil
}

// wireBatch enriches, routes and encodes the scanned batch sc.wb, as
// enrichBatch, route and messages do a decoded one, appending its output
// messages and their sizes.
func (e *Enricher) wireBatch(ctx context.Context, sc *wireScratch, msgs []*nats.Msg, sizes []int) ([]*nats.Msg, []int, error) {
	containers, err := e.wireEnrich(ctx, sc)
	if err != nil {
		return nil, nil, err
	}
	wb := &sc.wb
	sc.body = sc.body[:0]
	for i := range wb.Events {
		ev := &wb.Events[i]
		n := len(ev.Raw)
		if ev.ContainerRef != 0 {
			n += refExpandedDelta(ev)
		}
		if en := sc.ens[i]; en != nil {
			n += len(en.wire)
			if ev.ContainerName == "" {
				n += len(en.nameWire)
			}
		}
		sc.body = append(sc.body, n)
	}
	if e.cfg.ContainerDictionary {
		sc.batchDictionary()
	}
	if e.router == nil {
		sc.idx = sc.idx[:0]
		for i := range wb.Events {
			sc.idx = append(sc.idx, i)
		}
		return e.emit(sc, containv1.EventsSubject(wb.Host), wb.ProducerID, sc.idx, msgs, sizes)
	}
	e.wireRoute(sc, containers)
	for _, p := range sc.order {
		sc.idx = sc.idx[:0]
		for i, q := range sc.parts {
			if q == p {
				sc.idx = append(sc.idx, i)
			}
		}
		msgs, sizes, err = e.emit(sc, containv1.EventsPartitionSubject(wb.Host, p),
			wb.ProducerID+"~"+containv1.PartitionToken(p), sc.idx, msgs, sizes)
		if err != nil {
			return nil, nil, err
		}
	}
	return msgs, sizes, nil
}

// wireEnrich finds each event's entry (sc.ens) as enrichBatch does,
// handling container events on the way (decoded: they are rare), and
// reports whether there was one.
func (e *Enricher) wireEnrich(ctx context.Context, sc *wireScratch) (containers bool, err error) {
	wb := &sc.wb
	sc.ens = sc.ens[:0]
	var m entryMemo
	// The cache is read under one read lock for the batch, let go for
	// what writes it (a container event, a lookup that misses).
	e.mu.RLock()
	locked := true
	defer func() {
		if locked {
			e.mu.RUnlock()
		}
	}()
	for i := range wb.Events {
		ev := &wb.Events[i]
		h := ev.Host
		if h == "" {
			h = wb.Host
		}
		if ev.Kind == containv1.Kind_KIND_CONTAINER && ev.ContainerID != "" {
			e.mu.RUnlock()
			locked = false
			var full containv1.Event
			if err := full.UnmarshalVTUnsafe(ev.Raw); err != nil {
				return false, fmt.Errorf("enricher: decoding container event: %w", err)
			}
			if full.ContainerRef != 0 {
				// Its container from the raw batch's dictionary, as
				// ScanBatch read it.
				containv1.FillContainer(&full.ContainerId, &full.ContainerName, &full.ImageRef, &full.ImageDigest, &full.ProfileRef,
					ev.ContainerID, ev.ContainerName, ev.ImageRef, ev.ImageDigest, ev.ProfileRef)
				full.ContainerRef = 0
			}
			if err := e.containerEvent(ctx, h, &full); err != nil {
				return false, err
			}
			m.forget()
			containers = true
			e.mu.RLock()
			locked = true
		}
		sc.ens = append(sc.ens, m.findRLocked(ctx, e, h, ev.ContainerID))
	}
	m.count(e.em)
	return containers, nil
}

// findRLocked is find with e.mu read-locked (as it is left): the cache
// is read in place, and lookup (which locks) is called only on a miss.
func (m *entryMemo) findRLocked(ctx context.Context, e *Enricher, h, id string) *entry {
	if id == "" {
		m.host++
		return nil
	}
	if !m.ok || id != m.key.id || h != m.key.host {
		k := ckey{h, id}
		en := e.cache[k]
		if en == nil {
			e.mu.RUnlock()
			en = e.lookup(ctx, k)
			e.mu.RLock()
		}
		m.key, m.en, m.ok = k, en, true
	}
	if m.en == nil {
		m.unknown++
	} else {
		m.enriched++
	}
	return m.en
}

// wireRoute sets each event's partition (sc.parts) and the partitions in
// order of their first event (sc.order), as route does: once per run of
// one container's events, from the cache as it is after the batch's
// container events.
func (e *Enricher) wireRoute(sc *wireScratch, containers bool) {
	wb := &sc.wb
	n := e.router.Partitions()
	sc.parts, sc.order = sc.parts[:0], sc.order[:0]
	var (
		seen     [64]bool // partitions below 64 seen; others looked up in order
		last     ckey
		lastP    int
		haveLast bool
	)
	for i := range wb.Events {
		ev := &wb.Events[i]
		var p int
		if q := memoPart(sc.ens[i], containers); q >= 0 {
			// The entry decides (wirePartition): no key to compare. The
			// run is over: an event of the last key decides anew.
			p, haveLast = q, false
		} else {
			k := ckey{ev.Host, ev.ContainerID}
			if k.host == "" {
				k.host = wb.Host
			}
			p = lastP
			if !haveLast || k.id == "" || k.id != last.id || k.host != last.host {
				p = e.wirePartition(sc, k, ev, sc.ens[i], containers)
				if p < 0 || p >= n {
					p = 0
				}
				last, lastP, haveLast = k, p, true
			}
		}
		sc.parts = append(sc.parts, p)
		if p < len(seen) {
			if !seen[p] {
				seen[p] = true
				sc.order = append(sc.order, p)
			}
		} else if !slices.Contains(sc.order, p) {
			sc.order = append(sc.order, p)
		}
	}
}

// memoPart is the partition en remembers (wirePartition), or -1: none
// remembered, or the batch had a container event.
func memoPart(en *entry, containers bool) int {
	if containers || en == nil {
		return -1
	}
	return int(en.part.Load()) - 1
}

// wirePartition is partitionOf for the scanned event ev of container k
// enriched by en. The cache is read again only when the batch had a
// container event (which may have changed k's entry since its lookup);
// an entry that sets both image fields remembers its partition.
func (e *Enricher) wirePartition(sc *wireScratch, k ckey, ev *bus.WireEvent, en *entry, containers bool) int {
	if k.id == "" {
		return 0
	}
	cur := en
	if containers {
		e.mu.RLock()
		cur = e.cache[k]
		e.mu.RUnlock()
	}
	memo := !containers && en != nil && en.rec.ImageRef != "" && en.rec.ImageDigest != ""
	if memo {
		if p := en.part.Load(); p > 0 {
			return int(p) - 1
		}
	}
	group := ""
	if cur != nil {
		group = cur.rec.Group
	}
	x := &sc.ev
	x.Host, x.ContainerId, x.ImageRef, x.ImageDigest, x.Kind = ev.Host, ev.ContainerID, ev.ImageRef, ev.ImageDigest, ev.Kind
	if en != nil {
		if en.rec.ImageRef != "" {
			x.ImageRef = en.rec.ImageRef
		}
		if en.rec.ImageDigest != "" {
			x.ImageDigest = en.rec.ImageDigest
		}
	}
	p := e.router.Partition(group, x)
	x.Host, x.ContainerId, x.ImageRef, x.ImageDigest = "", "", "", "" // they point into the payload
	if memo && p >= 0 && p < e.router.Partitions() && p < 1<<30 {
		en.part.Store(int32(p) + 1)
	}
	return p
}

// emit encodes the events idx of sc.wb as one output batch on subject
// under producer, or in parts (producer ~<part>) when it is larger than
// the payload limit, as messages and splitBatch do.
func (e *Enricher) emit(sc *wireScratch, subject, producer string, idx []int, msgs []*nats.Msg, sizes []int) ([]*nats.Msg, []int, error) {
	limit := e.payloadLimit() - 1024
	if len(idx) > 1 && e.outputSize(sc, producer, idx) > limit {
		// Grown past MaxPayload by the enrichment: in parts, cut where
		// splitBatch cuts (its sizes leave the producer id out).
		base := e.outputSize(sc, "", nil)
		var parts [][]int
		var split func(idx []int)
		split = func(idx []int) {
			if len(idx) < 2 || base+e.eventsSize(sc, idx) <= limit {
				parts = append(parts, idx)
				return
			}
			split(idx[:len(idx)/2])
			split(idx[len(idx)/2:])
		}
		split(idx)
		for i, part := range parts {
			var err error
			if msgs, sizes, err = e.emitOne(sc, subject, producer+"~"+strconv.Itoa(i), part, msgs, sizes); err != nil {
				return nil, nil, err
			}
		}
		return msgs, sizes, nil
	}
	return e.emitOne(sc, subject, producer, idx, msgs, sizes)
}

// emitOne encodes the events idx of sc.wb as one output batch: with a
// container dictionary when configured and smaller (dictionary.go).
func (e *Enricher) emitOne(sc *wireScratch, subject, producer string, idx []int, msgs []*nats.Msg, sizes []int) ([]*nats.Msg, []int, error) {
	size := e.outputSize(sc, producer, idx)
	if e.cfg.ContainerDictionary {
		if dsize := e.dictionarySize(sc, producer, idx); dsize < size {
			return e.emitDictionary(sc, subject, producer, idx, dsize, msgs, sizes)
		}
	}
	wb := &sc.wb
	buf, at := sc.arenaBuf(size)
	buf = appendBatchHeader(buf, wb, containv1.SchemaVersion, producer)
	for _, i := range idx {
		buf = sc.appendEvent(buf, i)
	}
	return e.finishMsg(sc, subject, producer, idx, at, size, containv1.SchemaVersion, buf, msgs, sizes)
}

// appendEvent appends event i of sc.wb as a batch field: its bytes
// followed by its entry's enrichment.
func (sc *wireScratch) appendEvent(buf []byte, i int) []byte {
	ev := &sc.wb.Events[i]
	buf = protowire.AppendTag(buf, fieldBatchEvents, protowire.BytesType)
	buf = protowire.AppendVarint(buf, uint64(sc.body[i]))
	if ev.ContainerRef != 0 {
		buf = appendRefExpanded(buf, ev)
	} else {
		buf = append(buf, ev.Raw...)
	}
	if en := sc.ens[i]; en != nil {
		buf = append(buf, en.wire...)
		if ev.ContainerName == "" {
			buf = append(buf, en.nameWire...)
		}
	}
	return buf
}

// arenaBuf is room for size bytes at the end of the output arena, and
// where it starts.
func (sc *wireScratch) arenaBuf(size int) (buf []byte, at int) {
	if cap(sc.arena)-len(sc.arena) < size {
		sc.arena = make([]byte, 0, max(size, min(2*cap(sc.arena), maxChunk), minChunk))
	}
	at = len(sc.arena)
	return sc.arena[at : at : at+size], at
}

// finishMsg makes the message of the output batch buf (the events idx),
// written at at in the arena for size bytes, of schema version.
func (e *Enricher) finishMsg(sc *wireScratch, subject, producer string, idx []int, at, size int, version uint32, buf []byte,
	msgs []*nats.Msg, sizes []int) ([]*nats.Msg, []int, error) {
	if len(buf) <= size { // written in place (else the size was wrong: reallocated)
		sc.arena = sc.arena[:at+len(buf)]
	}
	buf = buf[:len(buf):len(buf)]
	// The events were scanned (UTF-8 checked) and what an entry appends
	// is UTF-8 (store).
	msg, err := bus.NewEncodedMsg(subject, metrics.StageEnricher, producer, sc.wb.Seq, version, buf)
	if err != nil {
		e.em.publishErrors.Inc()
		return nil, nil, fmt.Errorf("enricher: %w", err)
	}
	return append(msgs, msg), append(sizes, len(idx)), nil
}

// appendBatchHeader appends the output batch's own fields.
func appendBatchHeader(buf []byte, wb *bus.WireBatch, version uint64, producer string) []byte {
	buf = protowire.AppendTag(buf, fieldBatchSchemaVersion, protowire.VarintType)
	buf = protowire.AppendVarint(buf, version)
	buf = appendStringField(buf, fieldBatchHost, wb.Host)
	buf = appendStringField(buf, fieldBatchStage, metrics.StageEnricher)
	if wb.Seq != 0 {
		buf = protowire.AppendTag(buf, fieldBatchSeq, protowire.VarintType)
		buf = protowire.AppendVarint(buf, wb.Seq)
	}
	return appendStringField(buf, fieldBatchProducerID, producer)
}

// headerSize is appendBatchHeader's size.
func headerSize(wb *bus.WireBatch, version uint64, producer string) int {
	n := 1 + protowire.SizeVarint(version) + stringFieldSize(wb.Host) +
		stringFieldSize(metrics.StageEnricher) + stringFieldSize(producer)
	if wb.Seq != 0 {
		n += 1 + protowire.SizeVarint(wb.Seq)
	}
	return n
}

// outputSize is the encoded size of the output batch of the events idx
// under producer.
func (e *Enricher) outputSize(sc *wireScratch, producer string, idx []int) int {
	return headerSize(&sc.wb, containv1.SchemaVersion, producer) + e.eventsSize(sc, idx)
}

// eventsSize is the encoded size of the events idx as batch fields.
func (e *Enricher) eventsSize(sc *wireScratch, idx []int) int {
	n := 0
	for _, i := range idx {
		n += 1 + protowire.SizeBytes(sc.body[i])
	}
	return n
}

// stringFieldSize is the size of a string field (numbered below 16)
// holding s; 0 for "".
func stringFieldSize(s string) int {
	if s == "" {
		return 0
	}
	return 1 + protowire.SizeBytes(len(s))
}

// payloadLimit is bus.MaxPayload, or what a test set.
func (e *Enricher) payloadLimit() int {
	if e.maxPayload > 0 {
		return e.maxPayload
	}
	return bus.MaxPayload
}
