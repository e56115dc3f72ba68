package main

import (
	"crypto/rand"
	"encoding/hex"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/containsec/contain/internal/testenv"
)

// TestImageInDockerFreezesContainer builds the image, loads it into the
// test Docker engine and runs it the way a DaemonSet pod runs (host PID
// namespace, the host's cgroup, bpffs and BTF, the docker socket and state
// directories, exactly the capabilities it keeps) as `contain run`; a docker container that it
// learned then runs a binary it never ran, and contain, inside its own
// container, freezes it.
func TestImageInDockerFreezesContainer(t *testing.T) {
	e := testenv.RequireEngines(t)
	repo := testenv.RepoRoot(t)
	dir := t.TempDir()
	var b [4]byte
	_, _ = rand.Read(b[:])
	suffix := hex.EncodeToString(b[:])
	tag := "contain/contain:test-" + suffix
	out := filepath.Join(dir, "contain-image.tar")
	start := time.Now()
	digest, err := build(options{out: out, tag: tag, arch: runtime.GOARCH, repo: repo})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("image %s built in %v", digest, time.Since(start).Round(time.Millisecond))
	img, err := tarball.ImageFromPath(out, nil)
	if err != nil {
		t.Fatal(err)
	}
	if cf, err := img.ConfigFile(); err != nil || cf.Config.Entrypoint[0] != "/usr/bin/contain" || len(cf.RootFS.DiffIDs) != 1 {
		t.Fatalf("image config: %+v %v", cf, err)
	}
	if _, err := e.Docker("load", "-i", out); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = e.Docker("rmi", "-f", tag) })
	if v, err := e.Docker("run", "--rm", "--network", "none", tag, "version"); err != nil || !strings.HasPrefix(v, "contain ") {
		t.Fatalf("contain version in the image: %q %v", v, err)
	}

	// dockerd's exec root is RUN_DIR/docker-exec beside its data root
	// (deploy/engines/start.sh): runc's state of docker's containers.
	runDir := filepath.Dir(e.DockerRoot)
	sock := strings.TrimPrefix(e.DockerHost, "unix://")
	learning := 3 * time.Second
	name := "contain-image-" + suffix
	// Not --privileged (it asks for every capability, and this sandbox
	// lacks SYS_RESOURCE): the capabilities contain keeps, as in
	// deploy/kubernetes/node.yaml, less BPF and PERFMON, which docker 20.10
	// cannot name (SYS_ADMIN covers them), and seccomp unconfined for
	// bpf(2).
	args := []string{"run", "-d", "--name", name, "--cap-drop", "ALL",
		"--cap-add", "SYS_ADMIN", "--cap-add", "SYS_PTRACE",
		"--cap-add", "DAC_OVERRIDE", "--cap-add", "DAC_READ_SEARCH",
		"--security-opt", "seccomp=unconfined", "--security-opt", "apparmor=unconfined",
		"--pid", "host", "--cgroupns", "host", "--network", "none",
		"-v", "/sys/fs/cgroup:/sys/fs/cgroup", "-v", "/sys/fs/bpf:/sys/fs/bpf", "-v", "/sys/kernel/btf:/sys/kernel/btf:ro",
		"-v", sock + ":/run/docker.sock", "-v", e.DockerRoot + ":/var/lib/docker:ro",
		"-v", filepath.Join(runDir, "docker-exec") + ":/run/docker-exec:ro",
		"--tmpfs", "/var/lib/contain",
		"-e", "CONTAIN_HOST=image-test-" + suffix,
		"-e", "CONTAIN_ANALYZER_LEARNING_WINDOW=" + learning.String(),
		"-e", "CONTAIN_COLLECTOR_DOCKER_HOST=unix:///run/docker.sock",
		"-e", "CONTAIN_RESPONDER_DOCKER_RUNC_ROOT=/run/docker-exec/runtime-runc/moby",
		"-e", "CONTAIN_RESPONDER_CONTAINERD_ADDRESS=",
		"-e", "CONTAIN_METRICS_LISTEN=",
		tag, "run", "--stages", "responder,analyzer,enricher,collector"}
	_, _ = e.Docker("rm", "-f", name)
	if _, err := e.Docker(args...); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			logs, _ := e.Docker("logs", "--tail", "60", name)
			t.Logf("contain's log:\n%s", logs)
		}
		_, _ = e.Docker("rm", "-f", name)
	})
	waitFor(t, 30*time.Second, "contain running in its container", func() bool {
		logs, _ := e.Docker("logs", name)
		if st, _ := e.Docker("inspect", "-f", "{{.State.Running}}", name); st == "false" {
			t.Fatalf("contain's container exited:\n%s", logs)
		}
		return strings.Contains(logs, "contain running")
	})
	t.Logf("contain ready in its container after %v", time.Since(start).Round(time.Millisecond))

	// The workload: a loop it learns, which runs wget once /tmp/go exists.
	target := e.DockerRun(t, "contain-target-"+suffix, nil, "/bin/sh", "-c",
		"while true; do /bin/sleep 0.3; if [ -e /tmp/go ]; then /bin/wget -q -O /dev/null http://127.0.0.1:1/; fi; done")
	t.Cleanup(func() {
		_ = os.WriteFile(filepath.Join("/sys/fs/cgroup/freezer", target.Cgroup, "freezer.state"), []byte("THAWED"), 0)
		_, _ = e.Docker("unpause", target.ID)
	})
	time.Sleep(learning + time.Second)
	if paused(e, target.ID) {
		t.Fatal("the target was frozen while it did what it was learned doing")
	}
	// `docker cp` changes the file system without an exec session.
	flag := filepath.Join(dir, "go")
	os.WriteFile(flag, nil, 0o644)
	if _, err := e.Docker("cp", flag, target.ID+":/tmp/go"); err != nil {
		t.Fatal(err)
	}
	deviated := time.Now()
	waitFor(t, 15*time.Second, "the target frozen by contain's container", func() bool { return paused(e, target.ID) })
	t.Logf("frozen %v after the deviation was enabled; whole test %v", time.Since(deviated).Round(time.Millisecond),
		time.Since(start).Round(time.Millisecond))
}

// paused: docker says Paused, or the container's freezer is FROZEN.
func paused(e testenv.Engines, id string) bool {
	if p, _ := e.Docker("inspect", "-f", "{{.State.Paused}}", id); p == "true" {
		return true
	}
	cg, _ := e.Docker("inspect", "-f", "{{.State.Pid}}", id)
	b, err := os.ReadFile("/proc/" + cg + "/cgroup")
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(b), "\n") {
		if _, rest, ok := strings.Cut(line, ":freezer:"); ok {
			st, _ := os.ReadFile(filepath.Join("/sys/fs/cgroup/freezer", rest, "freezer.state"))
			return strings.TrimSpace(string(st)) == "FROZEN"
		}
	}
	return false
}

func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
