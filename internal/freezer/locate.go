package freezer

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"
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
}

// Target is a located container.
type Target struct {
	ID string
	// Runtime is "runc" when the runtime's state was found, "" when the
	// container was found by searching the cgroup mounts.
	Runtime string
	// FreezerV1 and Cgroup2 are the container's cgroup directories; either
	// may be empty.
	FreezerV1 string
	Cgroup2   string
	// InitPid, Created, Rootfs, Bundle and Labels come from the runtime
	// state when known.
	InitPid int
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

// Locate finds the container id's cgroups: from runc's state first, else
// by searching the cgroup mounts.
func Locate(roots Roots, id string) (*Target, error) {
	if !ValidID(id) {
		return nil, fmt.Errorf("%w: %q", ErrInvalidID, id)
	}
	if roots.RuncRoot != "" {
		t, err := locateRunc(roots, id)
		if err == nil {
			return t, nil
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("%w: %v", ErrIO, err)
		}
	}
	t := &Target{ID: id}
	if roots.FreezerV1 != "" {
		t.FreezerV1 = search(roots.FreezerV1, id)
	}
	if roots.Cgroup2 != "" {
		t.Cgroup2 = search(roots.Cgroup2, id)
	}
	if t.FreezerV1 == "" && t.Cgroup2 == "" {
		return nil, fmt.Errorf("%w: %s: no runtime state in %s and no cgroup named after it", ErrNotFound, id, roots.RuncRoot)
	}
	return t, nil
}

func locateRunc(roots Roots, id string) (*Target, error) {
	data, err := os.ReadFile(filepath.Join(roots.RuncRoot, id, "state.json"))
	if err != nil {
		return nil, err
	}
	st, err := ParseRuncState(data)
	if err != nil {
		return nil, err
	}
	t := &Target{
		ID:      id,
		Runtime: "runc",
		InitPid: st.InitProcessPid,
		Created: st.Created,
		Rootfs:  st.Config.Rootfs,
		Labels:  st.LabelMap(),
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

// within reports whether p is root or below it (paths from the state file
// must not point elsewhere).
func within(root, p string) bool {
	p = filepath.Clean(p)
	root = filepath.Clean(root)
	return p == root || strings.HasPrefix(p, root+string(filepath.Separator))
}

// Naming conventions of container cgroup directories: runc uses the id,
// systemd-driven runtimes wrap it.
var dirPatterns = []struct{ prefix, suffix string }{
	{"", ""},
	{"docker-", ".scope"},
	{"cri-containerd-", ".scope"},
	{"crio-", ".scope"},
	{"libpod-", ".scope"},
}

func matchesID(name, id string) bool {
	for _, p := range dirPatterns {
		if name == p.prefix+id+p.suffix {
			return true
		}
	}
	return false
}

// searchMaxDepth and searchMaxDirs bound the fallback search.
const (
	searchMaxDepth = 5
	searchMaxDirs  = 20000
)

// search returns the first directory under root (breadth-first) named after
// id, or "".
func search(root, id string) string {
	level := []string{root}
	seen := 0
	for depth := 0; depth < searchMaxDepth && len(level) > 0; depth++ {
		var next []string
		for _, dir := range level {
			ents, err := os.ReadDir(dir)
			if err != nil {
				continue
			}
			for _, e := range ents {
				if !e.IsDir() {
					continue
				}
				p := filepath.Join(dir, e.Name())
				if matchesID(e.Name(), id) {
					return p
				}
				if seen++; seen > searchMaxDirs {
					return ""
				}
				next = append(next, p)
			}
		}
		level = next
	}
	return ""
}
