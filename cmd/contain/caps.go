package main

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/containsec/contain/internal/logfields"
)

// keepCaps are the capabilities `contain run` keeps once every stage is
// built (the collector's programs loaded and attached in collector.New,
// the responder's engine clients made): see docs/security.md
// "Privileges".
//   - CAP_BPF, CAP_PERFMON, CAP_SYS_ADMIN: the collector's maps and
//     programs on new cgroups, and bpf() on kernels without CAP_BPF;
//   - CAP_SYS_PTRACE: /proc/<pid>/fd, /root, /net of other processes
//     (the responder's listener scan and forensic snapshot, the
//     collector's container addresses);
//   - CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH: runtime state directories and
//     container files not owned by root.
//
// Everything else is dropped from the effective, permitted and
// inheritable sets. The bounding set is left as it is, so runc (the
// runc-pause method) still gets what it needs when exec'd as root.
var keepCaps = []int{unix.CAP_BPF, unix.CAP_PERFMON, unix.CAP_SYS_ADMIN, unix.CAP_SYS_PTRACE, unix.CAP_DAC_OVERRIDE, unix.CAP_DAC_READ_SEARCH}

// errCapsCgo: the binary links cgo, where Go cannot change every thread's
// capabilities (AllThreadsSyscall); build with CGO_ENABLED=0.
var errCapsCgo = errors.New("capabilities not dropped: this binary links cgo (build contain with CGO_ENABLED=0)")

// dropCaps reduces every thread's capabilities to keepCaps. A process
// without capabilities (an unprivileged stage) is left alone.
func dropCaps(log *slog.Logger) error {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var cur [2]unix.CapUserData
	if err := unix.Capget(&hdr, &cur[0]); err != nil {
		return fmt.Errorf("capget: %w", err)
	}
	if cur[0].Effective == 0 && cur[1].Effective == 0 {
		return nil
	}
	var data [2]unix.CapUserData
	var names []string
	for _, c := range keepCaps {
		i, bit := c/32, uint32(1)<<(c%32)
		if cur[i].Permitted&bit == 0 {
			continue
		}
		data[i].Effective |= bit
		data[i].Permitted |= bit
		names = append(names, capName(c))
	}
	_, _, errno := syscall.AllThreadsSyscall(unix.SYS_CAPSET, uintptr(unsafe.Pointer(&hdr)), uintptr(unsafe.Pointer(&data[0])), 0)
	if errno == syscall.ENOTSUP {
		return errCapsCgo
	}
	if errno != 0 {
		return fmt.Errorf("capset: %w", errno)
	}
	log.Info("capabilities dropped", logfields.Kept, strings.Join(names, ","))
	return nil
}

func capName(c int) string {
	switch c {
	case unix.CAP_BPF:
		return "bpf"
	case unix.CAP_PERFMON:
		return "perfmon"
	case unix.CAP_SYS_ADMIN:
		return "sys_admin"
	case unix.CAP_SYS_PTRACE:
		return "sys_ptrace"
	case unix.CAP_DAC_OVERRIDE:
		return "dac_override"
	case unix.CAP_DAC_READ_SEARCH:
		return "dac_read_search"
	}
	return fmt.Sprint(c)
}
