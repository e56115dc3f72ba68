package runtime

import (
	"strings"
	"testing"

	"github.com/containsec/contain/internal/testenv"
)

// TestPodmanOnDiskReal identifies a real podman container (cgroupfs
// manager) from its cgroup path and reads its metadata from disk alone:
// the OCI bundle (annotations), containers.json (name, image) and libpod's
// database (labels).
func TestPodmanOnDiskReal(t *testing.T) {
	p := testenv.RequirePodman(t)
	c := p.PodmanRun(t, "runtime-podman-disk", []string{
		"--label", "team=payments", "--label", "tier=web", "--annotation", "io.contain.test=ann",
		"--annotation", LabelImageDigest + "=sha256:" + strings.Repeat("f", 64),
	})
	// Measured: /libpod_parent/libpod-<id> with --cgroup-manager cgroupfs.
	if want := "/libpod_parent/libpod-" + c.ID; c.Cgroup != want {
		t.Errorf("cgroup %q, want %q", c.Cgroup, want)
	}
	ref, ok := FromCgroupPath(c.Cgroup)
	if !ok || ref.Runtime != Podman || ref.ID != c.ID {
		t.Fatalf("FromCgroupPath(%q) = %+v, %v", c.Cgroup, ref, ok)
	}
	imageID, err := p.Run("inspect", "-f", "{{.Image}}", c.ID)
	if err != nil {
		t.Fatal(err)
	}
	r := StateReader{RuncRoot: "/run/runc", StorageRoots: p.StorageRoots()}
	info, err := r.Lookup(ref)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"team":                 "payments",
		"tier":                 "web",
		"io.contain.test":      "ann", // an operator's setting, kept
		LabelImageDigest:       "",    // an annotation may not claim an image digest
		"io.container.manager": "libpod",
		LabelContainerName:     "runtime-podman-disk",
		LabelImageRef:          testenv.PodmanImage,
		LabelImageID:           imageID,
	}
	for k, v := range want {
		if info.Labels[k] != v {
			t.Errorf("label %s = %q, want %q", k, info.Labels[k], v)
		}
	}
	if info.Identity.ImageID != imageID || info.Identity.ImageDigest != "" || info.Identity.Name != "runtime-podman-disk" || info.DroppedLabels < 1 {
		t.Errorf("identity %+v, %d labels dropped; want the image id from containers.json, no digest, some dropped", info.Identity, info.DroppedLabels)
	}
	if info.Runtime != Podman || info.Name != "runtime-podman-disk" || info.InitPID != uint32(c.Pid) ||
		!strings.HasSuffix(info.Bundle, c.ID+"/userdata") || info.Pod != "" {
		t.Errorf("info = %+v (want pid %d)", info, c.Pid)
	}

}

// TestPodmanPodOnDiskReal: a container of a podman pod names its pod
// (libpod's pod config) in Info.Pod.
func TestPodmanPodOnDiskReal(t *testing.T) {
	p := testenv.RequirePodman(t)
	p.PodmanPod(t, "runtime-podman-pod")
	c := p.PodmanRun(t, "runtime-podman-inpod", []string{"--pod", "runtime-podman-pod", "--label", "team=payments"})
	ref, ok := FromCgroupPath(c.Cgroup)
	if !ok || ref.Runtime != Podman || ref.ID != c.ID {
		t.Fatalf("FromCgroupPath(%q) = %+v, %v", c.Cgroup, ref, ok)
	}
	info, err := StateReader{StorageRoots: p.StorageRoots()}.Lookup(ref)
	if err != nil {
		t.Fatal(err)
	}
	if info.Runtime != Podman || info.Name != "runtime-podman-inpod" || info.Pod != "runtime-podman-pod" ||
		info.Labels[LabelPodmanPod] != "runtime-podman-pod" || info.Labels["team"] != "payments" {
		t.Fatalf("info = %+v", info)
	}
}

// BenchmarkPodmanLookupReal: one uncached on-disk lookup of a real podman
// container (runc state, OCI bundle, containers.json, libpod's database),
// what the collector pays once per new podman container.
func BenchmarkPodmanLookupReal(b *testing.B) {
	p := testenv.RequirePodman(b)
	c := p.PodmanRun(b, "runtime-podman-bench", []string{"--label", "team=payments"})
	ref, _ := FromCgroupPath(c.Cgroup)
	r := DefaultStateReader()
	b.ResetTimer()
	for b.Loop() {
		if info, err := r.Lookup(ref); err != nil || info.Labels["team"] != "payments" {
			b.Fatalf("%+v, %v", info, err)
		}
	}
}
