package responder

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containsec/contain/internal/cgroups"
	"github.com/containsec/contain/internal/freezer"
	"github.com/containsec/contain/internal/testenv"
	"github.com/containsec/contain/schemas/containv1"
)

func TestResolveRoots(t *testing.T) {
	hybrid := func() (cgroups.Layout, error) {
		return cgroups.Layout{Mode: cgroups.Hybrid, Cgroup2: "/sys/fs/cgroup/unified", FreezerV1: "/sys/fs/cgroup/freezer"}, nil
	}
	unified := func() (cgroups.Layout, error) {
		return cgroups.Layout{Mode: cgroups.Unified, Cgroup2: "/sys/fs/cgroup"}, nil
	}
	legacy := func() (cgroups.Layout, error) { return cgroups.Layout{Mode: cgroups.Legacy, FreezerV1: "/f"}, nil }
	failing := func() (cgroups.Layout, error) { return cgroups.Layout{}, cgroups.ErrNoCgroups }
	for _, tc := range []struct {
		name                 string
		freezer, cg2, runc   string
		detect               func() (cgroups.Layout, error)
		wantFreezer, wantCg2 string
		wantErr              string
	}{
		{"hybrid detected", "", "", "/run/runc", hybrid, "/sys/fs/cgroup/freezer", "/sys/fs/cgroup/unified", ""},
		{"unified detected", "", "", "/run/runc", unified, "", "/sys/fs/cgroup", ""},
		{"configured wins", "/f", "/c", "/run/runc", failing, "/f", "/c", ""},
		{"v1 off", RootDisabled, "", "/run/runc", hybrid, "", "/sys/fs/cgroup/unified", ""},
		{"detection fails", "", "/c", "/run/runc", failing, "", "", "responder.freezer_root, responder.cgroup2_root: empty, and no cgroup mount"},
		{"nothing on", RootDisabled, "", "", legacy, "", "", "none is on"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := DefaultConfig()
			c.FreezerRoot, c.Cgroup2Root, c.RuncRoot = tc.freezer, tc.cg2, tc.runc
			_, err := c.resolveRoots(tc.detect)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("got %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || c.FreezerRoot != tc.wantFreezer || c.Cgroup2Root != tc.wantCg2 {
				t.Fatalf("got freezer %q cgroup2 %q err %v", c.FreezerRoot, c.Cgroup2Root, err)
			}
		})
	}
	c := DefaultConfig()
	c.Host = "h"
	c.Cgroup2Root = "sys/fs/cgroup"
	if err := c.Validate(); err == nil || !strings.HasPrefix(err.Error(), "responder.cgroup2_root:") {
		t.Fatalf("relative cgroup2_root: %v", err)
	}
	c.Cgroup2Root, c.FreezerRoot = "", "freezer"
	if err := c.Validate(); err == nil || !strings.HasPrefix(err.Error(), "responder.freezer_root:") {
		t.Fatalf("relative freezer_root: %v", err)
	}
}

// unifiedFreeze runs a container with runtime rt in the cgroup2-only
// namespace, has a responder with the default configuration freeze it on
// an alert through cgroup.freeze, and release it.
func unifiedFreeze(t *testing.T, rt string, spec testenv.ContainerSpec) {
	h := start(t, nil)
	if h.r.cfg.Cgroup2Root != "/sys/fs/cgroup" || h.r.cfg.FreezerRoot != "" {
		t.Fatalf("default roots resolved to cgroup2 %q, v1 freezer %q; want /sys/fs/cgroup and none", h.r.cfg.Cgroup2Root, h.r.cfg.FreezerRoot)
	}
	spec.Runtime = rt
	c := testenv.RunContainer(t, "unified-"+rt, spec)
	freeze := filepath.Join("/sys/fs/cgroup", c.ID, "cgroup.freeze")
	if _, err := os.Stat(freeze); err != nil {
		t.Fatalf("%s did not run in unified mode: %v", rt, err)
	}
	frozen := func() bool {
		f, err := c.Cgroup2Frozen()
		if err != nil {
			t.Fatal(err)
		}
		return f
	}
	h.publish(h.alert(c.ID, 0.95))
	a := wantAction(t, h.next(), containv1.Action_TYPE_PAUSE, containv1.Action_RESULT_OK, c.ID)
	if a.Method != freezer.MethodV2Freeze {
		t.Fatalf("method %q, want %s; detail %s", a.Method, freezer.MethodV2Freeze, a.Detail)
	}
	if b, _ := os.ReadFile(freeze); strings.TrimSpace(string(b)) != "1" || !frozen() {
		t.Fatalf("after PAUSE/OK: cgroup.freeze %q, frozen %v", b, frozen())
	}
	if _, err := c.Exec(time.Second, "/bin/true"); err == nil {
		t.Errorf("exec into a frozen container succeeded")
	}
	if _, err := h.release(c.ID, "alice", "test over"); err != nil {
		t.Fatal(err)
	}
	wantAction(t, h.next(), containv1.Action_TYPE_RELEASE, containv1.Action_RESULT_OK, c.ID)
	if frozen() {
		t.Fatal("still frozen after release")
	}
	if out, err := c.Exec(10*time.Second, "/bin/echo", "alive"); err != nil || !strings.Contains(out, "alive") {
		t.Fatalf("exec after release: %v: %s", err, out)
	}
}

// The responder's default configuration on a cgroup2-only host detects
// /sys/fs/cgroup and no v1 freezer, and freezes a runc container (runc
// in unified mode) through cgroup.freeze, then releases it.
func TestUnifiedResponderFreeze(t *testing.T) {
	if !testenv.RunUnified(t) {
		return
	}
	unifiedFreeze(t, "runc", testenv.ContainerSpec{})
}

// crun (it refuses this hybrid host: "cgroups in hybrid mode not
// supported") runs in the cgroup2-only namespace: the responder locates
// its container from /run/crun/<id>/status and freezes it through
// cgroup.freeze.
func TestUnifiedCrunFreeze(t *testing.T) {
	if !testenv.RunUnified(t) {
		return
	}
	unifiedFreeze(t, "crun", testenv.CrunSpec())
}
