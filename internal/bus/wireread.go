package bus

import (
	"google.golang.org/protobuf/encoding/protowire"
)

// ConsumeField reads the field at the start of b for a reader that walks
// a message ScanBatch has accepted (the store's rows, design 021): its
// number and wire type, its value (v a length-delimited one's, x a
// varint's; neither for a fixed32 or fixed64) and its length n, or -1
// (malformed, a group). The common encodings (a one-byte tag, length or
// varint) are read inline, the rest by consumeTag and protowire, so it
// parses a field as ScanBatch does; unlike ScanBatch it checks nothing
// about the schema (a string's UTF-8, a field's wire type).
func ConsumeField(b []byte) (num protowire.Number, typ protowire.Type, v []byte, x uint64, n int) {
	if len(b) == 0 {
		return 0, 0, nil, 0, -1
	}
	if c := b[0]; c < 0x80 && c >= 8 {
		num, typ, n = protowire.Number(c>>3), protowire.Type(c&7), 1
	} else if num, typ, n = consumeTag(b); n < 0 {
		return 0, 0, nil, 0, -1
	}
	b = b[n:]
	switch typ {
	case protowire.BytesType:
		if len(b) > 0 && b[0] < 0x80 && int(b[0]) < len(b) {
			return num, typ, b[1 : 1+b[0]], 0, n + 1 + int(b[0])
		}
		v, m := protowire.ConsumeBytes(b)
		if m < 0 {
			return 0, 0, nil, 0, -1
		}
		return num, typ, v, 0, n + m
	case protowire.VarintType:
		if len(b) > 0 && b[0] < 0x80 {
			return num, typ, nil, uint64(b[0]), n + 1
		}
		x, m := protowire.ConsumeVarint(b)
		if m < 0 {
			return 0, 0, nil, 0, -1
		}
		return num, typ, nil, x, n + m
	case protowire.Fixed32Type, protowire.Fixed64Type:
		m := protowire.ConsumeFieldValue(num, typ, b)
		if m < 0 {
			return 0, 0, nil, 0, -1
		}
		return num, typ, nil, 0, n + m
	}
	return 0, 0, nil, 0, -1
}
