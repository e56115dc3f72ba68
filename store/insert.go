package store

import (
	"context"
	"fmt"
	"reflect"
	"sync"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/google/uuid"
	"google.golang.org/protobuf/proto"

	"github.com/containsec/contain/internal/bus"
	"github.com/containsec/contain/internal/metrics"
	"github.com/containsec/contain/schemas/containv1"
)

// The insert path (docs/design/021-store-inserts.md). A fetch fills for up
// to InsertMaxAge (or FetchMessages messages, or InsertMaxBytes bytes) and
// becomes one INSERT per table and per writer: its messages are split into
// at most InsertsInFlight groups, each converted and sent by its own
// goroutine on its own connection, so conversion and several INSERTs
// overlap. A writer streams its rows: every InsertBlockRows rows its column
// buffers are appended to the driver's block and sent (Flush), and both
// sets of buffers are reset and reused; the server squashes the blocks of
// one INSERT into one part. An INSERT is closed (committed) after
// BatchMaxRows rows or at the end of the group; the fetch is acknowledged
// when every INSERT of it has returned.

// fetchBufs are a consumer's reusable buffers: one rowSet per writer,
// the duplicate lookup's probes and answer, and the set of the fetch's
// ids.
type fetchBufs struct {
	sets   []*rowSet
	probes probes
	found  idSet
	counts []int // events per message of the fetch in hand
	// The fetch's ids by position (collect), the first event of each
	// message and the events whose id an earlier one has.
	order   []idPos
	offsets []int
	dup     []bool
	// markDups' bitmaps and set.
	slots, twice []uint64
	seen         idSet
	// How collect read each message, and the events of the scanned ones.
	wb      bus.WireBatch
	scanned []scannedMsg
	raws    [][]byte
	// refs[i] is raws[i]'s entry in dict, the scanned batches' container
	// dictionaries (-1: none): readWire reads the event's own fields,
	// the rest comes from its entry.
	refs []int32
	dict []bus.WireContainer
}

func newFetchBufs(cfg Config) *fetchBufs {
	f := &fetchBufs{sets: make([]*rowSet, cfg.InsertsInFlight), found: idSet{}}
	for i := range f.sets {
		f.sets[i] = newRowSetCap(cfg.StoreRaw, min(cfg.InsertBlockRows, 4096))
	}
	return f
}

// bufs returns fresh buffers for one caller of handle (tests, Insert).
func (s *Store) bufs() *fetchBufs { return newFetchBufs(s.cfg) }

// fetch is one fetch's messages for handle: batches decoded already
// (Insert, tests), or the bus's messages (Run), which the writers decode
// one at a time, convert into their column buffers and drop, so that a
// fetch is never held decoded at once (design 021).
type fetch struct {
	batches []*containv1.Batch
	msgs    messages
}

// messages is an encoded fetch (*bus.Messages): Batch decodes one
// message, nil when it is refused; Wire scans one (bus.ScanBatch), false
// when it must be decoded.
type messages interface {
	Len() int
	Data(i int) []byte
	Batch(i int) *containv1.Batch
	Wire(i int, wb *bus.WireBatch) bool
}

func decoded(batches []*containv1.Batch) *fetch { return &fetch{batches: batches} }

func (f *fetch) len() int {
	if f.msgs != nil {
		return f.msgs.Len()
	}
	return len(f.batches)
}

// batch is message i decoded; nil for a message the bus refused.
func (f *fetch) batch(i int) *containv1.Batch {
	if f.msgs != nil {
		return f.msgs.Batch(i)
	}
	return f.batches[i]
}

// groups splits a fetch whose messages hold counts[i] events into at most
// n runs [lo, hi) of whole messages with about the same number of events
// each, none smaller than minEvents (so that a small fetch stays one
// INSERT, one part).
func groups(counts []int, n, minEvents int) [][2]int {
	total := 0
	for _, c := range counts {
		total += c
	}
	n = max(1, min(n, total/max(minEvents, 1), len(counts)))
	if n == 1 {
		return [][2]int{{0, len(counts)}}
	}
	out := make([][2]int, 0, n)
	start, acc, per := 0, 0, (total+n-1)/n
	for i, c := range counts {
		acc += c
		if acc >= per && len(out) < n-1 {
			out = append(out, [2]int{start, i + 1})
			start, acc = i+1, 0
		}
	}
	if start < len(counts) {
		out = append(out, [2]int{start, len(counts)})
	}
	return out
}

// tableWriter streams one table's rows into INSERTs of at most maxRows
// rows, sent in blocks of blockRows.
type tableWriter[R any] struct {
	conn               driver.Conn
	node               *node // write=local: the cluster node of conn
	buf                *rowBuf[R]
	batch              driver.Batch
	inBatch            int // rows sent in the open INSERT
	blockRows, maxRows int
	rows               int // rows committed
	// lookup, when set, is the fetch's duplicate lookup: the first block
	// waits for it and leaves out the rows it found (dups counts them);
	// ids are the buffered rows' ids.
	lookup *pendingLookup
	ids    []uuid.UUID
	dups   int
	owned  []bool // the open INSERT's columns that are buf's own (bindOwn)
}

// pendingLookup is a fetch's duplicate lookup (design 017), running while
// the writers decode and convert its first rows (design 021).
type pendingLookup struct {
	done chan struct{}
	have idSet
	err  error
}

// wait returns the ids the tables already hold (nil p: none).
func (p *pendingLookup) wait(ctx context.Context) (idSet, error) {
	if p == nil {
		return nil, nil
	}
	select {
	case <-p.done:
		return p.have, p.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// add buffers r (row id id) and sends a block when the buffer is full.
func (w *tableWriter[R]) add(ctx context.Context, r R, id uuid.UUID) error {
	w.buf.add(r)
	w.ids = append(w.ids, id)
	if w.buf.len() >= w.blockRows || w.inBatch+w.buf.len() >= w.maxRows {
		return w.flush(ctx, false)
	}
	return nil
}

// dropExisting leaves out of the buffer the rows the lookup found.
func (w *tableWriter[R]) dropExisting(ctx context.Context) error {
	have, err := w.lookup.wait(ctx)
	if err != nil || len(have) == 0 {
		return err
	}
	keep := make([]bool, len(w.ids))
	dropped := 0
	for i, id := range w.ids {
		_, found := have[id]
		keep[i] = !found
		if found {
			dropped++
		}
	}
	if dropped > 0 {
		w.buf.keep(keep)
		w.dups += dropped
	}
	return nil
}

// flush sends the buffered rows as one block of the open INSERT (opening
// it if needed); with last, or at maxRows, it commits the INSERT.
func (w *tableWriter[R]) flush(ctx context.Context, last bool) error {
	if w.buf.len() > 0 {
		if err := w.dropExisting(ctx); err != nil {
			w.abort()
			return err
		}
	}
	w.ids = w.ids[:0]
	n := w.buf.len()
	if n == 0 && w.batch == nil {
		return nil
	}
	if w.batch == nil {
		b, err := w.conn.PrepareBatch(ctx, w.buf.def.insertSQL())
		if err != nil {
			return err
		}
		w.batch = b
		// The block's columns the store's buffers encode themselves
		// (owncols.go); the others take a copy of the rows every block.
		w.owned = bindOwn(b, w.buf)
	}
	if err := appendBlock(w.batch, w.buf, true, w.owned); err != nil {
		w.abort()
		return err
	}
	w.inBatch += n
	if last || w.inBatch >= w.maxRows {
		err := w.batch.Send()
		w.batch, w.owned = nil, nil
		w.buf.reset() // after the send: the block encodes the buffers
		if err == nil {
			w.rows += w.inBatch
		}
		w.inBatch = 0
		return err
	}
	if err := w.batch.Flush(); err != nil {
		w.abort()
		return err
	}
	w.buf.reset()
	return nil
}

// appendBlock hands buf's rows to the driver's block of batch, but for
// the columns that are buf's own (owned[i], bindOwn); with keep, the
// driver's columns use and leave the storage kept in buf from its earlier
// INSERTs (keptCol).
func appendBlock[R any](batch driver.Batch, buf *rowBuf[R], keep bool, owned []bool) error {
	cols := batch.Columns()
	var kept []keptCol
	if keep {
		if buf.kept == nil {
			buf.kept = make([]keptCol, len(buf.bufs))
		}
		kept = buf.kept
	}
	for i, c := range buf.bufs {
		if owned != nil && owned[i] {
			continue
		}
		var sl []reflect.Value
		if kept != nil {
			sl = kept[i].lend(cols[i])
		}
		if err := c.appendTo(cols[i]); err != nil {
			return fmt.Errorf("column %s: %w", buf.def.cols[i].colName(), err)
		}
		if kept != nil {
			kept[i].keep(sl)
		}
	}
	return nil
}

// abort drops the open INSERT: the server commits nothing of it (an
// INSERT below min_insert_block_size_rows is written at its end only).
func (w *tableWriter[R]) abort() {
	if w.batch != nil {
		_ = w.batch.Abort()
		w.batch, w.owned = nil, nil
	}
	w.inBatch = 0
	w.buf.reset()
	w.ids = w.ids[:0]
}

// writeGroup converts and inserts messages [lo, hi) of a fetch (read by
// fb.collect) through rs; it returns the commits among their events (inserted after).
func (s *Store) writeGroup(ctx context.Context, rs *rowSet, f *fetch, fb *fetchBufs, lo, hi int, now time.Time, lk *pendingLookup) (rows, dups int, commits []CommitRow, err error) {
	ws := s.writers(rs) // events, alerts, actions (per shard with write=local)
	for _, w := range ws {
		w.lookup = lk
	}
	defer func() {
		for _, w := range ws {
			dups += w.dups
			w.abort() // no-op after success
		}
		rs.arena.reset() // keep nothing of this fetch's payloads
	}()
	// put adds row r (of decoded event ev; nil: read from the wire, an
	// events row; at position pos of the fetch) to its table's writer.
	put := func(r *eventRow, ev *containv1.Event, pos int) error {
		if fb.dup[pos] {
			dups++
			return nil
		}
		t := s.target(r.f.host, r.f.containerID)
		switch ev.GetBody().(type) {
		case *containv1.Event_Alert:
			t++
		case *containv1.Event_Action:
			t += 2
		}
		w := ws[t]
		if err := w.add(ctx, r, r.id); err != nil {
			s.writeFailed(ctx, w)
			return fmt.Errorf("store: inserting into %s at clickhouse %s: %w", w.buf.def.name, s.writerAddr(w), err)
		}
		return nil
	}
	// commit notes a decoded event's commit (inserted after).
	commit := func(ev *containv1.Event, bi *batchInfo) {
		if c, ok := CommitRowOf(ev); ok {
			if c.Host == "" {
				c.Host = bi.host
			}
			commits = append(commits, c)
		}
	}
	rs.arena.reset()
	r := &rs.scratch
	for m := lo; m < hi; m++ {
		if sc := &fb.scanned[m]; sc.wire {
			// Accepted as Decode would accept it (bus.ScanBatch, in
			// collect): rows from the wire, an event readWire leaves
			// decoded.
			for i, raw := range fb.raws[sc.lo:sc.hi] {
				var ev *containv1.Event
				ctr := fb.container(sc.lo + i)
				if !rs.keepRaw && r.fillWire(&sc.bi, i, raw, now, &rs.arena) {
					r.f.expand(ctr)
				} else {
					if ev, err = decodeEvent(raw); err != nil {
						return rows, dups, nil, fmt.Errorf("store: event %d of a scanned batch: %w", i, err)
					}
					if ctr != nil {
						ev.ExpandFrom(&containv1.ContainerRef{ContainerId: ctr.ContainerID, ContainerName: ctr.ContainerName,
							ImageRef: ctr.ImageRef, ImageDigest: ctr.ImageDigest, ProfileRef: ctr.ProfileRef})
					}
					commit(ev, &sc.bi)
					r.fill(&sc.bi, i, ev, now, rs.keepRaw)
				}
				if err := put(r, ev, fb.offsets[m]+i); err != nil {
					return rows, dups, nil, err
				}
			}
			continue
		}
		b := f.batch(m) // decoded, or nil when refused
		bi := infoOf(b)
		for i, ev := range b.GetEvents() {
			if ev == nil {
				continue
			}
			commit(ev, &bi)
			r.fill(&bi, i, ev, now, rs.keepRaw)
			if err := put(r, ev, fb.offsets[m]+i); err != nil {
				return rows, dups, nil, err
			}
		}
	}
	rs.scratch = eventRow{} // keep nothing of the last batch
	// The rows' repeated values (argv, syscall args and sequences) are
	// views of rs.arena until their writer's flush has copied them into
	// the driver's columns: the arena is reset after it (deferred above).
	for _, w := range ws {
		if err := w.flush(ctx, true); err != nil {
			s.writeFailed(ctx, w)
			return rows, dups, nil, fmt.Errorf("store: inserting into %s at clickhouse %s: %w", w.buf.def.name, s.writerAddr(w), err)
		}
		rows += w.rows
	}
	return rows, dups, commits, nil
}

// handle inserts the rows of one fetch. An error makes bus.Consume
// redeliver the fetch's messages (one by one); rows already inserted are
// then skipped by the lookup.
func (s *Store) handle(ctx context.Context, fb *fetchBufs, f *fetch, m *metrics.Metrics) error {
	if !s.ready.Load() {
		if err := s.Migrate(ctx); err != nil {
			m.Errors.WithLabelValues(metrics.StageStore, "migrate").Inc()
			if isUnavailable(err) {
				s.markDown(err, "setting up the schema")
			}
			return err
		}
	}
	now := time.Now()
	ictx, cancel := context.WithTimeout(ctx, s.cfg.InsertTimeout)
	defer cancel()
	fb.collect(f, now)
	// The lookup runs while the writers decode and convert; each waits
	// for it before its first block.
	var lk *pendingLookup
	if !s.noLookup {
		lk = &pendingLookup{done: make(chan struct{})}
		go func() {
			defer close(lk.done)
			lk.have, lk.err = s.existing(ictx, fb)
		}()
	}
	gs := groups(fb.counts, len(fb.sets), s.cfg.InsertBlockRows)
	var (
		wg         sync.WaitGroup
		mu         sync.Mutex
		rows, dups int
		commits    []CommitRow
		firstErr   error
	)
	for i, g := range gs {
		wg.Go(func() {
			r, d, c, err := s.writeGroup(ictx, fb.sets[i], f, fb, g[0], g[1], now, lk)
			mu.Lock()
			defer mu.Unlock()
			rows, dups = rows+r, dups+d
			commits = append(commits, c...)
			if err != nil && firstErr == nil {
				firstErr = err
				cancel() // the other writers abort too: the fetch is redelivered
			}
		})
	}
	wg.Wait()
	fb.release()
	if lk != nil {
		<-lk.done // it reads fb's probes, which the next fetch reuses
		if lk.err != nil && firstErr == nil {
			firstErr = lk.err
		}
	}
	if dups > 0 {
		m.Dropped.WithLabelValues(metrics.StageStore, reasonDuplicate).Add(float64(dups))
	}
	if err := firstErr; err != nil {
		m.Errors.WithLabelValues(metrics.StageStore, "insert").Inc()
		if isUnavailable(err) {
			s.markDown(err, "inserting")
		}
		return err
	}
	if err := s.insertCommits(ictx, commits); err != nil {
		m.Errors.WithLabelValues(metrics.StageStore, "insert").Inc()
		if isUnavailable(err) {
			s.markDown(err, "inserting into commits")
		}
		return err
	}
	s.markUp()
	m.EventsOut.WithLabelValues(metrics.StageStore).Add(float64(rows))
	return nil
}

// decodeEvent decodes an event of a batch bus.ScanBatch accepted (its
// strings are UTF-8, its fields of their schema's wire types), its strings
// and bytes pointing into raw as with bus.DecodeAliased.
func decodeEvent(raw []byte) (*containv1.Event, error) {
	ev := &containv1.Event{}
	if err := ev.UnmarshalVTUnsafe(raw); err != nil {
		ev.Reset()
		if err := proto.Unmarshal(raw, ev); err != nil {
			return nil, err
		}
	}
	return ev, nil
}
