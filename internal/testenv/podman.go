package testenv

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// PodmanImage is the busybox image RequirePodman imports into podman's
// default storage (no registry is reachable here).
const PodmanImage = "localhost/contain/busybox:test"

// Podman's default containers/storage roots (root podman), which the
// runtime package's DefaultStateReader reads. Tests use them rather than a
// private --root/--runroot so that the collector's default state reader is
// what is tested; they act only on their own containers, by id.
const (
	PodmanGraphRoot = "/var/lib/containers/storage"
	PodmanRunRoot   = "/run/containers/storage"
)

// Podman runs podman (4.x) as root on this host: cgroupfs cgroup manager
// (no systemd), ulimits within the hard limits (CAP_SYS_RESOURCE is
// absent), no network.
type Podman struct {
	// GraphRoot and RunRoot are podman's storage roots.
	GraphRoot string
	RunRoot   string
}

// podmanImported is set once PodmanImage is known to exist.
var podmanImported struct {
	sync.Mutex
	done bool
}

// RequirePodman returns podman with PodmanImage present, or stops the test.
func RequirePodman(t testing.TB) Podman {
	t.Helper()
	RequireRoot(t)
	if _, err := exec.LookPath("podman"); err != nil {
		Unavailable(t, "podman (apt-get install -y --no-install-recommends podman; scripts/setup.sh does)")
	}
	p := Podman{GraphRoot: PodmanGraphRoot, RunRoot: PodmanRunRoot}
	podmanImported.Lock()
	defer podmanImported.Unlock()
	if !podmanImported.done {
		if err := p.importImage(t); err != nil {
			t.Fatalf("importing %s into podman: %v", PodmanImage, err)
		}
		podmanImported.done = true
	}
	return p
}

// importImage imports a busybox rootfs as PodmanImage unless present
// (idempotent: `podman image exists` first).
func (p Podman) importImage(t testing.TB) error {
	if _, err := p.Run("image", "exists", PodmanImage); err == nil {
		return nil
	}
	rootfs := BusyboxRootfs(t, t.TempDir())
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	tar := exec.CommandContext(ctx, "tar", "-C", rootfs, "-c", ".")
	imp := exec.CommandContext(ctx, "podman", "--cgroup-manager", "cgroupfs", "import", "-", PodmanImage)
	pipe, err := tar.StdoutPipe()
	if err != nil {
		return err
	}
	imp.Stdin = pipe
	if err := tar.Start(); err != nil {
		return err
	}
	out, err := imp.CombinedOutput()
	if werr := tar.Wait(); err == nil {
		err = werr
	}
	if err != nil {
		return fmt.Errorf("tar | podman import: %w: %s", err, out)
	}
	return nil
}

// Run runs `podman --cgroup-manager cgroupfs --runtime runc <args>`:
// podman prefers crun where it is installed, and crun refuses a hybrid
// cgroup host ("cgroups in hybrid mode not supported"); runc runs on every
// layout.
func (p Podman) Run(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	return run(ctx, "podman", append([]string{"--cgroup-manager", "cgroupfs", "--runtime", "runc"}, args...)...)
}

// PodmanRun starts `podman run -d --name name --network none <ulimits>
// <runArgs> localhost/contain/busybox:test <cmd>` and removes it (`podman
// rm -f`) when the test ends. cmd defaults to `sleep 3600`.
func (p Podman) PodmanRun(t testing.TB, name string, runArgs []string, cmd ...string) *EngineContainer {
	t.Helper()
	if len(cmd) == 0 {
		cmd = []string{"sleep", "3600"}
	}
	args := []string{"run", "-d", "--name", name, "--network", "none",
		"--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"}
	args = append(append(append(args, runArgs...), PodmanImage), cmd...)
	_, _ = p.Run("rm", "-f", "-t", "0", name)
	id, err := p.Run(args...)
	if err != nil {
		t.Fatal(err)
	}
	id = lastLine(id)
	t.Cleanup(func() {
		_, _ = p.Run("unpause", id)
		_, _ = p.Run("rm", "-f", "-t", "0", id)
	})
	pid, err := p.Run("inspect", "-f", "{{.State.Pid}}", id)
	if err != nil {
		t.Fatal(err)
	}
	return containerOf(t, id, name, pid)
}

// lastLine is the last line of podman's output (warnings come first).
func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		return strings.TrimSpace(s[i+1:])
	}
	return s
}

// StorageRoots are p's roots as runtime.StateReader.StorageRoots.
func (p Podman) StorageRoots() []string {
	return []string{p.GraphRoot, p.RunRoot}
}

// BoltDB is libpod's state database (podman 4 with the boltdb backend).
func (p Podman) BoltDB() string {
	return filepath.Join(p.GraphRoot, "libpod", "bolt_state.db")
}

// PodmanPod creates a podman pod without an infra container (its pause
// image would need a registry) and removes it, with its containers, when
// the test ends. It returns the pod's id; pass `--pod name` to PodmanRun.
func (p Podman) PodmanPod(t testing.TB, name string) string {
	t.Helper()
	_, _ = p.Run("pod", "rm", "-f", "-t", "0", name)
	id, err := p.Run("pod", "create", "--infra=false", "--name", name)
	if err != nil {
		t.Fatal(err)
	}
	id = lastLine(id)
	t.Cleanup(func() { _, _ = p.Run("pod", "rm", "-f", "-t", "0", id) })
	return id
}
