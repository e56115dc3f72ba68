package cgroups

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseMountinfoFixtures(t *testing.T) {
	for _, tc := range []struct {
		file string
		want Layout
	}{
		// This machine: v1 controllers beside cgroup2 at /sys/fs/cgroup/unified.
		{"mountinfo-hybrid", Layout{Mode: Hybrid, Cgroup2: "/sys/fs/cgroup/unified", FreezerV1: "/sys/fs/cgroup/freezer"}},
		// Debian 12: cgroup2 only, at /sys/fs/cgroup.
		{"mountinfo-unified", Layout{Mode: Unified, Cgroup2: "/sys/fs/cgroup"}},
		// RHEL 7: v1 only.
		{"mountinfo-legacy", Layout{Mode: Legacy, FreezerV1: "/sys/fs/cgroup/freezer"}},
		// This machine in `unshare -m` with cgroup2 mounted over
		// /sys/fs/cgroup: the v1 mounts below are hidden.
		{"mountinfo-unified-over-hybrid", Layout{Mode: Unified, Cgroup2: "/sys/fs/cgroup"}},
	} {
		t.Run(tc.file, func(t *testing.T) {
			b, err := os.ReadFile(filepath.Join("testdata", tc.file))
			if err != nil {
				t.Fatal(err)
			}
			got, err := ParseMountinfo(b)
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
		})
	}
}

func TestParseMountinfoErrors(t *testing.T) {
	for _, tc := range []struct {
		in, want string
	}{
		{"30 22 0:27 / /sys/fs/cgroup rw,relatime tmpfs tmpfs rw\n", "line 1"},
		{"22 0 8:1 / / rw - ext4 /dev/sda1 rw\nx 22 0:27 / /a rw - tmpfs tmpfs rw\n", "line 2: mount id"},
		{"22 0 8:1 / / rw - ext4 /dev/sda1 rw\n23 22 0:27 / /a\\04 rw - tmpfs tmpfs rw\n", "mount point"},
		{"22 0 8:1 / rel rw - ext4 /dev/sda1 rw\n", "not absolute"},
	} {
		_, err := ParseMountinfo([]byte(tc.in))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: got %v, want an error with %q", tc.in, err, tc.want)
		}
	}
	if _, err := ParseMountinfo([]byte("22 0 8:1 / / rw - ext4 /dev/sda1 rw\n")); !errors.Is(err, ErrNoCgroups) {
		t.Fatalf("no cgroups: got %v", err)
	}
}

// A cgroup2 mount covered by a later mount on a directory above it is not
// the one to use; a mount on a directory below it does not hide it.
func TestParseMountinfoHidden(t *testing.T) {
	in := "1 0 8:1 / / rw - ext4 /dev/sda1 rw\n" +
		"2 1 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n" +
		"3 2 0:27 / /sys/fs/cgroup/sub rw - tmpfs tmpfs rw\n" +
		"4 1 0:28 / /sys/fs rw - tmpfs tmpfs rw\n" +
		"5 4 0:29 / /sys/fs/cgroup/freezer rw - cgroup cgroup rw,freezer\n"
	got, err := ParseMountinfo([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	if want := (Layout{Mode: Legacy, FreezerV1: "/sys/fs/cgroup/freezer"}); got != want {
		t.Fatalf("got %v, want %v", got, want)
	}
}

func TestDetectHere(t *testing.T) {
	l, err := Detect()
	if err != nil {
		t.Fatal(err)
	}
	if l.Cgroup2 != "" {
		if _, err := ID(l.Cgroup2); err != nil {
			t.Fatalf("%v: %v", l, err)
		}
	}
	t.Logf("layout: %v", l)
}

func FuzzParseMountinfo(f *testing.F) {
	for _, name := range []string{"mountinfo-hybrid", "mountinfo-unified", "mountinfo-legacy", "mountinfo-unified-over-hybrid"} {
		b, err := os.ReadFile(filepath.Join("testdata", name))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte("1 1 0:1 / / rw - cgroup2 x rw\n1 1 0:1 / / rw - cgroup x freezer\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		l, err := ParseMountinfo(data)
		if err != nil {
			return
		}
		switch l.Mode {
		case Unified:
			if l.Cgroup2 == "" || l.FreezerV1 != "" {
				t.Fatalf("unified %v", l)
			}
		case Hybrid:
			if l.Cgroup2 == "" {
				t.Fatalf("hybrid %v", l)
			}
		case Legacy:
			if l.Cgroup2 != "" {
				t.Fatalf("legacy %v", l)
			}
		default:
			t.Fatalf("mode %q", l.Mode)
		}
	})
}
