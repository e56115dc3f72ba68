package collector

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"testing"
)

// fakeRing lays out records as kernel/bpf/ringbuf.c does, in plain memory
// mapped "twice" by copying (the kernel maps the data pages twice).
type fakeRing struct {
	size       uint64
	data       []byte // 2*size
	cons, prod uint64
}

func newFakeRing(size uint64) *fakeRing {
	return &fakeRing{size: size, data: make([]byte, 2*size)}
}

// put writes one record at prod with the header flags given.
func (f *fakeRing) put(sample []byte, flags uint32) {
	hdr := make([]byte, ringHdrSize)
	binary.LittleEndian.PutUint32(hdr, uint32(len(sample))|flags)
	rec := append(hdr, sample...)
	for len(rec)%8 != 0 {
		rec = append(rec, 0)
	}
	for i, b := range rec {
		off := (f.prod + uint64(i)) % f.size
		f.data[off], f.data[off+f.size] = b, b
	}
	f.prod += uint64(len(rec))
}

// setFlags rewrites the header flags of the record at pos.
func (f *fakeRing) setFlags(pos uint64, length int, flags uint32) {
	for _, base := range []uint64{0, f.size} {
		binary.LittleEndian.PutUint32(f.data[base+pos%f.size:], uint32(length)|flags)
	}
}

func (f *fakeRing) reader() *ringRead {
	return &ringRead{consPos: &f.cons, prodPos: &f.prod, data: f.data, mask: f.size - 1}
}

func TestRingReadDrain(t *testing.T) {
	f := newFakeRing(128)
	r := f.reader()
	var got [][]byte
	collect := func(b []byte) { got = append(got, bytes.Clone(b)) }

	f.put([]byte("first"), 0)
	f.put([]byte("gone"), ringDiscardBit)
	f.put([]byte("third"), 0)
	busyAt := f.prod
	f.put([]byte("busy"), ringBusyBit)
	f.put([]byte("after"), 0)
	n, err := r.drain(100, collect)
	if err != nil || n != 2 || fmt.Sprintf("%q", got) != `["first" "third"]` {
		t.Fatalf("drain = %d, %v, %q; want first and third, stopping at the busy record", n, err, got)
	}
	if f.cons != busyAt {
		t.Fatalf("consumer at %d, want %d (the busy record)", f.cons, busyAt)
	}
	f.setFlags(busyAt, 4, 0) // committed
	got = nil
	if n, err := r.drain(100, collect); err != nil || n != 2 || fmt.Sprintf("%q", got) != `["busy" "after"]` {
		t.Fatalf("drain after commit = %d, %v, %q", n, err, got)
	}
	if f.cons != f.prod {
		t.Fatalf("consumer %d != producer %d after a full drain", f.cons, f.prod)
	}

	// Wrapping around the end of the ring: the double mapping keeps the
	// sample contiguous.
	got = nil
	long := []byte("0123456789abcdefghij")
	for range 5 {
		f.put(long, 0)
		if n, err := r.drain(100, collect); err != nil || n != 1 {
			t.Fatalf("drain across the wrap = %d, %v", n, err)
		}
	}
	for i, g := range got {
		if !bytes.Equal(g, long) {
			t.Fatalf("record %d across the wrap = %q", i, g)
		}
	}

	// max bounds one drain.
	f.put([]byte("a"), 0)
	f.put([]byte("b"), 0)
	if n, _ := r.drain(1, func([]byte) {}); n != 1 || f.cons == f.prod {
		t.Fatalf("drain(max 1) = %d, consumer caught up: %v", n, f.cons == f.prod)
	}
	if n, _ := r.drain(1, func([]byte) {}); n != 1 || f.cons != f.prod {
		t.Fatalf("second drain(max 1) = %d", n)
	}

	// A length beyond the producer is an error, not a read out of bounds.
	f.put([]byte("x"), 0)
	f.setFlags(f.cons, 40, 0)
	if _, err := r.drain(100, func([]byte) {}); err == nil {
		t.Fatal("record beyond the producer: no error")
	}
}
