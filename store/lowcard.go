package store

import (
	"encoding/binary"
	"math"
	"reflect"
	"slices"
	"strings"
	"unsafe"

	chproto "github.com/ClickHouse/ch-go/proto"
	chcol "github.com/ClickHouse/clickhouse-go/v2/lib/column"
)

// LowCardinality(String) columns without the driver's per-row path
// (docs/design/021-store-inserts.md, decision 10). clickhouse-go's
// LowCardinality.AppendRow takes one boxed value per row and looks it up
// twice in a map keyed by interface values (plus reflection to test for a
// nil pointer): ~14% of the store's CPU with our own box cache in front.
// The column's state is a dictionary (its index column) and one key per
// row; lowCard fills both directly, one string comparison per row (rows
// of one message mostly repeat the last value) or one map lookup, and a
// dictionary entry per distinct value of the block.
//
// The state is unexported: lowCard reaches it through the field offsets
// that reflection reports for the driver version in go.mod, and checks
// their names and types once. A driver whose column differs is detected
// (lowCardLayout.ok false) and the store falls back to AppendRow;
// TestLowCardinalityFastPath fails then, so a driver bump does not lose
// the fast path unnoticed.

// lowCardLayout is where LowCardinality keeps its state.
type lowCardLayout struct {
	ok                             bool
	rows, index, nullable, appends uintptr // field offsets
	keys, dict                     uintptr // offsets within appends
}

var lowCard = probeLowCard()

func probeLowCard() lowCardLayout {
	var l lowCardLayout
	t := reflect.TypeFor[chcol.LowCardinality]()
	field := func(t reflect.Type, name string, typ reflect.Type) (uintptr, bool) {
		f, ok := t.FieldByName(name)
		if !ok || len(f.Index) != 1 || (typ != nil && f.Type != typ) {
			return 0, false
		}
		return f.Offset, true
	}
	var ok [6]bool
	l.rows, ok[0] = field(t, "rows", reflect.TypeFor[int]())
	l.index, ok[1] = field(t, "index", reflect.TypeFor[chcol.Interface]())
	l.nullable, ok[2] = field(t, "nullable", reflect.TypeFor[bool]())
	l.appends, ok[3] = field(t, "append", nil)
	if ok[3] {
		f, _ := t.FieldByName("append")
		l.keys, ok[4] = field(f.Type, "keys", reflect.TypeFor[[]int]())
		l.dict, ok[5] = field(f.Type, "index", reflect.TypeFor[map[any]int]())
	}
	l.ok = ok == [6]bool{true, true, true, true, true, true}
	return l
}

// lowCardState is one LowCardinality column's state, as pointers.
type lowCardState struct {
	rows  *int
	index chcol.Interface
	keys  *[]int
	dict  *map[any]int
}

// state returns c's state, ok false when the fast path does not apply
// (unknown layout, Nullable values, or an index other than String).
func (l lowCardLayout) state(c *chcol.LowCardinality) (lowCardState, bool) {
	if !l.ok {
		return lowCardState{}, false
	}
	p := unsafe.Pointer(c)
	if *(*bool)(unsafe.Add(p, l.nullable)) {
		return lowCardState{}, false
	}
	index := *(*chcol.Interface)(unsafe.Add(p, l.index))
	if _, ok := index.(*chcol.String); !ok {
		return lowCardState{}, false
	}
	a := unsafe.Add(p, l.appends)
	return lowCardState{
		rows:  (*int)(unsafe.Add(p, l.rows)),
		index: index,
		keys:  (*[]int)(unsafe.Add(a, l.keys)),
		dict:  (*map[any]int)(unsafe.Add(a, l.dict)),
	}, true
}

// lowCardRecent is how many of a column's last distinct values
// appendLowCard compares a value with before its map.
const lowCardRecent = 4

// lowCardDict is a column buffer's dictionary for the block being
// appended: value → key (row of the driver's index column).
type lowCardDict struct {
	keys map[string]int
	// buf is lent to the driver as its column's keys: the driver drops
	// its keys after encoding a block (sets them nil), so they would be
	// grown from nothing for every block (~200 bytes of garbage per row
	// over the 12 LowCardinality columns of events).
	buf []int
}

// appendLowCard appends vals to c as AppendRow would, value by value;
// false when the fast path does not apply (nothing appended then).
func (d *lowCardDict) appendLowCard(c *chcol.LowCardinality, vals []string) (bool, error) {
	st, ok := lowCard.state(c)
	if !ok {
		return false, nil
	}
	if *st.dict == nil {
		*st.dict = map[any]int{}
	}
	if st.index.Rows() == 0 {
		// Row 0 of the dictionary is the default value, as AppendRow
		// makes it.
		if err := st.index.AppendRow(nil); err != nil {
			return true, err
		}
	}
	// The driver's dictionary starts empty with every block (Flush
	// resets it); it may hold values from an earlier call for this
	// block.
	if d.keys == nil {
		d.keys = map[string]int{}
	}
	clear(d.keys)
	for v, k := range *st.dict {
		if s, ok := v.(string); ok {
			d.keys[s] = k
		}
	}
	keys := *st.keys
	if keys == nil {
		keys = d.buf[:0]
	}
	keys = slices.Grow(keys, len(vals))
	// The last values seen and their keys, most recent first: rows of
	// mixed kinds alternate between a few values (kind, syscall_name,
	// net_op …: one map lookup per row and column was ~4% of the fleet
	// store's CPU). Local: the values may point into payloads.
	var recent [lowCardRecent]struct {
		v string
		k int
	}
	for i := range recent {
		recent[i].k = -1
	}
rows:
	for _, v := range vals {
		for i := range recent {
			if recent[i].k >= 0 && sameString(recent[i].v, v) {
				k := recent[i].k
				if i > 0 {
					copy(recent[1:i+1], recent[:i])
					recent[0].v, recent[0].k = v, k
				}
				keys = append(keys, k)
				continue rows
			}
		}
		k, found := d.keys[v]
		if !found {
			// A decoded string may alias its message's payload
			// (bus.ConsumerConfig.AliasPayload): the dictionaries
			// keep a copy.
			s := strings.Clone(v)
			if err := st.index.AppendRow(s); err != nil {
				*st.keys = keys
				return true, err
			}
			k = st.index.Rows() - 1
			d.keys[s] = k
			(*st.dict)[s] = k
		}
		keys = append(keys, k)
		copy(recent[1:], recent[:len(recent)-1])
		recent[0].v, recent[0].k = v, k
	}
	*st.keys = keys
	d.buf = keys
	*st.rows += len(vals)
	return true, nil
}

// sameString is a == b, the last bytes compared first: the per-container
// columns (container_name, image_digest, profile_ref, batch_producer)
// hold values of one length that differ near their end, so that a plain
// compare with each recent value of a row from another container ran
// over their common prefix (memeqbody was 12% of the fleet store's CPU).
func sameString(a, b string) bool {
	n := len(a)
	return n == len(b) && (n == 0 || a[n-1] == b[n-1]) && a == b
}

// The LowCardinality(String) columns of the store's own block (owncols.go)
// are keyed as their rows are added (typedGroup.add), while the row's
// strings are in cache from the wire read: filled a column at a time at
// the block's end (appendLowCard), every pass re-read every row's string
// from the payload (15% of the fleet store's CPU with sameString).

// Key serialization of the driver's LowCardinality (lib/column/lowcardinality.go).
const (
	lcSharedDictionariesWithAdditionalKeys = 1
	lcHasAdditionalKeysBit                 = 1 << 9
	lcNeedUpdateDictionary                 = 1 << 10
	lcUpdateAll                            = lcHasAdditionalKeysBit | lcNeedUpdateDictionary
)

// lcDict is one LowCardinality(String) column's block: its dictionary
// (row 0 the default value, then every value in the order of its first
// row, as the driver's AppendRow makes it) and a key per row. Its strings
// may point into the fetch's payloads: a block is sent before they are
// released, and reset clears them.
type lcDict struct {
	dict  []string
	keys  []uint32
	index map[string]uint32
	gen   uint32 // changes with every reset (keyedEntry)
	// The last values seen and their keys, most recent first (k < 0:
	// none): rows of mixed kinds alternate between a few values.
	recent [lowCardRecent]struct {
		v string
		k int32
	}
}

func newLcDict() *lcDict {
	d := &lcDict{index: map[string]uint32{}}
	d.reset()
	return d
}

func (d *lcDict) reset() {
	d.gen++
	clear(d.dict)
	d.dict = append(d.dict[:0], "")
	d.keys = d.keys[:0]
	clear(d.index)
	for i := range d.recent {
		d.recent[i].v, d.recent[i].k = "", -1
	}
}

// add keys one more row of value v.
func (d *lcDict) add(v string) {
	for i := range d.recent {
		if d.recent[i].k >= 0 && sameString(d.recent[i].v, v) {
			k := d.recent[i].k
			if i > 0 {
				copy(d.recent[1:i+1], d.recent[:i])
				d.recent[0].v, d.recent[0].k = v, k
			}
			d.keys = append(d.keys, uint32(k))
			return
		}
	}
	k, found := d.index[v]
	if !found {
		k = uint32(len(d.dict))
		d.dict = append(d.dict, v)
		d.index[v] = k
	}
	d.keys = append(d.keys, k)
	copy(d.recent[1:], d.recent[:len(d.recent)-1])
	d.recent[0].v, d.recent[0].k = v, int32(k)
}

// catchUp keys the rows of vals not keyed yet (added before the column
// was known to be LowCardinality); it rebuilds the keys if they are not
// vals' (they always are: a buffer's keys are reset and compacted with
// its values).
func (d *lcDict) catchUp(vals []string) {
	if len(d.keys) > len(vals) {
		d.reset()
	}
	for len(d.keys) < len(vals) {
		d.add(vals[len(d.keys)])
	}
}

// valid reports whether every key is a row of the dictionary.
func (d *lcDict) valid() bool {
	n, top := uint32(len(d.dict)), uint32(0)
	for _, k := range d.keys {
		top = max(top, k)
	}
	return top < n
}

// encode writes the block as the driver's LowCardinality.Encode does:
// keys of the narrowest width that holds the dictionary's values (not
// counting the default), the dictionary as a String column, the keys.
func (d *lcDict) encode(b *chproto.Buffer) {
	if len(d.keys) == 0 {
		return
	}
	var width uint64
	switch n := len(d.dict) - 1; {
	case n < math.MaxUint8:
		width = 0
	case n < math.MaxUint16:
		width = 1
	case n < math.MaxUint32:
		width = 2
	default:
		width = 3
	}
	b.PutUInt64(lcUpdateAll | width)
	b.PutInt64(int64(len(d.dict)))
	encStrings(d.dict, b)
	b.PutInt64(int64(len(d.keys)))
	buf := slices.Grow(b.Buf, len(d.keys)<<width)
	switch width {
	case 0:
		for _, k := range d.keys {
			buf = append(buf, uint8(k))
		}
	case 1:
		for _, k := range d.keys {
			buf = binary.LittleEndian.AppendUint16(buf, uint16(k))
		}
	case 2:
		for _, k := range d.keys {
			buf = binary.LittleEndian.AppendUint32(buf, k)
		}
	default:
		for _, k := range d.keys {
			buf = binary.LittleEndian.AppendUint64(buf, uint64(k))
		}
	}
	b.Buf = buf
}
