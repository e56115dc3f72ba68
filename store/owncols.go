package store

import (
	"encoding/binary"
	"errors"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
	"unsafe"

	chproto "github.com/ClickHouse/ch-go/proto"
	chcol "github.com/ClickHouse/clickhouse-go/v2/lib/column"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	lproto "github.com/ClickHouse/clickhouse-go/v2/lib/proto"
	"github.com/google/uuid"
)

// The store's column buffers are the driver's columns (design 021,
// decision 23). A writer's rows were buffered in the store's column
// buffers and, at every block, copied into clickhouse-go's columns
// (appendBlock: every string copied out of the payload into a ColStr,
// every LowCardinality column filled by a second pass over its values),
// which the driver then encoded into its connection buffer: two copies of
// every value, and the copy into the driver was ~35% of the fleet
// store's CPU. Now the columns of the driver's block are replaced, when
// an INSERT is prepared, by columns that encode the store's buffers
// (ownCol): the driver sends the block as before (header, column names
// and types as the server gave them, compression), and each column writes
// its values from the store's buffer straight into the connection buffer,
// in the encoding the driver's column of that type writes (the
// fixed-size types through ch-go's own column types, strings, arrays,
// DateTime, FixedString and LowCardinality(String) as the driver encodes
// them; TestOwnColumnsEncodeAsDriver compares every column of the three
// tables byte for byte). Rows the duplicate lookup drops are dropped from
// the store's buffers before the block is sent, as before (rowBuf.keep).
//
// The block is unexported in the driver's batch: it is reached through
// the field's offset, checked by name and type (blockOf). A driver whose
// batch differs, or a column of a type ownCol does not encode, takes the
// copy (appendBlock) as before, column by column; TestOwnColumnsEncodeAsDriver
// fails then, so a driver bump does not lose the path unnoticed.

// ownColumns enables the store's own columns (benchmarks compare both
// paths).
var ownColumns = true

// batchLayout is where a driver batch type keeps its block.
type batchLayout struct {
	typ reflect.Type
	off uintptr
	ok  bool
}

var lastBatchLayout atomic.Pointer[batchLayout]

// blockOf returns the block batch sends; nil when batch is not a
// clickhouse-go batch of the layout this file knows.
func blockOf(batch driver.Batch) *lproto.Block {
	v := reflect.ValueOf(batch)
	if v.Kind() != reflect.Pointer || v.IsNil() {
		return nil
	}
	t := v.Type()
	l := lastBatchLayout.Load()
	if l == nil || l.typ != t {
		l = &batchLayout{typ: t}
		if t.Elem().Kind() == reflect.Struct && t.Elem().PkgPath() == "github.com/ClickHouse/clickhouse-go/v2" {
			if f, ok := t.Elem().FieldByName("block"); ok && len(f.Index) == 1 && f.Type == reflect.TypeFor[*lproto.Block]() {
				l.off, l.ok = f.Offset, true
			}
		}
		lastBatchLayout.Store(l)
	}
	if !l.ok {
		return nil
	}
	return *(**lproto.Block)(unsafe.Add(v.UnsafePointer(), l.off))
}

// bindOwn replaces the columns of batch's block that buf can encode by
// buf's own; it returns which (nil: none, the copy for every column).
func bindOwn[R any](batch driver.Batch, buf *rowBuf[R]) []bool {
	if !ownColumns {
		return nil
	}
	blk := blockOf(batch)
	if blk == nil || len(blk.Columns) != len(buf.bufs) {
		return nil
	}
	if buf.owned == nil {
		buf.owned = make([]bool, len(buf.bufs))
	}
	some := false
	for i, c := range blk.Columns {
		buf.owned[i] = false
		if c.Name() != buf.def.cols[i].colName() || c.Rows() != 0 {
			continue
		}
		if oc := buf.bufs[i].own(c); oc != nil {
			blk.Columns[i] = oc
			buf.owned[i], some = true, true
		}
	}
	if !some {
		return nil
	}
	return buf.owned
}

var errOwnCol = errors.New("store: a column of the store's own block takes no values from the driver")

// ownCol is a column of the driver's block whose values are a typedBuf's,
// encoded by enc.
type ownCol[R, T any] struct {
	b    *typedBuf[R, T]
	name string
	typ  chcol.Type
	enc  func(vals []T, b *chproto.Buffer)
}

func (c *ownCol[R, T]) vals() []T              { return c.b.g.vals[c.b.i] }
func (c *ownCol[R, T]) Name() string           { return c.name }
func (c *ownCol[R, T]) Type() chcol.Type       { return c.typ }
func (c *ownCol[R, T]) Rows() int              { return c.b.rows() }
func (c *ownCol[R, T]) ScanType() reflect.Type { return reflect.TypeFor[T]() }
func (c *ownCol[R, T]) Row(i int, ptr bool) any {
	v := c.b.dense()[i]
	if ptr {
		return &v
	}
	return v
}
func (c *ownCol[R, T]) ScanRow(any, int) error            { return errOwnCol }
func (c *ownCol[R, T]) Append(any) ([]uint8, error)       { return nil, errOwnCol }
func (c *ownCol[R, T]) AppendRow(any) error               { return errOwnCol }
func (c *ownCol[R, T]) Decode(*chproto.Reader, int) error { return errOwnCol }
func (c *ownCol[R, T]) Encode(b *chproto.Buffer)          { c.enc(c.b.dense(), b) }
func (c *ownCol[R, T]) Reset()                            {} // the writer resets its buffer after the block is sent

// ownLowCard is a LowCardinality(String) column of the driver's block
// whose values are a string typedBuf's, keyed as they were added (lcDict).
type ownLowCard[R any] struct {
	ownCol[R, string]
}

// WriteStatePrefix writes the key serialization version, as the driver's
// LowCardinality does (shared dictionaries with additional keys).
func (c *ownLowCard[R]) WriteStatePrefix(b *chproto.Buffer) error {
	b.PutUInt64(lcSharedDictionariesWithAdditionalKeys)
	return nil
}

func (c *ownLowCard[R]) ReadStatePrefix(*chproto.Reader) error { return errOwnCol }

func (c *ownLowCard[R]) Encode(b *chproto.Buffer) {
	vals := c.vals()
	d := c.b.keys
	d.catchUp(vals)
	if !d.valid() {
		// Never so by construction; but ClickHouse 18.16 does not check
		// the keys it receives (a key past the dictionary crashed the
		// test server), so a block is never sent with one.
		d.reset()
		d.catchUp(vals)
	}
	d.encode(b)
}

var (
	_ chcol.Interface           = (*ownCol[row, string])(nil)
	_ chcol.CustomSerialization = (*ownLowCard[row])(nil)
)

// own returns a column that encodes b's values as drv (the driver's
// column for them, empty) would; nil when b's type and drv's are not a
// pair it encodes.
func (b *typedBuf[R, T]) own(drv chcol.Interface) chcol.Interface {
	name, typ := drv.Name(), drv.Type()
	if b.owned != nil && b.owned.Name() == name && b.owned.Type() == typ {
		return b.owned
	}
	b.owned = nil
	oc := ownCol[R, T]{b: b, name: name, typ: typ}
	if typ == lowCardString {
		if _, ok := drv.(*chcol.LowCardinality); !ok || b.part != 0 {
			return nil
		}
		sb, ok := any(b).(*typedBuf[R, string])
		if !ok {
			return nil
		}
		sb.keyOnAdd()
		b.owned = &ownLowCard[R]{ownCol[R, string]{b: sb, name: name, typ: typ}}
		return b.owned
	}
	if oc.enc = encoderFor[T](string(typ)); oc.enc == nil {
		return nil
	}
	b.owned = &oc
	return b.owned
}

// encoderFor is the encoding of values of Go type T into a column of
// ClickHouse type typ, as the driver's column of that type encodes the
// same values appended to it (typedBuf.appendTo); nil for a pair it does
// not know.
func encoderFor[T any](typ string) func([]T, *chproto.Buffer) {
	var enc any
	switch any((*T)(nil)).(type) {
	case *string:
		if typ == "String" {
			enc = encStrings
		}
	case *uint8:
		if typ == "UInt8" {
			enc = func(v []uint8, b *chproto.Buffer) { chproto.ColUInt8(v).EncodeColumn(b) }
		}
	case *uint16:
		if typ == "UInt16" {
			enc = func(v []uint16, b *chproto.Buffer) { chproto.ColUInt16(v).EncodeColumn(b) }
		}
	case *uint32:
		if typ == "UInt32" {
			enc = func(v []uint32, b *chproto.Buffer) { chproto.ColUInt32(v).EncodeColumn(b) }
		}
	case *uint64:
		if typ == "UInt64" {
			enc = func(v []uint64, b *chproto.Buffer) { chproto.ColUInt64(v).EncodeColumn(b) }
		}
	case *int32:
		if typ == "Int32" {
			enc = func(v []int32, b *chproto.Buffer) { chproto.ColInt32(v).EncodeColumn(b) }
		}
	case *int64:
		if typ == "Int64" {
			enc = func(v []int64, b *chproto.Buffer) { chproto.ColInt64(v).EncodeColumn(b) }
		}
	case *float64:
		if typ == "Float64" {
			enc = func(v []float64, b *chproto.Buffer) { chproto.ColFloat64(v).EncodeColumn(b) }
		}
	case *uuid.UUID:
		if typ == "UUID" {
			enc = func(v []uuid.UUID, b *chproto.Buffer) { chproto.ColUUID(v).EncodeColumn(b) }
		}
	case *time.Time:
		if typ == "DateTime" {
			enc = encDateTimes
		}
	case *[]byte:
		if n, ok := fixedStringSize(typ); ok {
			enc = func(v [][]byte, b *chproto.Buffer) { encFixedStrings(v, n, b) }
		}
	case *[]string:
		if typ == "Array(String)" {
			enc = func(v [][]string, b *chproto.Buffer) { encArrays(v, b, encStrings) }
		}
	case *[]uint64:
		if typ == "Array(UInt64)" {
			enc = func(v [][]uint64, b *chproto.Buffer) {
				encArrays(v, b, func(v []uint64, b *chproto.Buffer) { chproto.ColUInt64(v).EncodeColumn(b) })
			}
		}
	case *[]uint32:
		if typ == "Array(UInt32)" {
			enc = func(v [][]uint32, b *chproto.Buffer) {
				encArrays(v, b, func(v []uint32, b *chproto.Buffer) { chproto.ColUInt32(v).EncodeColumn(b) })
			}
		}
	case *[]float64:
		if typ == "Array(Float64)" {
			enc = func(v [][]float64, b *chproto.Buffer) {
				encArrays(v, b, func(v []float64, b *chproto.Buffer) { chproto.ColFloat64(v).EncodeColumn(b) })
			}
		}
	case *[]uuid.UUID:
		if typ == "Array(UUID)" {
			enc = func(v [][]uuid.UUID, b *chproto.Buffer) {
				encArrays(v, b, func(v []uuid.UUID, b *chproto.Buffer) { chproto.ColUUID(v).EncodeColumn(b) })
			}
		}
	}
	f, _ := enc.(func([]T, *chproto.Buffer))
	return f
}

// encStrings writes String values: each one's length (uvarint) and
// bytes (ch-go's ColStr.EncodeColumn).
func encStrings(vals []string, b *chproto.Buffer) {
	n := 0
	for _, v := range vals {
		n += len(v) + uvarintLen(len(v))
	}
	buf := slices.Grow(b.Buf, n)
	for _, v := range vals {
		if len(v) < 0x80 {
			buf = append(buf, byte(len(v)))
		} else {
			buf = binary.AppendUvarint(buf, uint64(len(v)))
		}
		buf = append(buf, v...)
	}
	b.Buf = buf
}

func uvarintLen(n int) int {
	l := 1
	for ; n >= 0x80; n >>= 7 {
		l++
	}
	return l
}

// encDateTimes writes DateTime values: seconds as UInt32, 0 for the zero
// time (ch-go's ToDateTime).
func encDateTimes(vals []time.Time, b *chproto.Buffer) {
	buf := slices.Grow(b.Buf, 4*len(vals))
	for _, v := range vals {
		buf = binary.LittleEndian.AppendUint32(buf, uint32(chproto.ToDateTime(v)))
	}
	b.Buf = buf
}

// fixedStringSize is n of "FixedString(n)".
func fixedStringSize(typ string) (int, bool) {
	s, ok := strings.CutPrefix(typ, "FixedString(")
	if !ok {
		return 0, false
	}
	s, ok = strings.CutSuffix(s, ")")
	if !ok {
		return 0, false
	}
	n, err := strconv.Atoi(s)
	return n, err == nil && n > 0
}

// encFixedStrings writes FixedString(n) values as the driver appends a
// [][]byte: longer values cut to n bytes, shorter ones (and nil) padded
// with zeros.
func encFixedStrings(vals [][]byte, n int, b *chproto.Buffer) {
	buf := slices.Grow(b.Buf, n*len(vals))
	for _, v := range vals {
		if len(v) >= n {
			buf = append(buf, v[:n]...)
			continue
		}
		buf = append(buf, v...)
		for range n - len(v) {
			buf = append(buf, 0)
		}
	}
	b.Buf = buf
}

// encArrays writes Array values: every row's end offset (UInt64), then
// the elements of every row (enc).
func encArrays[E any](vals [][]E, b *chproto.Buffer, enc func([]E, *chproto.Buffer)) {
	buf := slices.Grow(b.Buf, 8*len(vals))
	end := uint64(0)
	for _, v := range vals {
		end += uint64(len(v))
		buf = binary.LittleEndian.AppendUint64(buf, end)
	}
	b.Buf = buf
	for _, v := range vals {
		if len(v) > 0 {
			enc(v, b)
		}
	}
}

// valsCol is a column whose values are a slice, encoded by enc: the
// duplicate lookup's external table of ids, sent without a copy into the
// driver's column (ext.Table's Append boxed every id and grew the
// driver's column for every fetch: ~1.5 MB of garbage per fetch of
// 20,000 events).
type valsCol[T any] struct {
	name string
	typ  chcol.Type
	vals []T
	enc  func([]T, *chproto.Buffer)
}

func (c *valsCol[T]) Name() string                      { return c.name }
func (c *valsCol[T]) Type() chcol.Type                  { return c.typ }
func (c *valsCol[T]) Rows() int                         { return len(c.vals) }
func (c *valsCol[T]) ScanType() reflect.Type            { return reflect.TypeFor[T]() }
func (c *valsCol[T]) Row(i int, ptr bool) any           { return c.vals[i] }
func (c *valsCol[T]) ScanRow(any, int) error            { return errOwnCol }
func (c *valsCol[T]) Append(any) ([]uint8, error)       { return nil, errOwnCol }
func (c *valsCol[T]) AppendRow(any) error               { return errOwnCol }
func (c *valsCol[T]) Decode(*chproto.Reader, int) error { return errOwnCol }
func (c *valsCol[T]) Encode(b *chproto.Buffer)          { c.enc(c.vals, b) }
func (c *valsCol[T]) Reset()                            {}

// setVals makes the only column of blk (a new external table's) vals;
// false when blk's column is not one encoderFor encodes from T.
func setVals[T any](blk *lproto.Block, vals []T) bool {
	if len(blk.Columns) != 1 || blk.Columns[0].Rows() != 0 {
		return false
	}
	c := blk.Columns[0]
	enc := encoderFor[T](string(c.Type()))
	if enc == nil {
		return false
	}
	blk.Columns[0] = &valsCol[T]{name: c.Name(), typ: c.Type(), vals: vals, enc: enc}
	return true
}
