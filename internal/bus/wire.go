package bus

import (
	"errors"
	"fmt"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protowire"
)

// The wire codec is the generated MarshalVT/UnmarshalVT of containv1
// (protoc-gen-go-vtproto): 1.5-3× cheaper than proto.Marshal/Unmarshal
// and with fewer allocations (docs/benchmarks.md, "Bus codec"). The
// generated code does not check that string fields are UTF-8, which
// proto.Marshal and proto.Unmarshal enforce for proto3; checkUTF8 walks
// the wire bytes against the schema's descriptors and does, so Decode and
// Encode accept exactly what the protobuf runtime accepts
// (FuzzDecodeMatchesProto).

// errNotUTF8 is a string field whose bytes are not valid UTF-8.
var errNotUTF8 = errors.New("string field contains invalid UTF-8")

// checkUTF8 reports a string field of b (a message of table t, already
// known to parse) whose bytes are not UTF-8. It walks ScanBatch's tables
// (strictBatch): every string field of the schema is proto3's, checked.
// The common encodings (a one-byte tag, a one-byte length, varints) are
// read inline; anything else goes through protowire, which also gives
// the errors.
func checkUTF8(t *strictTable, b []byte, depth int) error {
	if depth > 100 {
		return errors.New("message nesting too deep")
	}
	for len(b) > 0 {
		var (
			num protowire.Number
			typ protowire.Type
		)
		if c := b[0]; c < 0x80 && c >= 8 {
			num, typ = protowire.Number(c>>3), protowire.Type(c&7)
			b = b[1:]
		} else {
			var n int
			num, typ, n = protowire.ConsumeTag(b)
			if n < 0 {
				return protowire.ParseError(n)
			}
			if num > protowire.MaxValidNumber {
				// ConsumeTag takes numbers up to 2^31-1; the protobuf
				// runtime refuses those above 2^29-1, and so must we.
				return fmt.Errorf("field number %d above %d", num, protowire.MaxValidNumber)
			}
			b = b[n:]
		}
		switch typ {
		case protowire.VarintType:
			i := 0
			for i < len(b) && i < 10 && b[i] >= 0x80 {
				i++
			}
			if i == len(b) || i == 10 || (i == 9 && b[i] > 1) {
				_, n := protowire.ConsumeVarint(b)
				if n < 0 {
					return protowire.ParseError(n)
				}
				i = n - 1
			}
			b = b[i+1:]
			continue
		case protowire.Fixed64Type:
			if len(b) < 8 {
				return protowire.ParseError(-1)
			}
			b = b[8:]
			continue
		case protowire.Fixed32Type:
			if len(b) < 4 {
				return protowire.ParseError(-1)
			}
			b = b[4:]
			continue
		case protowire.BytesType:
		default:
			n := protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return protowire.ParseError(n)
			}
			b = b[n:]
			continue
		}
		var v []byte
		if len(b) > 0 && b[0] < 0x80 && int(b[0]) < len(b) {
			v, b = b[1:1+b[0]], b[1+b[0]:]
		} else {
			var n int
			v, n = protowire.ConsumeBytes(b)
			if n < 0 {
				return protowire.ParseError(n)
			}
			b = b[n:]
		}
		if int(num) >= len(t.fields) {
			continue
		}
		switch f := t.fields[num]; f.kind {
		case wireString:
			if !utf8.Valid(v) {
				return fmt.Errorf("field %d: %w", num, errNotUTF8)
			}
		case wireMessage:
			if err := checkUTF8(f.msg, v, depth+1); err != nil {
				return fmt.Errorf("field %d: %w", num, err)
			}
		}
	}
	return nil
}
