package cgroups

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// Mode is a host's cgroup layout.
type Mode string

// Layouts a host can have.
const (
	// Unified: cgroup2 only, mounted at /sys/fs/cgroup (today's Debian,
	// Ubuntu, Fedora, RHEL). runc and crun use cgroup.freeze.
	Unified Mode = "unified"
	// Hybrid: v1 controllers (the freezer among them) beside a cgroup2
	// mount, usually /sys/fs/cgroup/unified, holding no controllers.
	Hybrid Mode = "hybrid"
	// Legacy: v1 hierarchies only, no cgroup2 mount.
	Legacy Mode = "legacy"
)

// Layout is what a mount table says of the cgroup hierarchies: the cgroup2
// mount (whose inodes are the ids bpf_get_current_cgroup_id returns) and
// the v1 freezer hierarchy, when mounted and visible.
type Layout struct {
	Mode Mode
	// Cgroup2 is the cgroup2 mount point; "" in Legacy mode.
	Cgroup2 string
	// FreezerV1 is the v1 freezer hierarchy's mount point; "" when none
	// (always in Unified mode).
	FreezerV1 string
}

// String is the layout as a log line says it.
func (l Layout) String() string {
	return fmt.Sprintf("%s (cgroup2 %q, v1 freezer %q)", l.Mode, l.Cgroup2, l.FreezerV1)
}

// MountinfoPath is the mount table Detect reads.
const MountinfoPath = "/proc/self/mountinfo"

// ErrNoCgroups: the mount table shows no cgroup hierarchy.
var ErrNoCgroups = errors.New("no cgroup mount")

// maxMountinfoBytes bounds the mount table read and parsed.
const maxMountinfoBytes = 16 << 20

// Detect reads this process's mount table and says which layout it shows.
func Detect() (Layout, error) { return DetectFrom(MountinfoPath) }

// DetectFrom reads the mount table at path (a /proc/<pid>/mountinfo).
func DetectFrom(path string) (Layout, error) {
	f, err := os.Open(path)
	if err != nil {
		return Layout{}, fmt.Errorf("cgroup layout: %w", err)
	}
	defer f.Close()
	var buf bytes.Buffer
	if _, err := buf.ReadFrom(&limitReader{f: f, n: maxMountinfoBytes + 1}); err != nil {
		return Layout{}, fmt.Errorf("cgroup layout: reading %s: %w", path, err)
	}
	l, err := ParseMountinfo(buf.Bytes())
	if err != nil {
		return Layout{}, fmt.Errorf("cgroup layout: %s: %w", path, err)
	}
	return l, nil
}

type limitReader struct {
	f *os.File
	n int
}

func (r *limitReader) Read(p []byte) (int, error) {
	if r.n <= 0 {
		return 0, errors.New("mount table too large")
	}
	if len(p) > r.n {
		p = p[:r.n]
	}
	n, err := r.f.Read(p)
	r.n -= n
	return n, err
}

// mount is one line of a mount table.
type mount struct {
	id, parent int
	point      string
	fstype     string
	super      string // super options
}

// ParseMountinfo says which cgroup layout a mount table (the format of
// /proc/<pid>/mountinfo, proc(5)) shows. Only mounts that are visible
// count: one covered by a later mount on the same point or on a directory
// above it (cgroup2 mounted over /sys/fs/cgroup hides the v1 hierarchies
// below) is ignored. Among several cgroup2 mounts /sys/fs/cgroup wins,
// then /sys/fs/cgroup/unified, then the first. It is pure and safe on any
// input; a malformed line is an error naming its number.
func ParseMountinfo(data []byte) (Layout, error) {
	if len(data) > maxMountinfoBytes {
		return Layout{}, fmt.Errorf("mount table: %d bytes exceeds %d", len(data), maxMountinfoBytes)
	}
	var all []mount
	for i, line := range bytes.Split(data, []byte{'\n'}) {
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		m, err := parseMountLine(string(line))
		if err != nil {
			return Layout{}, fmt.Errorf("mount table line %d: %w", i+1, err)
		}
		all = append(all, m)
	}
	byID := make(map[int]int, len(all)) // id -> index of its last line
	for i, m := range all {
		byID[m.id] = i
	}
	var l Layout
	var v1, v2 []string
	for i, m := range all {
		if m.fstype != "cgroup" && m.fstype != "cgroup2" {
			continue
		}
		if hidden(all, byID, i) {
			continue
		}
		if m.fstype == "cgroup2" {
			v2 = append(v2, m.point)
			continue
		}
		v1 = append(v1, m.point)
		if l.FreezerV1 == "" && hasOption(m.super, "freezer") {
			l.FreezerV1 = m.point
		}
	}
	switch {
	case len(v2) == 0 && len(v1) == 0:
		return Layout{}, ErrNoCgroups
	case len(v2) == 0:
		l.Mode = Legacy
		return l, nil
	case len(v1) == 0:
		l.Mode = Unified
	default:
		l.Mode = Hybrid
	}
	l.Cgroup2 = v2[0]
	for _, want := range []string{"/sys/fs/cgroup/unified", "/sys/fs/cgroup"} {
		for _, p := range v2 {
			if p == want {
				l.Cgroup2 = p
			}
		}
	}
	return l, nil
}

// hidden reports whether a later mount covers mount i: one on the same
// point or on a directory above it that is not i's ancestor.
func hidden(all []mount, byID map[int]int, i int) bool {
	m := all[i]
	for j := i + 1; j < len(all); j++ {
		n := all[j]
		if n.point != m.point && !under(m.point, n.point) {
			continue
		}
		if !ancestor(all, byID, i, n.id) {
			return true
		}
	}
	return false
}

// ancestor reports whether mount id is a parent (transitively) of mount i.
func ancestor(all []mount, byID map[int]int, i, id int) bool {
	for steps := 0; steps < len(all); steps++ {
		p := all[i].parent
		if p == id {
			return true
		}
		j, ok := byID[p]
		if !ok || j == i {
			return false
		}
		i = j
	}
	return false
}

// under reports whether path p is strictly below directory dir.
func under(p, dir string) bool {
	if dir == "/" {
		return p != "/"
	}
	return strings.HasPrefix(p, dir+"/")
}

func hasOption(opts, want string) bool {
	for _, o := range strings.Split(opts, ",") {
		if o == want {
			return true
		}
	}
	return false
}

// parseMountLine parses "id parent maj:min root point opts [optional...] -
// fstype source superopts".
func parseMountLine(line string) (mount, error) {
	f := strings.Fields(line)
	sep := -1
	for i := 6; i < len(f); i++ {
		if f[i] == "-" {
			sep = i
			break
		}
	}
	if len(f) < 7 || sep < 0 || sep+2 >= len(f) {
		return mount{}, errors.New("want: id parent major:minor root mount-point options ... - fstype source super-options")
	}
	var m mount
	var err error
	if m.id, err = strconv.Atoi(f[0]); err != nil || m.id < 0 {
		return mount{}, fmt.Errorf("mount id %q: not a number", f[0])
	}
	if m.parent, err = strconv.Atoi(f[1]); err != nil || m.parent < 0 {
		return mount{}, fmt.Errorf("parent id %q: not a number", f[1])
	}
	if m.point, err = unescape(f[4]); err != nil {
		return mount{}, fmt.Errorf("mount point: %w", err)
	}
	if !strings.HasPrefix(m.point, "/") {
		return mount{}, fmt.Errorf("mount point %q: not absolute", m.point)
	}
	m.fstype = f[sep+1]
	if sep+3 < len(f) {
		m.super = f[sep+3]
	}
	return m, nil
}

// unescape decodes the kernel's octal escapes (\040 for a space) of a
// mount table path.
func unescape(s string) (string, error) {
	if !strings.Contains(s, `\`) {
		return s, nil
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '\\' {
			b.WriteByte(s[i])
			continue
		}
		if i+4 > len(s) {
			return "", fmt.Errorf("%q: truncated escape", s)
		}
		v, err := strconv.ParseUint(s[i+1:i+4], 8, 8)
		if err != nil {
			return "", fmt.Errorf("%q: bad escape %q", s, s[i:i+4])
		}
		b.WriteByte(byte(v))
		i += 3
	}
	return b.String(), nil
}
