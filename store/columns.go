package store

import (
	"slices"
	"strings"

	chcol "github.com/ClickHouse/clickhouse-go/v2/lib/column"
)

// A table's columns are declared once, each with its name and the function
// that reads its value from a row source R; the INSERT statement and the
// column buffers both come from that declaration, so they cannot disagree.
// Rows are buffered column by column and appended to the ClickHouse batch
// a column at a time (no reflection per row).

type colDef[R any] interface {
	colName() string
	// newBuf makes the column's buffer, its values held by the group of
	// its type and part in groups (added when there is none yet); with a
	// part (sparse), only the rows of that part (*parts) are buffered, the
	// others take the value of zero.
	newBuf(capacity int, groups *[]colGroup[R], env *bufEnv[R]) colBuf[R]
	// colPart is the part of the rows whose value the column holds
	// (tableDef.part); 0: every row's.
	colPart() uint8
}

type colBuf[R any] interface {
	add(r R) // the column's value of r alone (groupedRows false)
	values(lo, hi int) any
	// appendTo appends every buffered value to the driver's column.
	appendTo(c chcol.Interface) error
	// keep leaves the values whose keep[i] is set, in order.
	keep(keep []bool)
	reset()
	// own returns a column for the driver's block that encodes the
	// buffered values as drv would (owncols.go); nil when it cannot.
	own(drv chcol.Interface) chcol.Interface
}

// colGroup holds the values of a table's columns of one type: a row is
// added with one call per type, not per column (rowBuf.add was 14% of the
// fleet store's CPU with a dynamic call per column), and the columns'
// slices sit side by side.
type colGroup[R any] interface {
	add(r R)
	rowPart() uint8 // the part of the rows it holds; 0: every row
}

type typedGroup[R, T any] struct {
	part    uint8
	scratch []T // a sparse column's values of every row (typedBuf.dense)
	// keyed are the LowCardinality(String) columns whose value is the
	// row key's (tableDef.key: the container's name, image, digest and
	// profile): a row looks up its key once (byKey) and takes each
	// column's key from the key's entry when the value is the entry's,
	// instead of a lookup per column (a row's container differs from the
	// last row's on most rows, so the recent values miss).
	key     func(R) string
	keyed   []lcCol
	byKey   map[string]int32
	entries []keyedEntry
	gets    []func(R) T
	vals    [][]T
	// lcs are the group's LowCardinality(String) columns keyed as rows are
	// added (string groups only: typedBuf.keyOnAdd).
	lcs []lcCol
}

type lcCol struct {
	i int // of vals
	d *lcDict
}

// maxKeyed is how many columns of a group can be keyed by the row key.
const maxKeyed = 8

// keyedEntry is a row key's last value of each keyed column and its key in
// the column's dictionary of generation gen (0: none).
type keyedEntry struct {
	v   [maxKeyed]string
	k   [maxKeyed]uint32
	gen [maxKeyed]uint32
}

func (g *typedGroup[R, T]) rowPart() uint8 { return g.part }

func (g *typedGroup[R, T]) add(r R) {
	for i, get := range g.gets {
		g.vals[i] = append(g.vals[i], get(r))
	}
	if len(g.keyed) > 0 {
		g.addKeyed(r)
	}
	for _, l := range g.lcs {
		vs := g.vals[l.i]
		l.d.add(*any(&vs[len(vs)-1]).(*string))
	}
}

// addKeyed keys the row r just added in the keyed columns: from its row
// key's entry where the value is the entry's, else as any value (lcDict.add).
func (g *typedGroup[R, T]) addKeyed(r R) {
	key := g.key(r)
	idx, ok := g.byKey[key]
	if !ok {
		idx = int32(len(g.entries))
		g.entries = append(g.entries, keyedEntry{})
		g.byKey[key] = idx
	}
	e := &g.entries[idx]
	for j, l := range g.keyed {
		vs := g.vals[l.i]
		v := *any(&vs[len(vs)-1]).(*string)
		if d := l.d; e.gen[j] == d.gen && sameString(e.v[j], v) {
			d.keys = append(d.keys, e.k[j])
			continue
		}
		l.d.add(v)
		e.v[j], e.k[j], e.gen[j] = v, l.d.keys[len(l.d.keys)-1], l.d.gen
	}
}

// clearKeyed forgets every row key's entry (their strings may point
// into payloads).
func (g *typedGroup[R, T]) clearKeyed() {
	if len(g.entries) == 0 {
		return
	}
	clear(g.byKey)
	clear(g.entries)
	g.entries = g.entries[:0]
}

type typedCol[R, T any] struct {
	name  string
	get   func(R) T
	part  uint8
	byKey bool
}

func (c typedCol[R, T]) colName() string { return c.name }
func (c typedCol[R, T]) colPart() uint8  { return c.part }

// bufEnv is what a column's buffer takes of its row buffer.
type bufEnv[R any] struct {
	parts  *[]uint8 // every row's part
	sparse bool
	zero   R
	key    func(R) string // tableDef.key
}

func (c typedCol[R, T]) newBuf(capacity int, groups *[]colGroup[R], env *bufEnv[R]) colBuf[R] {
	part := c.part
	if !env.sparse {
		part = 0
	}
	var g *typedGroup[R, T]
	for _, x := range *groups {
		if tg, ok := x.(*typedGroup[R, T]); ok && tg.part == part {
			g = tg
			break
		}
	}
	if g == nil {
		g = &typedGroup[R, T]{part: part}
		*groups = append(*groups, g)
	}
	g.gets = append(g.gets, c.get)
	g.vals = append(g.vals, make([]T, 0, capacity))
	b := &typedBuf[R, T]{g: g, i: len(g.vals) - 1, part: part, parts: env.parts, byKey: c.byKey && env.key != nil}
	if b.byKey {
		g.key = env.key
	}
	if part != 0 {
		b.zero = c.get(env.zero)
	}
	return b
}

// typedBuf is one column's values: g.vals[i]. A sparse column (part
// not 0) holds the values of the rows of its part only (*parts: every
// row's part, in order); every other row's value is zero.
type typedBuf[R, T any] struct {
	g     *typedGroup[R, T]
	i     int
	part  uint8
	parts *[]uint8
	zero  T
	byKey bool // a LowCardinality column keyed by the row key (colByKey)

	boxes map[string]any // LowCardinality(String) only: boxed values
	lc    lowCardDict    // LowCardinality(String) only: the block's keys
	// owned is the column of the driver's block that encodes this
	// buffer (own); keys, for a LowCardinality(String) one, its block's
	// dictionary and keys, made as rows are added.
	owned chcol.Interface
	keys  *lcDict
}

func (b *typedBuf[R, T]) add(r R) {
	b.g.vals[b.i] = append(b.g.vals[b.i], b.g.gets[b.i](r))
	if b.keys != nil {
		vs := b.g.vals[b.i]
		b.keys.add(*any(&vs[len(vs)-1]).(*string))
	}
}
func (b *typedBuf[R, T]) values(lo, hi int) any { return b.dense()[lo:hi] }

// rows is how many rows the column holds.
func (b *typedBuf[R, T]) rows() int {
	if b.part != 0 {
		return len(*b.parts)
	}
	return len(b.g.vals[b.i])
}

// dense is the value of every row: a sparse column's expanded into its
// scratch (valid until the next call or reset).
func (b *typedBuf[R, T]) dense() []T {
	vals := b.g.vals[b.i]
	if b.part == 0 {
		return vals
	}
	parts := *b.parts
	out := slices.Grow(b.g.scratch[:0], len(parts))[:len(parts)]
	j := 0
	for i, p := range parts {
		if p == b.part {
			out[i] = vals[j]
			j++
		} else {
			out[i] = b.zero
		}
	}
	b.g.scratch = out
	return out
}

func (b *typedBuf[R, T]) reset() {
	vals := b.g.vals[b.i]
	clear(vals)
	b.g.vals[b.i] = vals[:0]
	clear(b.g.scratch) // drop the payloads its strings point into
	b.g.scratch = b.g.scratch[:0]
	if b.byKey {
		b.g.clearKeyed()
	}
	if b.keys != nil {
		b.keys.reset()
	}
}

// keep leaves the values of the rows whose keep[i] is set, in order
// (a sparse column's while *parts still holds every row's part).
func (b *typedBuf[R, T]) keep(keep []bool) {
	vals := b.g.vals[b.i]
	n := 0
	if b.part != 0 {
		j := 0
		for i, p := range *b.parts {
			if p == b.part {
				if keep[i] {
					vals[n] = vals[j]
					n++
				}
				j++
			}
		}
	} else {
		for i, v := range vals {
			if keep[i] {
				vals[n] = v
				n++
			}
		}
	}
	clear(vals[n:])
	b.g.vals[b.i] = vals[:n]
	if b.keys != nil {
		// The dictionary of the rows kept, as if the others had never
		// been added (rare: only rows the tables already hold are left
		// out).
		b.keys.reset()
		b.keys.catchUp(*any(&b.g.vals[b.i]).(*[]string))
	}
}

// keyOnAdd makes b (a string column) key its rows as they are added.
func (b *typedBuf[R, T]) keyOnAdd() {
	if b.keys != nil {
		return
	}
	b.keys = newLcDict()
	b.keys.catchUp(*any(&b.g.vals[b.i]).(*[]string)) // the rows added so far
	if b.byKey && len(b.g.keyed) < maxKeyed {
		if b.g.byKey == nil {
			b.g.byKey = map[string]int32{}
		}
		b.g.keyed = append(b.g.keyed, lcCol{i: b.i, d: b.keys})
		return
	}
	b.g.lcs = append(b.g.lcs, lcCol{i: b.i, d: b.keys})
}

func (b *typedBuf[R, T]) appendTo(c chcol.Interface) error {
	vals := b.dense()
	switch c := c.(type) {
	case *chcol.LowCardinality:
		if vals, ok := any(vals).([]string); ok {
			if lowCardFast {
				if done, err := b.lc.appendLowCard(c, vals); done {
					return err
				}
			}
			return b.appendInterned(c, vals)
		}
	case *chcol.Array:
		switch vals := any(vals).(type) {
		case [][]string:
			return appendArrays(c, vals)
		case [][]uint64:
			return appendArrays(c, vals)
		case [][]uint32:
			return appendArrays(c, vals)
		}
	}
	_, err := c.Append(vals)
	return err
}

// lowCardFast enables appendLowCard (benchmarks compare both paths).
var lowCardFast = true

// maxBoxes bounds a LowCardinality column's cache of boxed values.
const maxBoxes = 4096

// appendInterned appends a LowCardinality column row by row: the driver's
// Append would box every value through reflection (an allocation per row
// and column); a column has few distinct values, each boxed once here.
func (b *typedBuf[R, T]) appendInterned(c *chcol.LowCardinality, vals []string) error {
	if b.boxes == nil || len(b.boxes) > maxBoxes {
		b.boxes = map[string]any{}
	}
	for _, v := range vals {
		box, ok := b.boxes[v]
		if !ok {
			// A decoded string may alias its message's payload
			// (bus.ConsumerConfig.AliasPayload): the cache keeps a copy.
			v = strings.Clone(v)
			box = v
			b.boxes[v] = box
		}
		if err := c.AppendRow(box); err != nil {
			return err
		}
	}
	return nil
}

// appendArrays appends an Array column row by row: AppendRow of a typed
// slice takes the driver's path without reflection (Append goes through
// reflect.Value per row); empty arrays, most rows', share one box.
func appendArrays[E any](c *chcol.Array, vals [][]E) error {
	var empty any = []E{}
	for _, v := range vals {
		box := empty
		if len(v) > 0 {
			box = v
		}
		if err := c.AppendRow(box); err != nil {
			return err
		}
	}
	return nil
}

// col declares a column of type T read from R by get.
func col[R, T any](name string, get func(R) T) colDef[R] {
	return typedCol[R, T]{name: name, get: get}
}

// colByKey declares a column of type T read from R by get whose value
// is mostly the same for rows of the same row key (tableDef.key): as a
// LowCardinality column it is keyed through the row key (typedGroup.keyed).
func colByKey[R, T any](name string, get func(R) T) colDef[R] {
	return typedCol[R, T]{name: name, get: get, byKey: true}
}

// colIn declares a column of type T read from R by get, whose value is
// get(zero) for every row not of the given part (tableDef.part): only
// the rows of its part are read and buffered.
func colIn[R, T any](part uint8, name string, get func(R) T) colDef[R] {
	return typedCol[R, T]{name: name, get: get, part: part}
}

// tableDef is a table and its insertable columns.
type tableDef[R any] struct {
	name string
	cols []colDef[R]
	// part, when set, is a row's part (0: none): the columns declared
	// with colIn buffer only the rows of their part; zero is a row
	// whose columns all take their value for rows of another part.
	part func(R) uint8
	zero R
	// key, when set, is a row's key for the columns declared with
	// colByKey.
	key func(R) string
}

// insertSQL names every column, as ClickHouse 18.16 requires.
func (t *tableDef[R]) insertSQL() string {
	names := make([]string, len(t.cols))
	for i, c := range t.cols {
		names[i] = c.colName()
	}
	return "INSERT INTO " + t.name + " (" + strings.Join(names, ", ") + ")"
}

// rowBuf holds rows of one table, column by column.
type rowBuf[R any] struct {
	def    *tableDef[R]
	bufs   []colBuf[R]   // by column
	groups []colGroup[R] // the columns' values, by type and part
	// Sparse buffers (def.part set): every row's part, and the part of
	// each group's and column's rows (0: every row).
	parts          []uint8
	gparts, cparts []uint8
	sparse         bool
	n              int
	kept           []keptCol // the driver's column storage between INSERTs (appendBlock)
	owned          []bool    // the columns of the open INSERT that are the buffers' own (bindOwn)
}

func newRowBuf[R any](def *tableDef[R], capacity int) *rowBuf[R] {
	return newRowBufSparse(def, capacity, def.part != nil)
}

// newRowBufSparse makes a row buffer whose columns of a part (colIn)
// hold the rows of their part only (sparse), or every row.
func newRowBufSparse[R any](def *tableDef[R], capacity int, sparse bool) *rowBuf[R] {
	sparse = sparse && def.part != nil
	b := &rowBuf[R]{def: def, bufs: make([]colBuf[R], len(def.cols)), sparse: sparse}
	env := &bufEnv[R]{parts: &b.parts, sparse: sparse, zero: def.zero, key: def.key}
	for i, c := range def.cols {
		b.bufs[i] = c.newBuf(capacity, &b.groups, env)
		p := uint8(0)
		if sparse {
			p = c.colPart()
		}
		b.cparts = append(b.cparts, p)
	}
	for _, g := range b.groups {
		b.gparts = append(b.gparts, g.rowPart())
	}
	return b
}

func (b *rowBuf[R]) add(r R) {
	var p uint8
	if b.sparse {
		p = b.def.part(r)
		b.parts = append(b.parts, p)
	}
	if groupedRows {
		for i, g := range b.groups {
			if gp := b.gparts[i]; gp == 0 || gp == p {
				g.add(r)
			}
		}
	} else {
		for i, c := range b.bufs {
			if cp := b.cparts[i]; cp == 0 || cp == p {
				c.add(r)
			}
		}
	}
	b.n++
}

// groupedRows adds a row a type of columns at a time (colGroup); false,
// a column at a time (BenchmarkStoreCPU compares both).
var groupedRows = true

func (b *rowBuf[R]) len() int { return b.n }

// keep leaves the rows whose keep[i] is set, in order.
func (b *rowBuf[R]) keep(keep []bool) {
	for _, c := range b.bufs {
		c.keep(keep)
	}
	n := 0
	for i, k := range keep {
		if k {
			if b.sparse {
				b.parts[n] = b.parts[i]
			}
			n++
		}
	}
	if b.sparse {
		b.parts = b.parts[:n]
	}
	b.n = n
}

func (b *rowBuf[R]) reset() {
	for _, c := range b.bufs {
		c.reset()
	}
	b.parts = b.parts[:0]
	b.n = 0
}
