package posture

import (
	"fmt"
	"slices"
	"strings"

	"github.com/containsec/contain/internal/engines"
)

// Policies.
const (
	// PolicyReadOnly: the root filesystem is read-only and every writable
	// mount is a declared volume or a tmpfs.
	PolicyReadOnly = "read-only"
	// PolicyNonRoot: the container's user is not root.
	PolicyNonRoot = "non-root"
)

// Finding codes.
const (
	CodeRootfsWritable  = "rootfs.writable"
	CodeMountUndeclared = "mount.writable.undeclared"
	CodeUserRoot        = "user.root"
)

// Verdicts.
const (
	VerdictPass = "pass"
	VerdictFail = "fail"
)

// Finding is one violation.
type Finding struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// Result is one container audited against one policy.
type Result struct {
	Container      engines.ContainerConfig `json:"container"`
	Policy         string                  `json:"policy"`
	Verdict        string                  `json:"verdict"`
	RunsAsRoot     bool                    `json:"runs_as_root"`
	WritableMounts []string                `json:"writable_mounts"`
	Findings       []Finding               `json:"findings"`
}

// ParsePolicy checks a policy name.
func ParsePolicy(s string) (string, error) {
	switch s {
	case PolicyReadOnly, PolicyNonRoot:
		return s, nil
	}
	return "", fmt.Errorf("policy %q is not %s or %s", s, PolicyReadOnly, PolicyNonRoot)
}

// runtimeFiles are bind mounts every engine adds (name resolution,
// podman's marker): not the application's writable data.
var runtimeFiles = []string{"/etc/hosts", "/etc/hostname", "/etc/resolv.conf", "/run/.containerenv"}

// kernelTypes are pseudo filesystems: not where an application writes
// data (writes there are the analyzer's escape.* behaviours).
var kernelTypes = []string{"proc", "sysfs", "devpts", "mqueue", "cgroup", "cgroup2"}

// RunsAsRoot says whether c's user is root.
func RunsAsRoot(c engines.ContainerConfig) bool {
	if c.UID == 0 {
		return true
	}
	if c.UID > 0 {
		return false
	}
	user, _, _ := strings.Cut(c.User, ":")
	return user == "" || user == "0" || user == "root"
}

// declared says whether dst is a declared volume or below one.
func declared(dst string, volumes []string) bool {
	for _, v := range volumes {
		v = strings.TrimSuffix(v, "/")
		if dst == v || strings.HasPrefix(dst, v+"/") {
			return true
		}
	}
	return false
}

// writableMounts lists c's writable mounts that a read-only policy
// judges: neither runtime files, pseudo filesystems nor /dev.
func writableMounts(c engines.ContainerConfig) []engines.Mount {
	var out []engines.Mount
	for _, m := range c.Mounts {
		if !m.RW || slices.Contains(runtimeFiles, m.Destination) || slices.Contains(kernelTypes, m.Type) ||
			m.Destination == "/dev" || strings.HasPrefix(m.Destination, "/dev/") ||
			m.Destination == "/proc" || strings.HasPrefix(m.Destination, "/proc/") || strings.HasPrefix(m.Destination, "/sys") {
			continue
		}
		out = append(out, m)
	}
	return out
}

// Evaluate audits c against policy.
func Evaluate(c engines.ContainerConfig, policy string) Result {
	r := Result{Container: c, Policy: policy, Verdict: VerdictPass, RunsAsRoot: RunsAsRoot(c)}
	for _, m := range writableMounts(c) {
		r.WritableMounts = append(r.WritableMounts, m.Type+":"+m.Destination)
		if policy == PolicyReadOnly && m.Type != "tmpfs" && !declared(m.Destination, c.Volumes) {
			r.Findings = append(r.Findings, Finding{CodeMountUndeclared,
				fmt.Sprintf("writable %s mount at %s is neither a declared volume nor a tmpfs", m.Type, m.Destination)})
		}
	}
	switch policy {
	case PolicyReadOnly:
		if !c.ReadOnlyRootfs {
			r.Findings = append([]Finding{{CodeRootfsWritable, "the root filesystem is writable (run with --read-only / read_only: true)"}}, r.Findings...)
		}
	case PolicyNonRoot:
		if r.RunsAsRoot {
			r.Findings = append(r.Findings, Finding{CodeUserRoot, fmt.Sprintf("runs as root (user %q)", c.User)})
		}
	}
	if len(r.Findings) > 0 {
		r.Verdict = VerdictFail
	}
	return r
}
