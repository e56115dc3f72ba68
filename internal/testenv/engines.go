package testenv

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Engines are the private Docker Engine and containerd that scripts/test.sh
// starts with deploy/engines/start.sh.
type Engines struct {
	// DockerHost is the Engine API address, e.g. unix:///tmp/x/docker.sock.
	DockerHost string
	// DockerRoot is dockerd's --data-root (containers/<id>/config.v2.json).
	DockerRoot string
	// Containerd is containerd's socket path.
	Containerd string
}

// EnginesImage is the busybox image start.sh imports into both engines
// (in containerd as docker.io/contain/busybox:test, namespace
// EnginesNamespace).
const (
	EnginesImage     = "contain/busybox:test"
	EnginesNamespace = "contain-test"
)

// RequireEngines returns the engines named by CONTAIN_TEST_DOCKER_HOST,
// CONTAIN_TEST_DOCKER_ROOT and CONTAIN_TEST_CONTAINERD, or stops the test.
func RequireEngines(t testing.TB) Engines {
	t.Helper()
	RequireRoot(t)
	e := Engines{
		DockerHost: os.Getenv("CONTAIN_TEST_DOCKER_HOST"),
		DockerRoot: os.Getenv("CONTAIN_TEST_DOCKER_ROOT"),
		Containerd: os.Getenv("CONTAIN_TEST_CONTAINERD"),
	}
	if e.DockerHost == "" || e.Containerd == "" {
		Unavailable(t, "a Docker Engine and containerd: run `eval $(deploy/engines/start.sh)` and export CONTAIN_TEST_DOCKER_HOST, CONTAIN_TEST_DOCKER_ROOT, CONTAIN_TEST_CONTAINERD (scripts/test.sh does)")
	}
	return e
}

// EngineContainer is a container run by docker or containerd.
type EngineContainer struct {
	ID string
	// Name is docker's name (without "/"); the id for containerd.
	Name string
	Pid  int
	// Cgroup is the container's cgroup path relative to a hierarchy's
	// mount, e.g. /docker/<id> or /contain-test/<id>.
	Cgroup string
}

func run(ctx context.Context, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.WaitDelay = time.Second
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out)), nil
}

// Docker runs `docker` against the test engine.
func (e Engines) Docker(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	return run(ctx, "docker", append([]string{"-H", e.DockerHost}, args...)...)
}

// Ctr runs `ctr` against the test containerd in EnginesNamespace.
func (e Engines) Ctr(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	return run(ctx, "ctr", append([]string{"--address", e.Containerd, "-n", EnginesNamespace}, args...)...)
}

// DockerRun starts `docker run -d --name name --network none <runArgs>
// contain/busybox:test <cmd>` and removes it when the test ends. runArgs
// may add labels, --network host, and so on; cmd defaults to the image's
// (sleep).
func (e Engines) DockerRun(t testing.TB, name string, runArgs []string, cmd ...string) *EngineContainer {
	t.Helper()
	args := append([]string{"run", "-d", "--name", name, "--network", "none"}, runArgs...)
	args = append(append(args, EnginesImage), cmd...)
	_, _ = e.Docker("rm", "-f", name)
	id, err := e.Docker(args...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_, _ = e.Docker("unpause", id)
		_, _ = e.Docker("rm", "-f", id)
	})
	pid, err := e.Docker("inspect", "-f", "{{.State.Pid}}", id)
	if err != nil {
		t.Fatal(err)
	}
	return containerOf(t, id, name, pid)
}

// ContainerdRun starts `ctr run -d <runArgs> docker.io/contain/busybox:test
// id <cmd>` in EnginesNamespace and deletes it when the test ends.
func (e Engines) ContainerdRun(t testing.TB, id string, runArgs []string, cmd ...string) *EngineContainer {
	t.Helper()
	e.containerdRemove(id)
	args := append([]string{"run", "-d"}, runArgs...)
	args = append(append(args, "docker.io/"+EnginesImage, id), cmd...)
	if _, err := e.Ctr(args...); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.containerdRemove(id) })
	out, err := e.Ctr("tasks", "ls")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(out, "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == id {
			return containerOf(t, id, id, f[1])
		}
	}
	t.Fatalf("ctr tasks ls: no task %s in %q", id, out)
	return nil
}

func (e Engines) containerdRemove(id string) {
	_, _ = e.Ctr("tasks", "resume", id)
	_, _ = e.Ctr("tasks", "kill", "-s", "KILL", id)
	for i := 0; i < 50; i++ {
		if _, err := e.Ctr("tasks", "delete", id); err == nil || !e.hasTask(id) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	_, _ = e.Ctr("containers", "delete", id)
}

func (e Engines) hasTask(id string) bool {
	out, _ := e.Ctr("tasks", "ls", "-q")
	for _, l := range strings.Split(out, "\n") {
		if strings.TrimSpace(l) == id {
			return true
		}
	}
	return false
}

func containerOf(t testing.TB, id, name, pidStr string) *EngineContainer {
	t.Helper()
	pid, err := strconv.Atoi(strings.TrimSpace(pidStr))
	if err != nil || pid <= 0 {
		t.Fatalf("container %s: bad pid %q", id, pidStr)
	}
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "cgroup"))
	if err != nil {
		t.Fatal(err)
	}
	c := &EngineContainer{ID: id, Name: name, Pid: pid}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "0::"); ok {
			c.Cgroup = rest
		}
	}
	if c.Cgroup == "" {
		t.Fatalf("container %s: no cgroup v2 line in /proc/%d/cgroup", id, pid)
	}
	return c
}
