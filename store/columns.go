package store

import "strings"

// A table's columns are declared once, each with its name and the function
// that reads its value from a row source R; the INSERT statement and the
// column buffers both come from that declaration, so they cannot disagree.
// Rows are buffered column by column and appended to the ClickHouse batch
// a column at a time (no reflection per row).

type colDef[R any] interface {
	colName() string
	newBuf(capacity int) colBuf[R]
}

type colBuf[R any] interface {
	add(r R)
	values(lo, hi int) any
	reset()
}

type typedCol[R, T any] struct {
	name string
	get  func(R) T
}

func (c typedCol[R, T]) colName() string { return c.name }

func (c typedCol[R, T]) newBuf(capacity int) colBuf[R] {
	return &typedBuf[R, T]{get: c.get, vals: make([]T, 0, capacity)}
}

type typedBuf[R, T any] struct {
	get  func(R) T
	vals []T
}

func (b *typedBuf[R, T]) add(r R)               { b.vals = append(b.vals, b.get(r)) }
func (b *typedBuf[R, T]) values(lo, hi int) any { return b.vals[lo:hi] }
func (b *typedBuf[R, T]) reset()                { clear(b.vals); b.vals = b.vals[:0] }

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
	def  *tableDef[R]
	bufs []colBuf[R]
	n    int
}

func newRowBuf[R any](def *tableDef[R], capacity int) *rowBuf[R] {
	b := &rowBuf[R]{def: def, bufs: make([]colBuf[R], len(def.cols))}
	for i, c := range def.cols {
		b.bufs[i] = c.newBuf(capacity)
	}
	return b
}

func (b *rowBuf[R]) add(r R) {
	for _, c := range b.bufs {
		c.add(r)
	}
	b.n++
}

func (b *rowBuf[R]) len() int { return b.n }

func (b *rowBuf[R]) reset() {
	for _, c := range b.bufs {
		c.reset()
	}
	b.n = 0
}
