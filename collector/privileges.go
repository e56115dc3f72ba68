package collector

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// ErrPrivileges says the process may not load eBPF programs.
var ErrPrivileges = errors.New("the collector needs root (CAP_BPF and CAP_PERFMON, or CAP_SYS_ADMIN) to load its eBPF programs")

const (
	capSysAdmin = 21
	capPerfmon  = 38
	capBPF      = 39
)

// checkPrivileges reads the effective capabilities of this process and
// fails with ErrPrivileges when it cannot load tracing programs, so the
// operator reads why instead of a map-creation EPERM.
func checkPrivileges() error {
	status, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return nil // cannot tell; loading will say
	}
	for _, line := range strings.Split(string(status), "\n") {
		hex, ok := strings.CutPrefix(line, "CapEff:")
		if !ok {
			continue
		}
		caps, err := strconv.ParseUint(strings.TrimSpace(hex), 16, 64)
		if err != nil {
			return nil
		}
		has := func(c uint) bool { return caps&(1<<c) != 0 }
		if has(capSysAdmin) || (has(capBPF) && has(capPerfmon)) {
			return nil
		}
		return fmt.Errorf("%w: running as uid %d with effective capabilities %#x", ErrPrivileges, os.Geteuid(), caps)
	}
	return nil
}
