package freezer

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/containsec/contain/internal/engines"
	ctrruntime "github.com/containsec/contain/internal/runtime"
)

// Sentinel errors; every error returned by this package wraps one of them.
var (
	// ErrInvalidID: the container id is not a safe single path element.
	ErrInvalidID = errors.New("invalid container id")
	// ErrNotFound: no runtime state and no cgroup for the container.
	ErrNotFound = errors.New("container not found")
	// ErrExited: the container's cgroup holds no process.
	ErrExited = errors.New("container has exited")
	// ErrNoMethod: no configured method applies to the container.
	ErrNoMethod = errors.New("no freeze method applies")
	// ErrTimeout: the freeze or thaw was not observed in time.
	ErrTimeout = errors.New("not verified in time")
	// ErrIO: reading or writing a cgroup or runtime file failed.
	ErrIO = errors.New("cgroup i/o")
	// ErrEngine: a container engine (Docker Engine, containerd) could not
	// be reached or refused, and the container's cgroup still holds
	// processes; the next method may act instead.
	ErrEngine = errors.New("container engine failed")
)

// Roots says where to look for a host's cgroups and runtime state.
type Roots struct {
	// FreezerV1 is the v1 freezer hierarchy, e.g. /sys/fs/cgroup/freezer;
	// empty disables it.
	FreezerV1 string
	// Cgroup2 is the cgroup2 mount, e.g. /sys/fs/cgroup/unified (hybrid) or
	// /sys/fs/cgroup (unified); empty disables it.
	Cgroup2 string
	// RuncRoot is runc's state directory, e.g. /run/runc; empty disables it.
	RuncRoot string
	// CrunRoot is crun's state directory, e.g. /run/crun: <id>/status
	// names the container's cgroup2 path. Empty disables it.
	CrunRoot string
	// DockerRuncRoot is the runc state directory of dockerd's containers,
	// e.g. /run/docker/runtime-runc/moby (<exec-root>/runtime-runc/moby);
	// empty disables it.
	DockerRuncRoot string
	// DockerRoot is dockerd's data root, e.g. /var/lib/docker: a docker
	// container's labels are read from containers/<id>/config.v2.json.
	// Empty disables it.
	DockerRoot string
	// ContainerdRuncRoot holds the runc state of containerd's containers,
	// one directory per namespace: <root>/<namespace>/<id>/state.json, e.g.
	// /run/containerd/runc. Empty disables it.
	ContainerdRuncRoot string
}

// Runtimes a Target can carry.
const (
	// RuntimeRunc: a container of the runc state directory Roots.RuncRoot.
	RuntimeRunc = "runc"
	// RuntimeCrun: a container of crun's state directory Roots.CrunRoot
	// (crun runs on cgroup2-only hosts; it refuses hybrid mode).
	RuntimeCrun = "crun"
	// RuntimeDocker: a container of dockerd (its runc state, or its cgroup
	// /docker/<id> or docker-<id>.scope).
	RuntimeDocker = "docker"
	// RuntimeContainerd: a container of containerd, in Target.Namespace
	// (its runc state <ns>/<id>, or its cgroup /<ns>/<id> or
	// cri-containerd-<id>.scope, namespace k8s.io).
	RuntimeContainerd = "containerd"
)

// Target is a located container.
type Target struct {
	ID string
	// Runtime is RuntimeRunc, RuntimeCrun, RuntimeDocker or RuntimeContainerd when the
	// runtime's state or the cgroup's name tells, "" when the container was
	// found by searching the cgroup mounts and its path does not tell.
	Runtime string
	// Namespace is the containerd namespace of a RuntimeContainerd target.
	Namespace string
	// FreezerV1 and Cgroup2 are the container's cgroup directories; either
	// may be empty.
	FreezerV1 string
	Cgroup2   string
	// InitPid, Created, Rootfs, Bundle and Labels come from the runtime
	// state when known.
	InitPid int
	// InitStart is the init process's start time in clock ticks since
	// boot, as runc records it (0: unknown); Prove compares it with
	// /proc/<pid>/stat so a reused pid is not taken for the init.
	InitStart uint64
	// Source names what knows the container: its runtime state file, or
	// "docker-api" when the engine answered; "" means no runtime knows it
	// and Prove refuses it.
	Source  string
	Created time.Time
	Rootfs  string
	Bundle  string
	Labels  map[string]string
}

// ProcsFile is the cgroup.procs file of the target's cgroup (v2 preferred),
// or "" when no cgroup is known.
func (t *Target) ProcsFile() string {
	switch {
	case t.Cgroup2 != "":
		return filepath.Join(t.Cgroup2, "cgroup.procs")
	case t.FreezerV1 != "":
		return filepath.Join(t.FreezerV1, "cgroup.procs")
	}
	return ""
}

// ValidID reports whether id can name a container directory: non-empty,
// at most 1024 bytes, of [A-Za-z0-9_+.-], and not "." or "..". runc
// accepts the same set.
func ValidID(id string) bool {
	if id == "" || len(id) > 1024 || id == "." || id == ".." {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '_', c == '+', c == '.', c == '-':
		default:
			return false
		}
	}
	return true
}

// RuncState is the part of runc's state.json this package uses.
type RuncState struct {
	ID               string            `json:"id"`
	InitProcessPid   int               `json:"init_process_pid"`
	InitProcessStart uint64            `json:"init_process_start"`
	Created          time.Time         `json:"created"`
	CgroupPaths      map[string]string `json:"cgroup_paths"`
	Config           struct {
		Rootfs string   `json:"rootfs"`
		Labels []string `json:"labels"`
	} `json:"config"`
}

// maxStateBytes bounds the runtime state file read.
const maxStateBytes = 8 << 20

// ParseRuncState decodes runc's state.json. It is pure and safe on any
// input.
func ParseRuncState(data []byte) (*RuncState, error) {
	if len(data) > maxStateBytes {
		return nil, fmt.Errorf("runc state: %d bytes exceeds %d", len(data), maxStateBytes)
	}
	var s RuncState
	if err := json.Unmarshal(data, &s); err != nil {
		return nil, fmt.Errorf("runc state: %w", err)
	}
	if s.ID == "" {
		return nil, errors.New("runc state: no id")
	}
	return &s, nil
}

// Labels turns runc's "key=value" labels (OCI annotations plus
// bundle=<dir>) into a map.
func (s *RuncState) LabelMap() map[string]string {
	m := make(map[string]string, len(s.Config.Labels))
	for _, l := range s.Config.Labels {
		k, v, _ := strings.Cut(l, "=")
		m[k] = v
	}
	return m
}

// Locate finds the container id's cgroups in the runtimes' state only
// (runc's root, then docker's runc root, then containerd's per-namespace
// runc roots, then crun's root): the cgroup paths, init pid and start time are the ones the
// runtime recorded. The cgroup tree is never searched by name (a host unit
// or a hand-made directory named like an id would be found). An id no
// runtime knows is ErrNotFound. Call Prove before acting on the Target.
func Locate(roots Roots, id string) (*Target, error) {
	if !ValidID(id) {
		return nil, fmt.Errorf("%w: %q", ErrInvalidID, id)
	}
	type source struct{ dir, runtime, ns string }
	sources := []source{{roots.RuncRoot, RuntimeRunc, ""}, {roots.DockerRuncRoot, RuntimeDocker, ""}}
	if roots.ContainerdRuncRoot != "" {
		nss, _ := os.ReadDir(roots.ContainerdRuncRoot)
		for _, ns := range nss {
			if ns.IsDir() && ValidID(ns.Name()) {
				rt, n := RuntimeContainerd, ns.Name()
				if n == engines.NamespaceMoby {
					rt, n = RuntimeDocker, "" // dockerd's containers: docker's API owns them
				}
				sources = append(sources, source{filepath.Join(roots.ContainerdRuncRoot, ns.Name()), rt, n})
			}
		}
	}
	for _, src := range sources {
		if src.dir == "" {
			continue
		}
		t, err := locateRunc(roots, src.dir, id)
		if err == nil {
			t.Runtime, t.Namespace = src.runtime, src.ns
			if t.Runtime == RuntimeDocker {
				dockerLabels(roots, t)
			}
			return t, nil
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("%w: %v", ErrIO, err)
		}
	}
	if roots.CrunRoot != "" {
		t, err := locateCrun(roots, id)
		if err == nil {
			return t, nil
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("%w: %v", ErrIO, err)
		}
	}
	return nil, fmt.Errorf("%w: %s: no runtime state for it (runc %q, docker %q, containerd %q, crun %q)", ErrNotFound, id, roots.RuncRoot, roots.DockerRuncRoot, roots.ContainerdRuncRoot, roots.CrunRoot)
}

// LocateByPid makes the Target of container id from the init pid an engine
// reported (e.g. the Docker Engine API's State.Pid, when dockerd's runc
// state directory is not configured): its cgroups are those of the pid
// (/proc/<pid>/cgroup), source names the engine. Prove still checks that
// the cgroup is named after the container and holds the pid.
func LocateByPid(roots Roots, procRoot, id, runtime, source string, pid int) (*Target, error) {
	if !ValidID(id) {
		return nil, fmt.Errorf("%w: %q", ErrInvalidID, id)
	}
	if pid <= 0 {
		return nil, fmt.Errorf("%w: %s: %s reports no pid", ErrExited, id, source)
	}
	if procRoot == "" {
		procRoot = "/proc"
	}
	b, err := readBounded(filepath.Join(procRoot, strconv.Itoa(pid), "cgroup"))
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("%w: %s: pid %d is gone", ErrExited, id, pid)
		}
		return nil, fmt.Errorf("%w: %v", ErrIO, err)
	}
	t := &Target{ID: id, Runtime: runtime, Source: source, InitPid: pid}
	if roots.FreezerV1 != "" {
		if p := cgroupOf(b, true); p != "" {
			t.FreezerV1 = filepath.Join(roots.FreezerV1, p)
		}
	}
	if roots.Cgroup2 != "" {
		if p := cgroupOf(b, false); p != "" {
			t.Cgroup2 = filepath.Join(roots.Cgroup2, p)
		}
	}
	if start, err := procStart(procRoot, pid); err == nil {
		t.InitStart = start
	}
	return t, nil
}

// dockerLabels merges the docker container's labels (dockerd's
// containers/<id>/config.v2.json Config.Labels, which are not OCI
// annotations) into t.Labels, so policy sees `docker run --label`. A
// missing or unreadable file leaves t as it is.
func dockerLabels(roots Roots, t *Target) {
	if roots.DockerRoot == "" {
		return
	}
	b, err := readBounded(filepath.Join(roots.DockerRoot, "containers", t.ID, "config.v2.json"))
	if err != nil {
		return
	}
	c, err := ctrruntime.ParseDockerConfig(b)
	if err != nil {
		return
	}
	if t.Labels == nil && len(c.Config.Labels) > 0 {
		t.Labels = map[string]string{}
	}
	for k, v := range c.Config.Labels {
		if _, ok := t.Labels[k]; !ok {
			t.Labels[k] = v
		}
	}
}

// readBounded reads at most maxStateBytes of file p.
func readBounded(p string) ([]byte, error) { return ctrruntime.ReadFileBounded(p, maxStateBytes) }

func locateRunc(roots Roots, stateDir, id string) (*Target, error) {
	data, err := readBounded(filepath.Join(stateDir, id, "state.json"))
	if err != nil {
		return nil, err
	}
	st, err := ParseRuncState(data)
	if err != nil {
		return nil, err
	}
	t := &Target{
		ID:        id,
		Runtime:   RuntimeRunc,
		InitPid:   st.InitProcessPid,
		InitStart: st.InitProcessStart,
		Source:    filepath.Join(stateDir, id, "state.json"),
		Created:   st.Created,
		Rootfs:    st.Config.Rootfs,
		Labels:    st.LabelMap(),
	}
	t.Bundle = t.Labels["bundle"]
	if p := st.CgroupPaths["freezer"]; p != "" && roots.FreezerV1 != "" && within(roots.FreezerV1, p) {
		t.FreezerV1 = p
	}
	// runc names the cgroup2 path "" in hybrid mode and "" or "unified"
	// depending on version.
	for _, k := range []string{"", "unified"} {
		if p := st.CgroupPaths[k]; p != "" && roots.Cgroup2 != "" && within(roots.Cgroup2, p) {
			t.Cgroup2 = p
			break
		}
	}
	return t, nil
}

// CrunStatus is the part of crun's <root>/<id>/status this package uses.
type CrunStatus struct {
	Pid       int       `json:"pid"`
	StartTime uint64    `json:"process-start-time"`
	Cgroup    string    `json:"cgroup-path"` // relative to the cgroup2 mount
	Bundle    string    `json:"bundle"`
	Rootfs    string    `json:"rootfs"` // may be relative to Bundle
	Created   time.Time `json:"created"`
}

// ParseCrunStatus decodes crun's status file. It is pure and safe on any
// input.
func ParseCrunStatus(data []byte) (*CrunStatus, error) {
	if len(data) > maxStateBytes {
		return nil, fmt.Errorf("crun status: %d bytes exceeds %d", len(data), maxStateBytes)
	}
	var s CrunStatus
	if err := json.Unmarshal(data, &s); err != nil {
		return nil, fmt.Errorf("crun status: %w", err)
	}
	if s.Pid < 0 {
		return nil, fmt.Errorf("crun status: pid %d", s.Pid)
	}
	return &s, nil
}

// locateCrun reads crun's status of id: crun keeps the cgroup2 path
// relative to the mount (it runs only where cgroup2 is the only
// hierarchy, so there is no v1 freezer path).
func locateCrun(roots Roots, id string) (*Target, error) {
	p := filepath.Join(roots.CrunRoot, id, "status")
	data, err := readBounded(p)
	if err != nil {
		return nil, err
	}
	st, err := ParseCrunStatus(data)
	if err != nil {
		return nil, err
	}
	t := &Target{
		ID:        id,
		Runtime:   RuntimeCrun,
		InitPid:   st.Pid,
		InitStart: st.StartTime,
		Source:    p,
		Created:   st.Created,
		Bundle:    st.Bundle,
		Rootfs:    st.Rootfs,
	}
	if t.Rootfs != "" && !filepath.IsAbs(t.Rootfs) && t.Bundle != "" {
		t.Rootfs = filepath.Join(t.Bundle, t.Rootfs)
	}
	if st.Cgroup != "" && roots.Cgroup2 != "" {
		if d := filepath.Join(roots.Cgroup2, filepath.Clean("/"+st.Cgroup)); within(roots.Cgroup2, d) {
			t.Cgroup2 = d
		}
	}
	if t.Bundle != "" {
		if b, err := readBounded(filepath.Join(t.Bundle, "config.json")); err == nil {
			var cfg struct {
				Annotations map[string]string `json:"annotations"`
			}
			if json.Unmarshal(b, &cfg) == nil && len(cfg.Annotations) > 0 {
				t.Labels = cfg.Annotations
			}
		}
	}
	return t, nil
}

// within reports whether p is root or below it (paths from the state file
// must not point elsewhere).
func within(root, p string) bool {
	p = filepath.Clean(p)
	root = filepath.Clean(root)
	return p == root || strings.HasPrefix(p, root+string(filepath.Separator))
}
