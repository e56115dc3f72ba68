package collector

import (
	"errors"
	"fmt"
	"os"
	"syscall"
	"time"

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
	// avail reports the bytes waiting in the ring (ringbuf.Reader.AvailableBytes).
	avail func() int
}

// newRingWait registers fd with the netpoller; an error means the kernel
// or the runtime does not poll it, and the caller blocks in the reader.
func newRingWait(fd int, avail func() int) (*ringWait, error) {
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
	return &ringWait{f: f, conn: conn, avail: avail}, nil
}

// wait returns when the ring holds records and a wakeup came (or records
// are already there), at the deadline, or when interrupt is called.
// It returns os.ErrDeadlineExceeded at the deadline or on interrupt.
func (w *ringWait) wait(deadline time.Time) error {
	if err := w.f.SetReadDeadline(deadline); err != nil {
		return err
	}
	return w.conn.Read(func(uintptr) bool { return w.avail() > 0 })
}

// interrupt makes a pending or the next wait return at once.
func (w *ringWait) interrupt() { _ = w.f.SetReadDeadline(time.Unix(1, 0)) }

func (w *ringWait) close() { _ = w.f.Close() }

// errWaitTimeout: wait's deadline passed (or it was interrupted).
func isWaitTimeout(err error) bool { return errors.Is(err, os.ErrDeadlineExceeded) }
