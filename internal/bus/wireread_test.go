package bus

import (
	"bytes"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
)

// FuzzConsumeField holds ConsumeField to protowire: the same field (number,
// wire type, value, length) for every input protowire reads as a field
// other than a group, -1 for the rest.
func FuzzConsumeField(f *testing.F) {
	for _, s := range [][]byte{
		{0x08, 0x96, 0x01}, {0x12, 0x03, 'a', 'b', 'c'}, {0x0d, 1, 2, 3, 4}, {0x09, 1, 2, 3, 4, 5, 6, 7, 8},
		{0x0b, 0x0c}, {0xf8, 0xff, 0xff, 0xff, 0x0f, 0x01}, {0x12, 0x80, 0x01}, {0x00, 0x01}, {},
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		num, typ, v, x, n := ConsumeField(b)
		wnum, wtyp, wn := protowire.ConsumeField(b)
		if wn < 0 || wtyp == protowire.StartGroupType || wtyp == protowire.EndGroupType || wnum > protowire.MaxValidNumber {
			if n >= 0 {
				t.Fatalf("read %d bytes of %x, protowire %d (type %d)", n, b, wn, wtyp)
			}
			return
		}
		if n != wn || num != wnum || typ != wtyp {
			t.Fatalf("%x: field %d type %d length %d, protowire %d %d %d", b, num, typ, n, wnum, wtyp, wn)
		}
		_, _, tn := protowire.ConsumeTag(b)
		switch typ {
		case protowire.BytesType:
			if wv, _ := protowire.ConsumeBytes(b[tn:]); !bytes.Equal(v, wv) {
				t.Fatalf("%x: value %x, protowire %x", b, v, wv)
			}
		case protowire.VarintType:
			if wx, _ := protowire.ConsumeVarint(b[tn:]); x != wx {
				t.Fatalf("%x: value %d, protowire %d", b, x, wx)
			}
		}
	})
}
