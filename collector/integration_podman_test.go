package collector

import (
	"testing"
	"time"

	"github.com/containsec/contain/internal/runtime"
	"github.com/containsec/contain/internal/testenv"
	"github.com/containsec/contain/schemas/containv1"
)

// TestIntegrationPodman: a real podman container (root, cgroupfs manager:
// cgroup /libpod_parent/libpod-<id>) is announced by the default
// collector configuration, which reads podman's default storage roots,
// with runtime podman, its name, image reference and id and its `--label`
// labels (from libpod's database) and annotations; its first execs, run
// while it was identified, follow the announcement with nothing lost, and
// so does a `podman exec` into it.
func TestIntegrationPodman(t *testing.T) {
	p := testenv.RequirePodman(t)
	cfgRoot := testenv.Cgroup2Root
	_, js, _ := startCollector(t, nil)
	raw := consumeRaw(t, js)
	imageID, err := p.Run("image", "inspect", "-f", "{{.Id}}", testenv.PodmanImage)
	if err != nil {
		t.Fatal(err)
	}

	c := p.PodmanRun(t, "col-podman", []string{
		"--label", "team=payments", "--label", "tier=web", "--annotation", "io.contain.test=ann",
	}, engineCmd...)
	cgid := engineCgroupID(t, cfgRoot, c)
	info, evs := ofContainer(t, raw, cgid, c.ID)
	ci := info.GetContainer()
	if ci.Runtime != runtime.Podman || info.ContainerName != "col-podman" || ci.CgroupPath != c.Cgroup ||
		ci.Labels["team"] != "payments" || ci.Labels["tier"] != "web" || ci.Labels["io.contain.test"] != "ann" ||
		ci.Labels[runtime.LabelImageRef] != testenv.PodmanImage || ci.Labels[runtime.LabelImageID] != imageID ||
		ci.Labels[runtime.LabelContainerName] != "col-podman" || ci.InitPid != uint32(c.Pid) {
		t.Fatalf("KIND_CONTAINER of %s: %v (name %q), want pid %d image id %s", c.ID, ci, info.ContainerName, c.Pid, imageID)
	}
	if !hasExec(evs, "/bin/sh", engineCmd...) || !hasExec(evs, "/bin/true", "/bin/true", "first") {
		t.Fatalf("first execs of %s missing: %v", c.ID, evs)
	}

	if _, err := p.Run("exec", c.ID, "/bin/true", "second"); err != nil {
		t.Fatal(err)
	}
	raw.waitFor(t, 15*time.Second, "the podman exec into "+c.ID, func(all []*containv1.Event) bool {
		return hasExec(all, "/bin/true", "/bin/true", "second")
	})
	var n int
	for _, ev := range raw.snapshot() {
		if ev.CgroupId != cgid {
			continue
		}
		switch ev.Kind {
		case containv1.Kind_KIND_LOSS:
			t.Errorf("loss in %s: %v", c.ID, ev)
		case containv1.Kind_KIND_CONTAINER:
			n++
		}
		if ev.ContainerId != c.ID {
			t.Fatalf("event of %s's cgroup stamped %q: %v", c.ID, ev.ContainerId, ev)
		}
	}
	if n == 0 {
		t.Fatal("no KIND_CONTAINER")
	}
}
