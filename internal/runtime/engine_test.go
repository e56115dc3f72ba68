package runtime

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containsec/contain/internal/engines"
	"github.com/containsec/contain/internal/testenv"
)

func TestFromCgroupPathContainerdNamespace(t *testing.T) {
	for _, tc := range []struct {
		path string
		want Ref
	}{
		// ctr run in namespace contain-test (measured: /contain-test/<id>).
		{"/contain-test/idprobe2", Ref{Runtime: Runc, ID: "idprobe2", Namespace: "contain-test"}},
		{"/k8s.io/" + hex64, Ref{Runtime: Runc, ID: hex64, Namespace: "k8s.io"}},
		// Not namespaces: docker's parent, Kubernetes, LXC, deeper paths,
		// invalid identifiers.
		{"/docker/not-hex", Ref{Runtime: Runc, ID: "not-hex"}},
		{"/kubepods/besteffort", Ref{Runtime: Runc, ID: "besteffort"}},
		{"/lxc.payload/c1", Ref{Runtime: Runc, ID: "c1"}},
		{"/machine/vm", Ref{Runtime: Runc, ID: "vm"}},
		{"/a/b/c", Ref{Runtime: Runc, ID: "c"}},
		{"/-ns/id", Ref{Runtime: Runc, ID: "id"}},
		{"/ns/id..x", Ref{Runtime: Runc, ID: "id..x"}},
		{"/mybox", Ref{Runtime: Runc, ID: "mybox"}},
	} {
		got, ok := FromCgroupPath(tc.path)
		if !ok || got != tc.want {
			t.Errorf("FromCgroupPath(%q) = %+v, %v; want %+v", tc.path, got, ok, tc.want)
		}
	}
	// Host units stay non-containers under any parent.
	for _, p := range []string{"/system.slice/containerd.service", "/user.slice/user-0.slice", "/foo.slice/bar.scope"} {
		if ref, ok := FromCgroupPath(p); ok {
			t.Errorf("FromCgroupPath(%q) = %+v, want not a container", p, ref)
		}
	}
}

func TestMerge(t *testing.T) {
	disk := Info{Runtime: Runc, Bundle: "/b", InitPID: 7, Name: "c1", Labels: map[string]string{
		"a": "disk", "only.disk": "1", LabelImageRef: "old:1",
	}, Identity: Identity{ImageRef: "old:1"}}
	eng := Info{Runtime: Containerd, InitPID: 8, Name: "c1", EngineNamespace: "k8s.io", Identity: Identity{ImageRef: "new:2"}, Labels: map[string]string{
		"a": "engine", LabelImageRef: "new:2",
		"io.kubernetes.cri.sandbox-name": "web-0", "io.kubernetes.cri.sandbox-namespace": "shop",
		"io.kubernetes.cri.container-name": "nginx",
	}}
	got := Merge(disk, eng)
	if got.Runtime != Containerd || got.Bundle != "/b" || got.InitPID != 7 || got.EngineNamespace != "k8s.io" ||
		got.Labels["a"] != "engine" || got.Labels["only.disk"] != "1" || got.Labels[LabelImageRef] != "new:2" ||
		got.Name != "nginx" || got.Pod != "web-0" || got.Namespace != "shop" || got.Identity.ImageRef != "new:2" {
		t.Fatalf("merged: %+v", got)
	}
	// An io.contain.* label no runtime state set is an image author's: dropped.
	spoof := Info{Runtime: Runc, Labels: map[string]string{LabelImageDigest: "sha256:fake", LabelImageRef: "fake:1"}, Identity: Identity{ImageRef: "real:1"}}
	if got := Merge(spoof, Info{Runtime: Docker, Labels: map[string]string{}}); got.Labels[LabelImageDigest] != "" || got.Labels[LabelImageRef] != "real:1" || got.DroppedLabels != 2 {
		t.Fatalf("spoofed labels kept: %+v", got)
	}
	if disk.Labels["a"] != "disk" {
		t.Fatal("Merge changed its input")
	}
	if got := Merge(disk, Info{}); got.Runtime != Runc || got.Labels["a"] != "disk" {
		t.Fatalf("merge with no engine answer: %+v", got)
	}
	if got := Merge(Info{Name: "x"}, eng); got.InitPID != 8 || got.Runtime != Containerd {
		t.Fatalf("merge without disk state: %+v", got)
	}
}

// TestDockerOnDiskReal reads a real dockerd's data root for a container
// run with labels: the on-disk reader alone identifies it.
func TestDockerOnDiskReal(t *testing.T) {
	e := testenv.RequireEngines(t)
	if e.DockerRoot == "" {
		testenv.Unavailable(t, "CONTAIN_TEST_DOCKER_ROOT (dockerd's --data-root)")
	}
	c := e.DockerRun(t, "runtime-disk", []string{"--label", "team=payments", "--label", "tier=web"})
	ref, ok := FromCgroupPath(c.Cgroup)
	if !ok || ref.Runtime != Docker || ref.ID != c.ID {
		t.Fatalf("FromCgroupPath(%q) = %+v, %v", c.Cgroup, ref, ok)
	}
	imageID, err := e.Docker("inspect", "-f", "{{.Image}}", c.ID)
	if err != nil {
		t.Fatal(err)
	}
	r := StateReader{DockerRoot: e.DockerRoot}
	info, err := r.Lookup(ref)
	if err != nil {
		t.Fatal(err)
	}
	if info.Runtime != Docker || info.Name != "runtime-disk" || info.InitPID != uint32(c.Pid) ||
		info.Labels["team"] != "payments" || info.Labels["tier"] != "web" ||
		info.Labels[LabelImageRef] != testenv.EnginesImage || info.Labels[LabelImageID] != imageID ||
		!strings.HasPrefix(imageID, "sha256:") {
		t.Fatalf("on-disk docker info: %+v (want pid %d, image id %s)", info, c.Pid, imageID)
	}
}

// containerdState is where deploy/engines/start.sh keeps the test
// containerd's state (--state), beside its socket.
func containerdState(t *testing.T, e testenv.Engines) string {
	dir := filepath.Join(filepath.Dir(e.Containerd), "containerd-state")
	if _, err := os.Stat(filepath.Join(dir, "io.containerd.runtime.v2.task")); err != nil {
		testenv.Unavailable(t, "the test containerd's state directory beside its socket (deploy/engines/start.sh): "+err.Error())
	}
	return dir
}

// TestContainerdOnDiskReal reads a real containerd's task bundle for a
// `ctr run` container at /<namespace>/<id>.
func TestContainerdOnDiskReal(t *testing.T) {
	e := testenv.RequireEngines(t)
	state := containerdState(t, e)
	c := e.ContainerdRun(t, "runtime-ctd-disk", []string{"--annotation", "io.kubernetes.cri.sandbox-name=web-0"})
	ref, ok := FromCgroupPath(c.Cgroup)
	if !ok || ref.ID != c.ID || ref.Namespace != testenv.EnginesNamespace {
		t.Fatalf("FromCgroupPath(%q) = %+v, %v", c.Cgroup, ref, ok)
	}
	r := StateReader{ContainerdTaskRoot: filepath.Join(state, "io.containerd.runtime.v2.task")}
	info, err := r.Lookup(ref)
	if err != nil {
		t.Fatal(err)
	}
	if info.Runtime != Containerd || info.EngineNamespace != testenv.EnginesNamespace || info.InitPID != uint32(c.Pid) ||
		info.Pod != "web-0" || info.Bundle == "" {
		t.Fatalf("on-disk containerd info: %+v (pid %d)", info, c.Pid)
	}
}

func engineReader(t testing.TB, e testenv.Engines) EngineReader {
	t.Helper()
	d, err := engines.NewDocker(e.DockerHost, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	cd, err := engines.NewContainerd(e.Containerd, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close(); cd.Close() })
	return EngineReader{Docker: d, Containerd: cd}
}

func TestEngineLookupDockerReal(t *testing.T) {
	e := testenv.RequireEngines(t)
	r := engineReader(t, e)
	c := e.DockerRun(t, "runtime-eng", []string{"--label", "team=payments"})
	ref, _ := FromCgroupPath(c.Cgroup)
	eng, ns := r.Engine(ref, Info{})
	if eng != EngineDocker || ns != "" {
		t.Fatalf("Engine(%+v) = %q %q", ref, eng, ns)
	}
	imageID, _ := e.Docker("inspect", "-f", "{{.Image}}", c.ID)
	info, err := r.Lookup(context.Background(), eng, ns, ref.ID)
	if err != nil {
		t.Fatal(err)
	}
	if info.Runtime != Docker || info.Name != "runtime-eng" || info.InitPID != uint32(c.Pid) ||
		info.Labels["team"] != "payments" || info.Labels[LabelImageRef] != testenv.EnginesImage ||
		info.Labels[LabelImageID] != imageID {
		t.Fatalf("docker engine info: %+v", info)
	}
	// Engine and disk agree on a docker container.
	disk, err := StateReader{DockerRoot: e.DockerRoot}.Lookup(ref)
	if err != nil {
		t.Fatal(err)
	}
	m := Merge(disk, info)
	for _, k := range []string{"team", LabelImageRef, LabelImageID, LabelContainerName} {
		if m.Labels[k] != disk.Labels[k] {
			t.Errorf("label %s: engine %q, disk %q", k, m.Labels[k], disk.Labels[k])
		}
	}
	if _, err := r.Lookup(context.Background(), EngineDocker, "", strings.Repeat("f", 64)); !IsEngineReason(err, engines.ReasonNotFound) {
		t.Fatalf("unknown container: %v", err)
	}
}

func TestEngineLookupContainerdReal(t *testing.T) {
	e := testenv.RequireEngines(t)
	r := engineReader(t, e)
	ann := []string{
		"--label", "team=payments",
		"--annotation", "io.kubernetes.cri.sandbox-name=web-0",
		"--annotation", "io.kubernetes.cri.sandbox-namespace=shop",
		"--annotation", "io.kubernetes.cri.container-name=nginx",
	}
	c := e.ContainerdRun(t, "runtime-eng-ctd", ann)
	ref, _ := FromCgroupPath(c.Cgroup)
	eng, ns := r.Engine(ref, Info{})
	if eng != EngineContainerd || ns != testenv.EnginesNamespace {
		t.Fatalf("Engine(%+v) = %q %q", ref, eng, ns)
	}
	info, err := r.Lookup(context.Background(), eng, ns, ref.ID)
	if err != nil {
		t.Fatal(err)
	}
	imageID, _ := e.Docker("image", "inspect", "-f", "{{.Id}}", testenv.EnginesImage)
	if info.Runtime != Containerd || info.EngineNamespace != ns || info.InitPID != uint32(c.Pid) ||
		info.Labels["team"] != "payments" || info.Name != "nginx" || info.Pod != "web-0" || info.Namespace != "shop" ||
		info.Labels[LabelImageRef] != "docker.io/"+testenv.EnginesImage || info.Labels[LabelImageID] != imageID ||
		!strings.HasPrefix(info.Labels[LabelImageDigest], "sha256:") {
		t.Fatalf("containerd engine info: %+v (pid %d, image id %s)", info, c.Pid, imageID)
	}
	// A two-level path that is not a containerd container: not found, so
	// it stays runc.
	if _, err := r.Lookup(context.Background(), EngineContainerd, "no-such-ns", ref.ID); !IsEngineReason(err, engines.ReasonNotFound) {
		t.Fatalf("wrong namespace: %v", err)
	}
}

func TestEngineLookupUnreachable(t *testing.T) {
	testenv.RequireRoot(t)
	sock := filepath.Join(t.TempDir(), "none.sock")
	d, err := engines.NewDocker("unix://"+sock, 500*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	cd, err := engines.NewContainerd(sock, 500*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	defer cd.Close()
	r := EngineReader{Docker: d, Containerd: cd}
	for _, tc := range []struct{ engine, ns string }{{EngineDocker, ""}, {EngineContainerd, "k8s.io"}} {
		start := time.Now()
		_, err := r.Lookup(context.Background(), tc.engine, tc.ns, hex64)
		if !IsEngineReason(err, engines.ReasonUnreachable) && !IsEngineReason(err, engines.ReasonTimeout) {
			t.Fatalf("%s on a missing socket: %v", tc.engine, err)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Fatalf("%s: failing took %v", tc.engine, d)
		}
		t.Logf("%s: %v", tc.engine, err)
	}
}
