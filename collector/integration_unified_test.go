package collector

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/containsec/contain/internal/testenv"
	"github.com/containsec/contain/schemas/containv1"
)

// On a cgroup2-only host (this machine's cgroup2 hierarchy mounted alone
// on /sys/fs/cgroup in a private mount namespace) the collector, started
// with its default configuration, finds cgroup2 at /sys/fs/cgroup by
// itself, and announces a runc container (runc in unified mode: its
// cgroup /sys/fs/cgroup/<id> has cgroup.freeze) with its cgroup path and
// id before the container's exec.
func TestUnifiedCollector(t *testing.T) {
	if !testenv.RunUnified(t) {
		return
	}
	c, js, _ := startCollector(t, nil)
	if c.cfg.CgroupRoot != "/sys/fs/cgroup" {
		t.Fatalf("default cgroup root detected as %q, want /sys/fs/cgroup", c.cfg.CgroupRoot)
	}
	raw := consumeRaw(t, js)
	ann := map[string]string{"org.opencontainers.image.ref.name": "busybox:contain-unified"}
	ctr := testenv.RunContainer(t, "colunified", testenv.ContainerSpec{Annotations: ann})
	if _, err := os.Stat(filepath.Join("/sys/fs/cgroup", ctr.ID, "cgroup.freeze")); err != nil {
		t.Fatalf("runc did not run in unified mode: %v", err)
	}
	cgid, err := ctr.CgroupID()
	if err != nil {
		t.Fatal(err)
	}
	if out, err := ctr.Exec(10*time.Second, "/bin/sh", "-c", "echo unified"); err != nil {
		t.Fatalf("runc exec: %v: %s", err, out)
	}
	evs := raw.waitFor(t, 10*time.Second, "the exec of /bin/sh -c 'echo unified'", func(evs []*containv1.Event) bool {
		return slices.ContainsFunc(evs, func(ev *containv1.Event) bool {
			return isExec(ev, ctr.ID, "/bin/sh") && slices.Equal(ev.GetExec().Argv, []string{"/bin/sh", "-c", "echo unified"})
		})
	})
	infoAt, execAt := -1, -1
	for i, ev := range evs {
		if ev.ContainerId != ctr.ID {
			continue
		}
		if ev.CgroupId != cgid {
			t.Fatalf("event %d (%s): cgroup id %d, want %d (inode of /sys/fs/cgroup/%s)", i, ev.Kind, ev.CgroupId, cgid, ctr.ID)
		}
		if ev.Kind == containv1.Kind_KIND_CONTAINER && infoAt < 0 {
			infoAt = i
		}
		if isExec(ev, ctr.ID, "/bin/sh") && execAt < 0 && slices.Equal(ev.GetExec().Argv, []string{"/bin/sh", "-c", "echo unified"}) {
			execAt = i
		}
	}
	if infoAt < 0 || infoAt > execAt {
		t.Fatalf("KIND_CONTAINER at %d, exec at %d: want the announcement first", infoAt, execAt)
	}
	ci := evs[infoAt].GetContainer()
	if ci.Runtime != "runc" || ci.CgroupPath != "/"+ctr.ID || ci.Bundle != ctr.Bundle || ci.InitPid == 0 {
		t.Fatalf("container info: %+v", ci)
	}
	if ci.Labels["org.opencontainers.image.ref.name"] != "busybox:contain-unified" {
		t.Fatalf("labels: %v", ci.Labels)
	}
}

// crun refuses this hybrid host ("cgroups in hybrid mode not supported")
// and runs on a cgroup2-only one: there the collector identifies its
// container from crun's state (/run/crun/<id>/status and the bundle's
// annotations) and announces it as runtime crun before its exec.
func TestUnifiedCrun(t *testing.T) {
	if !testenv.RunUnified(t) {
		return
	}
	_, js, _ := startCollector(t, nil)
	raw := consumeRaw(t, js)
	spec := testenv.CrunSpec()
	spec.Annotations = map[string]string{"org.opencontainers.image.ref.name": "busybox:contain-crun", "contain.test/owner": "crun"}
	ctr := testenv.RunContainer(t, "colcrun", spec)
	if _, err := os.Stat(filepath.Join("/run/crun", ctr.ID, "status")); err != nil {
		t.Fatalf("no crun state: %v", err)
	}
	cgid, err := ctr.CgroupID()
	if err != nil {
		t.Fatal(err)
	}
	if out, err := ctr.Exec(10*time.Second, "/bin/sh", "-c", "echo crun"); err != nil {
		t.Fatalf("crun exec: %v: %s", err, out)
	}
	evs := raw.waitFor(t, 10*time.Second, "the exec of /bin/sh -c 'echo crun'", func(evs []*containv1.Event) bool {
		return slices.ContainsFunc(evs, func(ev *containv1.Event) bool {
			return isExec(ev, ctr.ID, "/bin/sh") && slices.Equal(ev.GetExec().Argv, []string{"/bin/sh", "-c", "echo crun"})
		})
	})
	var info *containv1.Event
	for _, ev := range evs {
		if ev.ContainerId == ctr.ID && ev.Kind == containv1.Kind_KIND_CONTAINER {
			info = ev
			break
		}
	}
	if info == nil {
		t.Fatal("no KIND_CONTAINER for the crun container")
	}
	ci := info.GetContainer()
	cgPath, _ := ctr.Cgroup2Path()
	if ci.Runtime != "crun" || ci.CgroupPath != cgPath || ci.Bundle != ctr.Bundle || ci.InitPid == 0 || info.CgroupId != cgid {
		t.Fatalf("container info: %+v (cgroup id %d, want %d; cgroup %s)", ci, info.CgroupId, cgid, cgPath)
	}
	for k, v := range spec.Annotations {
		if ci.Labels[k] != v {
			t.Fatalf("label %q = %q, want %q (labels %v)", k, ci.Labels[k], v, ci.Labels)
		}
	}
}
