package testenv

import (
	"os"
	"strconv"
	"strings"
)

// capSysResource is CAP_SYS_RESOURCE's bit in /proc/self/status CapEff.
const capSysResource = 24

// CrunSpec is the spec of a crun container (crun runs only on a
// cgroup2-only host: inside RunUnified here). crun 1.8.1 raises
// RLIMIT_MEMLOCK before loading its eBPF device filter and fails
// ("setrlimit (RLIM_MEMLOCK): Operation not permitted") without
// CAP_SYS_RESOURCE, which root lacks on this machine: then the device
// rules are left out of the config (crun loads no filter). With the
// capability the config is runc's default.
func CrunSpec() ContainerSpec {
	spec := ContainerSpec{Runtime: "crun"}
	if !hasCap(capSysResource) {
		spec.Edit = func(cfg map[string]any) {
			if linux, ok := cfg["linux"].(map[string]any); ok {
				if res, ok := linux["resources"].(map[string]any); ok {
					delete(res, "devices")
				}
			}
		}
	}
	return spec
}

// hasCap reports whether this process has capability bit c in effect.
func hasCap(c uint) bool {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "CapEff:"); ok {
			n, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			return err == nil && n&(1<<c) != 0
		}
	}
	return false
}
