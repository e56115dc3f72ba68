package bus

import (
	"unicode/utf8"
	"unsafe"

	"google.golang.org/protobuf/encoding/protowire"
)

// Walking events on the wire outside the bus (the store's rows, design
// 021 decision 21). A stage that reads every event's fields itself would
// otherwise walk each event twice: once in ScanBatch, which validates it,
// and once to read it. ScanBatchWith lets it read and validate in one
// walk: the batch's own fields are ScanBatch's, and each event is walked
// by the caller's EventWalker, which reads the fields it wants with the
// primitives below and hands every other field to WireTable.SkipField,
// ScanBatch's own check. An EventWalker must accept exactly what
// ScanBatch's walk of an event accepts and fill the WireEvent as it does
// (the store's FuzzWireRows holds its walker to ScanBatch).

// EventWalker walks one event of a batch that ScanBatchWith scans.
type EventWalker interface {
	// WalkEvent reads the event message raw (without its tag and
	// length) into ev, as ScanBatch does (ev.Raw is raw), and reports
	// whether ScanBatch accepts it. The batch's events are walked in
	// order; after a false the batch is given up.
	WalkEvent(raw []byte, ev *WireEvent) bool
}

// ScanBatchWith is ScanBatch with each event walked by w; nil w is
// ScanBatch. It returns what ScanBatch returns when w accepts what
// ScanBatch's walk accepts. false is not a refusal (see ScanBatch), and
// w may have walked some of the batch's events before it.
func ScanBatchWith(data []byte, wb *WireBatch, w EventWalker) bool {
	return scanBatch(data, wb, w)
}

// WireWith is Wire with each event walked by w (ScanBatchWith); nil w is
// Wire. true and false mean what they mean for Wire.
func (f *Messages) WireWith(i int, wb *WireBatch, w EventWalker) bool {
	if f.state[i] == msgRefused {
		return false
	}
	msg := f.msgs[i]
	if !scanBatch(msg.Data(), wb, w) || !wb.BoundTo(msg.Subject()) {
		return false
	}
	if f.state[i] == msgNew {
		f.state[i] = msgDecoded
		f.chk.countedWire(msg.Data(), len(wb.Events))
	}
	return true
}

// WireTable is the strict table of one message type: what ScanBatch
// accepts of each of its fields. The zero WireTable is a message without
// known fields.
type WireTable struct{ t *strictTable }

// EventTable is the strict table of containv1.Event.
func EventTable() WireTable { return WireTable{strictBatch().fields[batchEvents].msg} }

// Sub is the table of message field num (zero when num is not a message
// field).
func (t WireTable) Sub(num protowire.Number) WireTable {
	if t.t == nil || int(num) >= len(t.t.fields) {
		return WireTable{}
	}
	return WireTable{t.t.fields[num].msg}
}

// SkipField checks the value of field num (of wire type typ) of a message
// of table t at the start of b, as ScanBatch checks it, and returns its
// length, or -1 when ScanBatch refuses it. depth is the message's: 1 for
// an event, 2 for its body, and so on.
func (t WireTable) SkipField(num protowire.Number, typ protowire.Type, b []byte, depth int) int {
	if t.t == nil {
		t.t = noFields
	}
	return validField(t.t, num, typ, b, depth)
}

// noFields is the table of a message without known fields.
var noFields = &strictTable{}

// ConsumeTag reads a field's tag (protowire.ConsumeTag, the one-byte case
// inline), refusing numbers above protowire.MaxValidNumber: n < 0 then.
func ConsumeTag(b []byte) (protowire.Number, protowire.Type, int) { return consumeTag(b) }

// ConsumeBytes reads a length-delimited value (protowire.ConsumeBytes, a
// one-byte length inline).
func ConsumeBytes(b []byte) ([]byte, int) { return consumeBytes(b) }

// ConsumeVarint reads a varint (protowire.ConsumeVarint, one byte
// inline).
func ConsumeVarint(b []byte) (uint64, int) {
	if len(b) > 0 && b[0] < 0x80 {
		return uint64(b[0]), 1
	}
	return protowire.ConsumeVarint(b)
}

// ConsumeUTF8 reads a length-delimited value that must be UTF-8 (a string
// field's) as a string pointing into b; n < 0 when it is malformed or not
// UTF-8.
func ConsumeUTF8(b []byte) (string, int) {
	v, n := consumeBytes(b)
	if n < 0 || !utf8.Valid(v) {
		return "", -1
	}
	if len(v) == 0 {
		return "", n
	}
	return unsafe.String(&v[0], len(v)), n
}
