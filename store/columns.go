package store

import (
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
	// its type in groups (added when there is none yet).
	newBuf(capacity int, groups *[]colGroup[R]) colBuf[R]
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
}

type typedGroup[R, T any] struct {
	gets []func(R) T
	vals [][]T
	// lcs are the group's LowCardinality(String) columns keyed as rows are
	// added (string groups only: typedBuf.keyOnAdd).
	lcs []lcCol
}

type lcCol struct {
	i int // of vals
	d *lcDict
}

func (g *typedGroup[R, T]) add(r R) {
	for i, get := range g.gets {
		g.vals[i] = append(g.vals[i], get(r))
	}
	for _, l := range g.lcs {
		vs := g.vals[l.i]
		l.d.add(*any(&vs[len(vs)-1]).(*string))
	}
}

type typedCol[R, T any] struct {
	name string
	get  func(R) T
}

func (c typedCol[R, T]) colName() string { return c.name }

func (c typedCol[R, T]) newBuf(capacity int, groups *[]colGroup[R]) colBuf[R] {
	var g *typedGroup[R, T]
	for _, x := range *groups {
		if tg, ok := x.(*typedGroup[R, T]); ok {
			g = tg
			break
		}
	}
	if g == nil {
		g = &typedGroup[R, T]{}
		*groups = append(*groups, g)
	}
	g.gets = append(g.gets, c.get)
	g.vals = append(g.vals, make([]T, 0, capacity))
	return &typedBuf[R, T]{g: g, i: len(g.vals) - 1}
}

// typedBuf is one column's values: g.vals[i].
type typedBuf[R, T any] struct {
	g     *typedGroup[R, T]
	i     int
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
func (b *typedBuf[R, T]) values(lo, hi int) any { return b.g.vals[b.i][lo:hi] }
func (b *typedBuf[R, T]) reset() {
	vals := b.g.vals[b.i]
	clear(vals)
	b.g.vals[b.i] = vals[:0]
	if b.keys != nil {
		b.keys.reset()
	}
}
func (b *typedBuf[R, T]) keep(keep []bool) {
	vals := b.g.vals[b.i]
	n := 0
	for i, v := range vals {
		if keep[i] {
			vals[n] = v
			n++
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
	b.g.lcs = append(b.g.lcs, lcCol{i: b.i, d: b.keys})
}

func (b *typedBuf[R, T]) appendTo(c chcol.Interface) error {
	vals := b.g.vals[b.i]
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

// tableDef is a table and its insertable columns.
type tableDef[R any] struct {
	name string
	cols []colDef[R]
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
	groups []colGroup[R] // the columns' values, by type
	n      int
	kept   []keptCol // the driver's column storage between INSERTs (appendBlock)
	owned  []bool    // the columns of the open INSERT that are the buffers' own (bindOwn)
}

func newRowBuf[R any](def *tableDef[R], capacity int) *rowBuf[R] {
	b := &rowBuf[R]{def: def, bufs: make([]colBuf[R], len(def.cols))}
	for i, c := range def.cols {
		b.bufs[i] = c.newBuf(capacity, &b.groups)
	}
	return b
}

func (b *rowBuf[R]) add(r R) {
	if groupedRows {
		for _, g := range b.groups {
			g.add(r)
		}
	} else {
		for _, c := range b.bufs {
			c.add(r)
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
	for _, k := range keep {
		if k {
			n++
		}
	}
	b.n = n
}

func (b *rowBuf[R]) reset() {
	for _, c := range b.bufs {
		c.reset()
	}
	b.n = 0
}
