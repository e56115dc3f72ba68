package store

import (
	"reflect"
	"unsafe"

	chcol "github.com/ClickHouse/clickhouse-go/v2/lib/column"
)

// Driver columns kept across INSERTs (design 021, "Store on the wire").
// clickhouse-go makes a new block, with empty columns, for every INSERT
// (PrepareBatch): each INSERT grew every column from nothing again (the
// growth was ~70% of the store's garbage: ColStr.Append alone 600 bytes a
// row). Within an INSERT the driver keeps a column's storage from block to
// block (Flush resets it to length 0). keptCols carries it over to the
// next INSERT: before a block is appended to a column that has no
// storage yet, the column is given the storage its predecessor had
// (length 0); after, the storage is noted again (the driver may have
// grown it). A block's storage is used by one INSERT at a time: the
// writer's previous INSERT has been sent (or aborted) before its next one
// is prepared.
//
// The storage is unexported: it is the slices of the column's ch-go
// column (field col: proto.ColStr's Buf and Pos, proto.ColUInt64 …),
// reached by reflection. A column without that field (Array,
// LowCardinality, a driver that changed) is left as it is: the driver
// grows it as before (TestKeptColumns fails then, so a driver bump does
// not lose it unnoticed).

// keptCol is one column's storage between INSERTs: its slices, length 0.
type keptCol struct {
	slices []reflect.Value
}

// colSlices returns settable values of the slices that hold c's values;
// nil when c's layout is not one it knows.
func colSlices(c chcol.Interface) []reflect.Value {
	v := reflect.ValueOf(c)
	if v.Kind() != reflect.Pointer || v.Elem().Kind() != reflect.Struct {
		return nil
	}
	f := v.Elem().FieldByName("col")
	if !f.IsValid() || !f.CanAddr() {
		return nil
	}
	f = reflect.NewAt(f.Type(), unsafe.Pointer(f.UnsafeAddr())).Elem()
	switch f.Kind() {
	case reflect.Slice:
		return []reflect.Value{f}
	case reflect.Struct:
		var out []reflect.Value
		for i := range f.NumField() {
			if ff := f.Field(i); ff.Kind() == reflect.Slice && f.Type().Field(i).IsExported() {
				out = append(out, ff)
			}
		}
		return out
	}
	return nil
}

// lend gives c the kept storage when c has none; it reports whether c is
// a column whose storage can be kept.
func (k *keptCol) lend(c chcol.Interface) []reflect.Value {
	sl := colSlices(c)
	if len(sl) == 0 || len(sl) != len(k.slices) {
		return sl
	}
	for i, s := range sl {
		if s.Cap() == 0 && s.Type() == k.slices[i].Type() {
			s.Set(k.slices[i])
		}
	}
	return sl
}

// keep notes the storage of c's slices sl (from lend).
func (k *keptCol) keep(sl []reflect.Value) {
	if len(sl) == 0 {
		return
	}
	if len(k.slices) != len(sl) {
		k.slices = make([]reflect.Value, len(sl))
	}
	for i, s := range sl {
		k.slices[i] = reflect.ValueOf(s.Interface()).Slice(0, 0)
	}
}
