package collector

import (
	"errors"
	"fmt"
	"os"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// ringWait waits for the ring buffer in Go's network poller instead of a
// blocking epoll_wait in the reader's thread.
//
// Why: ringbuf.Reader blocks in epoll_wait as a system call, so its
// goroutine holds a P in a syscall for as long as it waits; the runtime's
// sysmon retakes such a P after 20 µs and, having found work, keeps
// sleeping only 20 µs: with a wakeup per exec and a poll every
// PollInterval it never backs off to its 10 ms idle period. On the http
// workload sysmon alone was a third of the collector process's CPU
// samples (perf), ~50k wakeups a second on the cores the workload runs on.
// Parked in the netpoller, the reader holds no P and sysmon idles.
//
// The ring buffer's map fd is duplicated, made non-blocking and
// registered with the netpoller (edge-triggered): a kernel wakeup of the
// ring (a record submitted with a wakeup) makes it readable. The reader
// then drains with a deadline in the past (non-blocking reads).
type ringWait struct {
	f    *os.File
	conn syscall.RawConn
}

// newRingWait registers fd with the netpoller; an error means the kernel
// or the runtime does not poll it, and the caller blocks in the reader.
func newRingWait(fd int) (*ringWait, error) {
	dup, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("dup ring buffer fd: %w", err)
	}
	if err := unix.SetNonblock(dup, true); err != nil {
		_ = unix.Close(dup)
		return nil, fmt.Errorf("ring buffer fd non-blocking: %w", err)
	}
	f := os.NewFile(uintptr(dup), "ringbuf")
	// A file the netpoller refused takes no deadline.
	if err := f.SetReadDeadline(time.Time{}); err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("ring buffer fd not pollable: %w", err)
	}
	conn, err := f.SyscallConn()
	if err != nil {
		_ = f.Close()
		return nil, err
	}
	return &ringWait{f: f, conn: conn}, nil
}

// wait returns after the ring's next wakeup that comes once it began, at
// the deadline, or when interrupt is called. It returns
// os.ErrDeadlineExceeded at the deadline or on interrupt.
//
// A wakeup that came before (while the caller drained) is not kept: the
// runtime's pollReset, at the start of every wait, discards a readiness
// the netpoller already saw. So moved, when not nil, is checked after
// that reset and before parking: true (the ring changed since the
// caller's drain, and its wakeup may be the one discarded) returns
// errRingMoved at once.
func (w *ringWait) wait(deadline time.Time, moved func() bool) error {
	if err := w.f.SetReadDeadline(deadline); err != nil {
		return err
	}
	// The first call parks (the caller just drained; a record still being
	// written must not make it spin), the next one returns: the
	// netpoller saw the ring's wakeup or the deadline passed.
	parked, hasMoved := false, false
	err := w.conn.Read(func(uintptr) bool {
		if parked {
			return true
		}
		parked = true
		hasMoved = moved != nil && moved()
		return hasMoved
	})
	if err == nil && hasMoved {
		return errRingMoved
	}
	return err
}

// errRingMoved: wait found the ring changed before parking.
var errRingMoved = errors.New("ring buffer moved before the wait")

// interrupt makes a pending or the next wait return at once.
func (w *ringWait) interrupt() { _ = w.f.SetReadDeadline(time.Unix(1, 0)) }

func (w *ringWait) close() { _ = w.f.Close() }

// errWaitTimeout: wait's deadline passed (or it was interrupted).
func isWaitTimeout(err error) bool { return errors.Is(err, os.ErrDeadlineExceeded) }

// ringRead consumes the ring buffer's memory directly (the layout of
// kernel/bpf/ringbuf.c, as ringbuf.Reader reads it) so that draining makes
// no system call: ringbuf.Reader.ReadInto calls epoll_wait each time it
// runs out of records, and a system call made after the process was idle
// wakes the runtime's sysmon and resets it to 20 µs ticks (perf: a quarter
// of the collector process's samples after ringWait). Records are handed
// to the callback in place (no copy); the consumer position advances after
// the callback returns, so the kernel cannot overwrite a record being
// decoded.
type ringRead struct {
	cons, prod []byte // mmapped consumer page; producer page + data (twice)
	consPos    *uint64
	prodPos    *uint64
	data       []byte
	mask       uint64
}

const (
	ringHdrSize    = 8
	ringBusyBit    = 1 << 31
	ringDiscardBit = 1 << 30
	ringLenMask    = ringDiscardBit - 1
)

func newRingRead(fd, size int) (*ringRead, error) {
	if size <= 0 || size&(size-1) != 0 {
		return nil, fmt.Errorf("ring size %d not a power of two", size)
	}
	page := os.Getpagesize()
	cons, err := unix.Mmap(fd, 0, page, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("mmap consumer page: %w", err)
	}
	prod, err := unix.Mmap(fd, int64(page), page+2*size, unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		_ = unix.Munmap(cons)
		return nil, fmt.Errorf("mmap data pages: %w", err)
	}
	return &ringRead{
		cons:    cons,
		prod:    prod,
		consPos: (*uint64)(unsafe.Pointer(&cons[0])),
		prodPos: (*uint64)(unsafe.Pointer(&prod[0])),
		data:    prod[page:],
		mask:    uint64(size - 1),
	}, nil
}

// drain passes every committed record to f, in order, and returns how
// many it passed; it stops at a record still being written (busy) and
// after max records. A malformed ring (a length beyond the producer) is
// an error.
func (r *ringRead) drain(max int, f func(sample []byte)) (int, error) {
	cons := atomic.LoadUint64(r.consPos)
	n := 0
	for n < max {
		prod := atomic.LoadUint64(r.prodPos)
		if cons == prod {
			break
		}
		if prod-cons < ringHdrSize {
			return n, errors.New("ring buffer: short record header")
		}
		// Load-acquire of the length orders it after the kernel's commit
		// (xchg) of the record's data.
		hdr := atomic.LoadUint32((*uint32)(unsafe.Pointer(&r.data[cons&r.mask])))
		if hdr&ringBusyBit != 0 {
			break // not committed yet; the commit wakes or the poll comes back
		}
		length := uint64(hdr & ringLenMask)
		total := (ringHdrSize + length + 7) &^ 7
		if prod-cons < total {
			return n, errors.New("ring buffer: record beyond the producer position")
		}
		if hdr&ringDiscardBit == 0 {
			start := (cons + ringHdrSize) & r.mask
			f(r.data[start : start+length : start+length]) // the data is mapped twice: no wrap
			n++
		}
		cons += total
		atomic.StoreUint64(r.consPos, cons)
	}
	return n, nil
}

// producer is the ring's producer position: it moves when a record is
// reserved, before the record is written and committed.
func (r *ringRead) producer() uint64 { return atomic.LoadUint64(r.prodPos) }

// consumer is the reader's position.
func (r *ringRead) consumer() uint64 { return atomic.LoadUint64(r.consPos) }

func (r *ringRead) close() {
	_ = unix.Munmap(r.prod)
	_ = unix.Munmap(r.cons)
}
