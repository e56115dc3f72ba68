package store

import (
	"context"
	"encoding/binary"
	"fmt"
	"math/bits"
	"slices"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/ext"
	"github.com/google/uuid"

	"github.com/containsec/contain/internal/bus"
	"github.com/containsec/contain/schemas/containv1"
)

// Idempotent inserts (docs/design/017-forensics.md): before a fetch is
// inserted, the store asks each table which of the fetch's ids it already
// holds, within the fetch's time range and sort-key prefixes, and skips
// those rows (counted as contain_dropped_total{stage="store",
// reason="duplicate"}); an id seen twice within one fetch is kept once.
// ReplacingMergeTree stays as the backstop for the one race the check
// cannot close (two stores inserting the same batch at the same moment).

// idSet is a set of row ids.
type idSet map[uuid.UUID]struct{}

// probe collects what one table's lookup needs: the ids, their time range
// and the values of the sort key's first column. Its buffers are reused
// from fetch to fetch.
type probe struct {
	ids      []uuid.UUID
	min, max time.Time
	prefixes map[string]struct{}
	// last is the last prefix noted by prefixAlias (events of a
	// container come in runs: no map lookup for them); it may point into
	// a payload until collect ends (forget).
	last    string
	hasLast bool
}

func (p *probe) reset() {
	p.ids = p.ids[:0]
	clear(p.prefixes)
	p.forget()
}

// forget drops last.
func (p *probe) forget() { p.last, p.hasLast = "", false }

func (p *probe) add(id uuid.UUID, ts time.Time) {
	if len(p.ids) == 0 || ts.Before(p.min) {
		p.min = ts
	}
	if len(p.ids) == 0 || ts.After(p.max) {
		p.max = ts
	}
	p.ids = append(p.ids, id)
}

// prefixAlias notes a sort key prefix that may point into a message's
// payload: the set keeps a copy (no allocation when already known).
func (p *probe) prefixAlias(v string) {
	if p.hasLast && v == p.last {
		return
	}
	p.last, p.hasLast = v, true
	if p.prefixes == nil {
		p.prefixes = map[string]struct{}{}
	}
	if _, ok := p.prefixes[v]; !ok {
		p.prefixes[strings.Clone(v)] = struct{}{}
	}
}

func (p *probe) prefix(v string) {
	if p.prefixes == nil {
		p.prefixes = map[string]struct{}{}
	}
	p.prefixes[v] = struct{}{}
}

// lookup names a table's id column and the first column of its sort key.
type lookup struct {
	table, idCol, prefixCol string
}

var (
	eventsLookup  = lookup{"events", "event_id", "container_id"}
	alertsLookup  = lookup{"alerts", "alert_id", "image_ref"}
	actionsLookup = lookup{"actions", "action_id", "container_id"}
	lookups       = [...]lookup{eventsLookup, alertsLookup, actionsLookup}
)

// lookupOf routes an event like rowSet.add does.
func lookupOf(ev *containv1.Event) (lookup, string) {
	switch ev.GetBody().(type) {
	case *containv1.Event_Alert:
		return alertsLookup, ev.GetImageRef()
	case *containv1.Event_Action:
		return actionsLookup, ev.GetContainerId()
	}
	return eventsLookup, ev.GetContainerId()
}

// probes are the three tables' probes of one fetch.
type probes [len(lookups)]probe

func (ps *probes) of(l lookup) *probe {
	switch l {
	case alertsLookup:
		return &ps[1]
	case actionsLookup:
		return &ps[2]
	}
	return &ps[0]
}

// addDecoded adds the events of a decoded batch.
func (ps *probes) addDecoded(b *containv1.Batch, now time.Time) {
	ps.addDecodedAt(b, now, nil, 0)
}

// addDecodedAt is addDecoded noting each event's id and position in the
// fetch (base + its index in the batch) in order.
func (ps *probes) addDecodedAt(b *containv1.Batch, now time.Time, order *[]idPos, base int) {
	for i, ev := range b.GetEvents() {
		if ev == nil {
			continue
		}
		l, prefix := lookupOf(ev)
		p := ps.of(l)
		ts, _ := wallTime(ev.GetWallNs(), now)
		id := eventID(b, i, ev)
		p.add(id, ts)
		p.prefix(prefix)
		if order != nil {
			*order = append(*order, idPos{id: id, pos: int32(base + i)})
		}
	}
}

// idPos is an event's row id and position in its fetch.
type idPos struct {
	id  uuid.UUID
	pos int32
}

// markDups sets fb.dup[k] for every event k of the fetch (n events, ids
// in fb.order by position) whose id an earlier event of the fetch has:
// an id seen twice within a fetch makes one row, the first. A set of
// every id (a map lookup per row, a cache miss each: 6% of the fleet
// store's CPU, as was sorting the ids) is needed only for the ids whose
// hash slot another id took: a first pass sets a bit per id in a bitmap
// of ≥ 32 bits per id (in cache), a second looks up in a set only the
// ids of the slots that were hit twice (~3% of them; none when every
// slot was hit once).
func (fb *fetchBufs) markDups(n int) {
	fb.dup = slices.Grow(fb.dup[:0], n)[:n]
	clear(fb.dup)
	width := max(16, bits.Len(uint(n))+5)
	words := 1 << (width - 6)
	fb.slots = slices.Grow(fb.slots[:0], words)[:words]
	clear(fb.slots)
	shift := 64 - width
	slot := func(id *uuid.UUID) (int, uint64) {
		h := (binary.LittleEndian.Uint64(id[:8]) ^ binary.LittleEndian.Uint64(id[8:])) * 0x9e3779b97f4a7c15 >> shift
		return int(h >> 6), 1 << (h & 63)
	}
	hit := false
	for i := range fb.order {
		w, m := slot(&fb.order[i].id)
		if fb.slots[w]&m != 0 {
			hit = true
		}
		fb.slots[w] |= m
	}
	if !hit {
		return
	}
	// Mark the slots hit twice, then look up their ids in order.
	twice := fb.twice
	twice = slices.Grow(twice[:0], words)[:words]
	clear(twice)
	clear(fb.slots)
	for i := range fb.order {
		w, m := slot(&fb.order[i].id)
		if fb.slots[w]&m != 0 {
			twice[w] |= m
		}
		fb.slots[w] |= m
	}
	if fb.seen == nil {
		fb.seen = idSet{}
	}
	clear(fb.seen)
	for i := range fb.order {
		e := &fb.order[i]
		if w, m := slot(&e.id); twice[w]&m != 0 {
			if _, ok := fb.seen[e.id]; ok {
				fb.dup[e.pos] = true
			} else {
				fb.seen[e.id] = struct{}{}
			}
		}
	}
	fb.twice = twice
}

// collect reads what the lookup needs of every message of f into fb's
// probes, counts each message's events (fb.counts) and marks the
// events whose id an earlier one of the fetch has (fb.dup, by position
// in the fetch: fb.offsets[m] + index in message m). An encoded
// message is scanned (Messages.Wire: bus.ScanBatch, which accepts only
// what decoding accepts) and its events' bytes kept for the writers
// (fb.scanned, fb.raws), or decoded (Messages.Batch, nil when refused)
// when the scan leaves it to the decoder. now must be the time the rows
// are built with (it stands in for a missing wall time).
func (fb *fetchBufs) collect(f *fetch, now time.Time) {
	for i := range fb.probes {
		fb.probes[i].reset()
	}
	fb.counts = fb.counts[:0]
	fb.release()
	fb.order, fb.offsets = fb.order[:0], fb.offsets[:0]
	n := 0 // events so far
	for i := range f.len() {
		fb.offsets = append(fb.offsets, n)
		if f.msgs == nil || !f.msgs.Wire(i, &fb.wb) {
			b := f.batch(i)
			fb.probes.addDecodedAt(b, now, &fb.order, n)
			fb.counts = append(fb.counts, len(b.GetEvents()))
			fb.scanned = append(fb.scanned, scannedMsg{})
			n += len(b.GetEvents())
			continue
		}
		wb := &fb.wb
		sc := scannedMsg{wire: true, lo: len(fb.raws),
			bi: batchInfo{host: wb.Host, stage: wb.Stage, producer: wb.ProducerID, seq: wb.Seq}}
		for j := range wb.Events {
			e := &wb.Events[j]
			l, prefix := eventsLookup, e.ContainerID
			switch e.Body {
			case evAlert:
				l, prefix = alertsLookup, e.ImageRef
			case evAction:
				l = actionsLookup
			}
			p := fb.probes.of(l)
			ts, _ := wallTime(e.WallNs, now)
			id := rowID(&sc.bi, j, e.ID)
			p.add(id, ts)
			p.prefixAlias(prefix)
			fb.order = append(fb.order, idPos{id: id, pos: int32(n + j)})
			fb.raws = append(fb.raws, e.Raw)
			ref := int32(-1)
			if e.ContainerRef != 0 { // in range: ScanBatch checked
				ref = int32(len(fb.dict)) + int32(e.ContainerRef) - 1
			}
			fb.refs = append(fb.refs, ref)
		}
		fb.dict = append(fb.dict, wb.Containers...)
		sc.hi = len(fb.raws)
		fb.scanned = append(fb.scanned, sc)
		fb.counts = append(fb.counts, len(wb.Events))
		n += len(wb.Events)
	}
	fb.markDups(n)
	for i := range fb.probes {
		fb.probes[i].forget() // the payloads are fb.raws'
	}
	clear(fb.wb.Events[:cap(fb.wb.Events)])
	clear(fb.wb.Containers[:cap(fb.wb.Containers)])
	fb.wb = bus.WireBatch{Events: fb.wb.Events[:0], Containers: fb.wb.Containers[:0]}
}

// container is the dictionary entry of scanned event i (fb.raws[i]), nil
// when it refers to none.
func (fb *fetchBufs) container(i int) *bus.WireContainer {
	if r := fb.refs[i]; r >= 0 {
		return &fb.dict[r]
	}
	return nil
}

// release drops what collect kept of the fetch's payloads (the events'
// bytes, the batches' strings), so that an idle consumer holds none.
func (fb *fetchBufs) release() {
	clear(fb.raws)
	fb.raws = fb.raws[:0]
	fb.refs = fb.refs[:0]
	clear(fb.dict)
	fb.dict = fb.dict[:0]
	clear(fb.scanned)
	fb.scanned = fb.scanned[:0]
}

// scannedMsg is how collect read message i of a fetch: scanned (wire),
// its events fb.raws[lo:hi] of the batch bi; or not (decoded).
type scannedMsg struct {
	wire   bool
	lo, hi int
	bi     batchInfo
}

// existing returns the ids of the fetch's rows that the tables already
// hold (fb.collect first).
func (s *Store) existing(ctx context.Context, fb *fetchBufs) (idSet, error) {
	found := fb.found
	clear(found)
	for i, l := range lookups {
		p := &fb.probes[i]
		if len(p.ids) == 0 {
			continue
		}
		if err := s.lookupIDs(ctx, l, p, found); err != nil {
			return nil, err
		}
	}
	return found, nil
}

// lookupIDs adds to found the ids of p that l's table holds. The query
// reads only the partitions of [min, max] and, through the sort key's
// first column, the granules of the fetch's containers (or images). Ids
// and containers travel as external tables (native blocks sent with the
// query, as old as the native protocol), not as literals the server must
// parse: a fetch from thousands of containers named one by one passed the
// server's max_query_size (256 KiB: ~3,800 container ids) and failed.
// ClickHouse 18.16 selects granules by the primary key for IN (SELECT
// ...) from an external table as for a literal list (system.query_log:
// 172,032 rows read of 2M for 20 of 1,000 containers either way, the
// whole 1,048,576-row partition without the container condition), so a
// fetch spanning many containers still reads only their granules of its
// seconds, not its whole day partitions.
func (s *Store) lookupIDs(ctx context.Context, l lookup, p *probe, found idSet) error {
	ids, err := ext.NewTable("fetch_ids", ext.Column("id", "UUID"))
	if err != nil {
		return fmt.Errorf("store: looking up %s ids: %w", l.table, err)
	}
	if !setVals(ids.Block(), p.ids) { // the ids as they are (owncols.go)
		for _, id := range p.ids {
			if err := ids.Append(id); err != nil {
				return fmt.Errorf("store: looking up %s ids: %w", l.table, err)
			}
		}
	}
	prefixes, err := ext.NewTable("fetch_prefixes", ext.Column("p", "String"))
	if err != nil {
		return fmt.Errorf("store: looking up %s ids: %w", l.table, err)
	}
	for v := range p.prefixes {
		if err := prefixes.Append(v); err != nil {
			return fmt.Errorf("store: looking up %s ids: %w", l.table, err)
		}
	}
	q := fmt.Sprintf("SELECT %s FROM %s WHERE %s IN (SELECT p FROM fetch_prefixes) AND ts BETWEEN toDateTime(%d) AND toDateTime(%d) AND %s IN (SELECT id FROM fetch_ids)",
		l.idCol, l.table, l.prefixCol, p.min.Unix(), p.max.Unix(), l.idCol)
	rows, err := s.conn.Query(clickhouse.Context(ctx, clickhouse.WithExternalTable(ids, prefixes)), q)
	if err != nil {
		return fmt.Errorf("store: looking up %s ids at clickhouse %s: %w", l.table, s.addr, err)
	}
	defer rows.Close()
	for rows.Next() {
		var id uuid.UUID
		if err := rows.Scan(&id); err != nil {
			return fmt.Errorf("store: looking up %s ids: %w", l.table, err)
		}
		found[id] = struct{}{}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("store: looking up %s ids: %w", l.table, err)
	}
	return nil
}

// quote makes s a ClickHouse string literal.
func quote(s string) string {
	return "'" + quoter.Replace(s) + "'"
}

// quoter escapes a string literal's backslashes and quotes (built once:
// building a Replacer per call was 7% of the fleet store's CPU).
var quoter = strings.NewReplacer(`\`, `\\`, `'`, `\'`)
