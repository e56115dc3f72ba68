package bus

import (
	"testing"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protowire"
)

// FuzzValidUTF8 holds validUTF8 to utf8.Valid.
func FuzzValidUTF8(f *testing.F) {
	for _, s := range []string{"", "a", "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
		"/var/lib/app/caché/1.dat", "0123456789abcdef\xff", "01234567\xc3", "0123456789abcdef01234567é", "\xed\xa0\x80"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if got, want := validUTF8(b), utf8.Valid(b); got != want {
			t.Fatalf("validUTF8(%q) = %v, utf8.Valid %v", b, got, want)
		}
	})
}

// FuzzConsumeTag holds consumeTag to protowire.ConsumeTag refusing
// numbers above protowire.MaxValidNumber.
func FuzzConsumeTag(f *testing.F) {
	for _, b := range [][]byte{{0x08}, {0x07}, {0xa2, 0x01}, {0x80, 0x00}, {0x80}, {0xff, 0x7f}, {0xff, 0xff, 0xff, 0xff, 0x0f}, {0x82, 0x80, 0x00}} {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) == 0 {
			return // callers never pass none
		}
		num, typ, n := consumeTag(b)
		wnum, wtyp, wn := protowire.ConsumeTag(b)
		if wn < 0 || wnum > protowire.MaxValidNumber {
			if n >= 0 {
				t.Fatalf("consumeTag(%x) = %d %d %d, protowire refuses (%d)", b, num, typ, n, wn)
			}
			return
		}
		if num != wnum || typ != wtyp || n != wn {
			t.Fatalf("consumeTag(%x) = %d %d %d, protowire %d %d %d", b, num, typ, n, wnum, wtyp, wn)
		}
	})
}
