package freezer

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// ErrRefused: the target is not proven to be a container, so nothing is
// frozen or thawed. Every refusal is a *RefusedError wrapping it.
var ErrRefused = errors.New("refused: not a container")

// Refusal kinds, the Reason of a RefusedError (a metric label).
const (
	RefuseInvalidID     = "invalid_id"
	RefuseNoID          = "no_container_id"
	RefuseUnknown       = "unknown_to_runtimes"
	RefuseNoInit        = "no_init_pid"
	RefuseNoCgroup      = "no_cgroup"
	RefuseRootCgroup    = "root_cgroup"
	RefuseHostUnit      = "host_unit"
	RefuseNotNamed      = "cgroup_not_named_after_container"
	RefuseInitElsewhere = "init_not_in_cgroup"
	RefuseInitReused    = "init_pid_reused"
	RefuseProtected     = "protected"
)

// RefusedError says why a target is not a container this package will act
// on.
type RefusedError struct {
	// Reason is one of the Refuse* kinds.
	Reason string
	// Detail says it in words, naming the id and the path.
	Detail string
}

func (e *RefusedError) Error() string { return "refused: not a container: " + e.Detail }

// Is makes errors.Is(err, ErrRefused) true.
func (e *RefusedError) Is(target error) bool { return target == ErrRefused }

func refuse(reason, format string, args ...any) error {
	return &RefusedError{Reason: reason, Detail: fmt.Sprintf(format, args...)}
}

// RefusedReason is the Reason of a refusal in err's chain, or "".
func RefusedReason(err error) string {
	var r *RefusedError
	if errors.As(err, &r) {
		return r.Reason
	}
	return ""
}

// RefuseID returns a refusal for an alert's container id that cannot name
// a container (empty: a host process; not a single safe path element:
// e.g. a path traversal), or nil.
func RefuseID(id string) error {
	if id == "" {
		return refuse(RefuseNoID, "no container id (a host process; the root cgroup and host units are never frozen)")
	}
	if !ValidID(id) {
		s := id
		if len(s) > 128 {
			s = s[:128]
		}
		return refuse(RefuseInvalidID, "%v: %q is not a single path element of [A-Za-z0-9_+.-]", ErrInvalidID, s)
	}
	return nil
}

// Protected names what must never be frozen besides the host's own units:
// contain's processes and the services it depends on. A target whose
// cgroup holds any of these processes, or is an ancestor of their cgroups,
// is refused.
type Protected struct {
	// Pids are processes whose cgroups are protected (contain's own pid,
	// the NATS server's, ClickHouse's). A pid that has exited is ignored.
	Pids []int
	// Cgroups are cgroup paths relative to a hierarchy's mount (e.g.
	// "/system.slice/nats.service"), protected in every hierarchy.
	Cgroups []string
	// ProcRoot is the procfs mount ("" = /proc).
	ProcRoot string
}

// Prove checks that t, as Locate or LocateByPid returned it, is a
// container this package may freeze:
//
//   - a runtime knows it (t.Source names its state file or engine) and
//     recorded its init pid;
//   - each of its cgroup directories lies strictly below its hierarchy's
//     mount (never the root cgroup), and its last element is named after
//     the container the way runtimes name them (<id>, docker-<id>.scope,
//     cri-containerd-<id>.scope, crio-<id>.scope, libpod-<id>(.scope),
//     runc-<id>.scope), never a host unit (*.slice, *.service, a scope
//     that is not a container's);
//   - the runtime's init pid is in that cgroup (cgroup.procs) and, when
//     the runtime recorded its start time, is the same process (not a
//     reused pid);
//   - the cgroup neither holds nor is an ancestor of a protected process
//     or cgroup (p).
//
// It returns a *RefusedError (errors.Is ErrRefused) when t is not proven,
// an error wrapping ErrExited when the container's cgroup is gone or
// empty, nil when proven. It reads files only.
func Prove(roots Roots, t *Target, p Protected) error {
	if err := RefuseID(t.ID); err != nil {
		return err
	}
	if t.Source == "" {
		return refuse(RefuseUnknown, "%s is known to no runtime (no OCI state and no engine answer); a cgroup found by name is not proof", t.ID)
	}
	if t.InitPid <= 0 {
		return refuse(RefuseNoInit, "%s: %s records no init pid", t.ID, t.Source)
	}
	type dir struct{ root, path, name string }
	var dirs []dir
	if t.FreezerV1 != "" {
		dirs = append(dirs, dir{roots.FreezerV1, t.FreezerV1, "freezer"})
	}
	if t.Cgroup2 != "" {
		dirs = append(dirs, dir{roots.Cgroup2, t.Cgroup2, "cgroup2"})
	}
	if len(dirs) == 0 {
		return refuse(RefuseNoCgroup, "%s: %s names no cgroup under the configured mounts", t.ID, t.Source)
	}
	procRoot := p.ProcRoot
	if procRoot == "" {
		procRoot = "/proc"
	}
	for _, d := range dirs {
		if d.root == "" || !within(d.root, d.path) {
			return refuse(RefuseNoCgroup, "%s: %s cgroup %s is outside its mount %q", t.ID, d.name, d.path, d.root)
		}
		rel, err := filepath.Rel(filepath.Clean(d.root), filepath.Clean(d.path))
		if err != nil || rel == "." || rel == "" {
			return refuse(RefuseRootCgroup, "%s: %s cgroup %s is the root cgroup", t.ID, d.name, d.path)
		}
		leaf := filepath.Base(rel)
		if !ContainerLeaf(leaf, t.ID) {
			if hostUnit(leaf) {
				return refuse(RefuseHostUnit, "%s: %s cgroup %s is a host unit, not a container's scope", t.ID, d.name, d.path)
			}
			return refuse(RefuseNotNamed, "%s: %s cgroup %s is not named after the container", t.ID, d.name, d.path)
		}
		pids, err := readProcs(filepath.Join(d.path, "cgroup.procs"))
		if err != nil {
			return err // ErrExited when gone
		}
		if len(pids) == 0 {
			return fmt.Errorf("%w: no process left in %s", ErrExited, d.path)
		}
		if !slices.Contains(pids, t.InitPid) {
			return refuse(RefuseInitElsewhere, "%s: init pid %d recorded by %s is not in %s cgroup %s", t.ID, t.InitPid, t.Source, d.name, d.path)
		}
		for _, c := range p.Cgroups {
			if within(d.path, filepath.Join(d.root, c)) {
				return refuse(RefuseProtected, "%s: %s cgroup %s holds protected cgroup %s", t.ID, d.name, d.path, c)
			}
		}
		for _, pid := range p.Pids {
			cg, err := pidCgroup(procRoot, pid, d.name == "freezer")
			if err != nil || cg == "" {
				continue // gone, or not in this hierarchy
			}
			if within(d.path, filepath.Join(d.root, cg)) {
				return refuse(RefuseProtected, "%s: %s cgroup %s holds protected process %d (%s)", t.ID, d.name, d.path, pid, cg)
			}
		}
	}
	if t.InitStart > 0 {
		start, err := procStart(procRoot, t.InitPid)
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return fmt.Errorf("%w: init pid %d is gone", ErrExited, t.InitPid)
			}
			return fmt.Errorf("%w: %v", ErrIO, err)
		}
		if start != t.InitStart {
			return refuse(RefuseInitReused, "%s: pid %d started at %d, the runtime's init started at %d", t.ID, t.InitPid, start, t.InitStart)
		}
	}
	return nil
}

// containerScopes are the names runtimes give a container's cgroup besides
// its bare id.
var containerScopes = []struct{ prefix, suffix string }{
	{"docker-", ".scope"},
	{"cri-containerd-", ".scope"},
	{"crio-", ".scope"},
	{"libpod-", ".scope"},
	{"libpod-", ""},
	{"runc-", ".scope"},
}

// ContainerLeaf reports whether a cgroup directory named leaf is the
// container id's own by the runtimes' conventions: the bare id (not itself
// a systemd unit name) or one of the runtimes' container scopes.
func ContainerLeaf(leaf, id string) bool {
	if !ValidID(id) {
		return false
	}
	if leaf == id {
		return !hostUnit(id)
	}
	for _, s := range containerScopes {
		if leaf == s.prefix+id+s.suffix {
			return true
		}
	}
	return false
}

// hostUnit reports names of systemd units and their session scopes.
func hostUnit(name string) bool {
	for _, s := range []string{".slice", ".service", ".scope", ".mount", ".socket", ".swap", ".target", ".device"} {
		if strings.HasSuffix(name, s) {
			return true
		}
	}
	return false
}

// pidCgroup reads pid's cgroup path: the v1 freezer's when v1, else
// cgroup2's ("0::").
func pidCgroup(procRoot string, pid int, v1 bool) (string, error) {
	b, err := readBounded(filepath.Join(procRoot, strconv.Itoa(pid), "cgroup"))
	if err != nil {
		return "", err
	}
	return cgroupOf(b, v1), nil
}

// cgroupOf picks the freezer (v1) or unified (v2) path of a
// /proc/<pid>/cgroup file.
func cgroupOf(b []byte, v1 bool) string {
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		parts := strings.SplitN(sc.Text(), ":", 3)
		if len(parts) != 3 {
			continue
		}
		if v1 {
			for _, c := range strings.Split(parts[1], ",") {
				if c == "freezer" {
					return parts[2]
				}
			}
		} else if parts[0] == "0" && parts[1] == "" {
			return parts[2]
		}
	}
	return ""
}

// procStart reads a process's start time (clock ticks since boot, field
// 22 of /proc/<pid>/stat), as runc records init_process_start.
func procStart(procRoot string, pid int) (uint64, error) {
	b, err := os.ReadFile(filepath.Join(procRoot, strconv.Itoa(pid), "stat"))
	if err != nil {
		return 0, err
	}
	return parseStatStart(b)
}

func parseStatStart(b []byte) (uint64, error) {
	// comm may hold spaces and parentheses: fields start after the last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, errors.New("stat: no comm")
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state); starttime is field 22.
	if len(f) < 20 {
		return 0, fmt.Errorf("stat: %d fields", len(f)+2)
	}
	return strconv.ParseUint(f[19], 10, 64)
}
