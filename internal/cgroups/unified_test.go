package cgroups_test

import (
	"testing"

	"golang.org/x/sys/unix"

	"github.com/containsec/contain/internal/cgroups"
	"github.com/containsec/contain/internal/testenv"
)

// statfsMode says the layout as runc does (statfs magic of /sys/fs/cgroup
// and /sys/fs/cgroup/unified): the oracle Detect is checked against.
func statfsMode(t *testing.T) cgroups.Mode {
	var st unix.Statfs_t
	if err := unix.Statfs("/sys/fs/cgroup", &st); err != nil {
		t.Fatal(err)
	}
	if st.Type == unix.CGROUP2_SUPER_MAGIC {
		return cgroups.Unified
	}
	if unix.Statfs("/sys/fs/cgroup/unified", &st) == nil && st.Type == unix.CGROUP2_SUPER_MAGIC {
		return cgroups.Hybrid
	}
	return cgroups.Legacy
}

// Outside, detection agrees with statfs (this machine: hybrid); inside
// RunUnified's namespace, where cgroup2 is mounted over the hybrid tree,
// it says unified at /sys/fs/cgroup and sees no v1 freezer.
func TestUnifiedLayoutDetected(t *testing.T) {
	l, err := cgroups.Detect()
	if err != nil {
		t.Fatal(err)
	}
	if want := statfsMode(t); l.Mode != want {
		t.Fatalf("detected %v, statfs says %s", l, want)
	}
	if !testenv.InUnified() {
		t.Logf("outside: %v", l)
		if l.Mode == cgroups.Unified {
			t.Log("host is cgroup2-only already")
		}
	}
	if !testenv.RunUnified(t) {
		return
	}
	want := cgroups.Layout{Mode: cgroups.Unified, Cgroup2: "/sys/fs/cgroup"}
	if l != want {
		t.Fatalf("inside: got %v, want %v", l, want)
	}
	if _, err := cgroups.ID(l.Cgroup2); err != nil {
		t.Fatal(err)
	}
	t.Logf("inside: %v", l)
}
