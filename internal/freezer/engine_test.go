package freezer_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containsec/contain/internal/engines"
	"github.com/containsec/contain/internal/freezer"
	"github.com/containsec/contain/internal/testenv"
)

// engineRoots are the roots of this host's cgroups and of the test
// engines' runc state (deploy/engines/start.sh: dockerd's exec root is
// RUN_DIR/docker-exec beside its data root RUN_DIR/docker; containerd's
// shim keeps runc state under /run/containerd/runc/<namespace>).
func engineRoots(t testing.TB, e testenv.Engines) freezer.Roots {
	t.Helper()
	r := freezer.Roots{
		FreezerV1:          "/sys/fs/cgroup/freezer",
		Cgroup2:            "/sys/fs/cgroup/unified",
		DockerRoot:         e.DockerRoot,
		DockerRuncRoot:     filepath.Join(filepath.Dir(e.DockerRoot), "docker-exec", "runtime-runc", "moby"),
		ContainerdRuncRoot: "/run/containerd/runc",
	}
	if _, err := os.Stat(r.FreezerV1); err != nil {
		r.FreezerV1 = ""
	}
	if _, err := os.Stat(r.Cgroup2); err != nil {
		r.Cgroup2 = "/sys/fs/cgroup"
	}
	return r
}

func clients(t testing.TB, e testenv.Engines) freezer.Engines {
	t.Helper()
	d, err := engines.NewDocker(e.DockerHost, 0)
	if err != nil {
		t.Fatal(err)
	}
	c, err := engines.NewContainerd(e.Containerd, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close(); c.Close() })
	return freezer.Engines{Docker: d, Containerd: c, Timeout: 5 * time.Second}
}

func v1State(t testing.TB, tg *freezer.Target) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(tg.FreezerV1, "freezer.state"))
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

func methods(t testing.TB, roots freezer.Roots, eng freezer.Engines, names ...string) []freezer.Method {
	t.Helper()
	ms, err := freezer.NewMethodsWith(names, roots, "runc", eng)
	if err != nil {
		t.Fatal(err)
	}
	return ms
}

func TestLocateDockerAndContainerd(t *testing.T) {
	e := testenv.RequireEngines(t)
	roots := engineRoots(t, e)
	dc := e.DockerRun(t, "freezer-locate-d", []string{"--label", "io.contain.critical=true"})
	cc := e.ContainerdRun(t, "freezer-locate-c", nil)

	for _, tc := range []struct {
		name  string
		roots freezer.Roots
		id    string
		rt    string
		ns    string
		cg    string
		label bool
	}{
		{"docker state", roots, dc.ID, freezer.RuntimeDocker, "", dc.Cgroup, true},
		{"containerd state", roots, cc.ID, freezer.RuntimeContainerd, testenv.EnginesNamespace, cc.Cgroup, false},
	} {
		tg, err := freezer.Locate(tc.roots, tc.id)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if tg.Runtime != tc.rt || tg.Namespace != tc.ns || tg.Cgroup2 != filepath.Join(roots.Cgroup2, tc.cg) {
			t.Errorf("%s: located %+v; want runtime %q namespace %q cgroup %s", tc.name, tg, tc.rt, tc.ns, tc.cg)
		}
		if roots.FreezerV1 != "" && tg.FreezerV1 != filepath.Join(roots.FreezerV1, tc.cg) {
			t.Errorf("%s: freezer %q", tc.name, tg.FreezerV1)
		}
		if got := tg.Labels["io.contain.critical"] == "true"; got != tc.label {
			t.Errorf("%s: docker label read = %v, labels %v", tc.name, got, tg.Labels)
		}
		if err := freezer.Prove(tc.roots, tg, freezer.Protected{Pids: []int{os.Getpid()}}); err != nil {
			t.Errorf("%s: a running engine container is not proven: %v", tc.name, err)
		}
		// The cgroup tree is never searched by name: without the
		// runtimes' state the container is not found.
		if tg, err := freezer.Locate(freezer.Roots{FreezerV1: roots.FreezerV1, Cgroup2: roots.Cgroup2}, tc.id); !errors.Is(err, freezer.ErrNotFound) {
			t.Errorf("%s: located without runtime state: %+v, %v", tc.name, tg, err)
		}
	}
}

func TestDockerPauseMethod(t *testing.T) {
	e := testenv.RequireEngines(t)
	roots, eng := engineRoots(t, e), clients(t, e)
	c := e.DockerRun(t, "freezer-dpause", nil)
	tg, err := freezer.Locate(roots, c.ID)
	if err != nil {
		t.Fatal(err)
	}
	// The global order puts the v1 freezer first; the docker-pause method
	// only applies to docker containers, and a runc container is not one.
	// With the cgroup2 pre-freeze: contained before the engine's pause
	// returns, and left paused by docker only (cgroup2 let go).
	eng.PreFreeze = true
	ms := methods(t, roots, eng, freezer.MethodDockerPause, freezer.MethodV1Freezer, freezer.MethodV2Freeze)
	start := time.Now()
	rep, err := freezer.FreezeReport(context.Background(), ms, tg)
	if err != nil {
		t.Fatal(err)
	}
	done := time.Now()
	m := rep.Method
	if tg.FreezerV1 != "" && tg.Cgroup2 != "" {
		t.Logf("docker-pause with pre-freeze: contained after %v, docker paused after %v", rep.FrozenAt.Sub(start), done.Sub(start))
		if !rep.FrozenAt.Before(done) || rep.FrozenAt.Before(start) {
			t.Errorf("FrozenAt %v not within the freeze (%v..%v)", rep.FrozenAt, start, done)
		}
		if b, _ := os.ReadFile(filepath.Join(tg.Cgroup2, "cgroup.events")); !strings.Contains(string(b), "frozen 0") {
			t.Errorf("cgroup2 still frozen after the engine took over: %q", b)
		}
	}
	if m.Name() != freezer.MethodDockerPause {
		t.Fatalf("froze with %s", m.Name())
	}
	if s, _ := e.Docker("inspect", "-f", "{{.State.Status}} {{.State.Paused}}", c.ID); s != "paused true" {
		t.Fatalf("docker inspect says %q after docker-pause", s)
	}
	if tg.FreezerV1 != "" && v1State(t, tg) != "FROZEN" {
		t.Fatalf("freezer %s after docker-pause", v1State(t, tg))
	}
	// Whoever asks which method froze it gets docker's, though the v1
	// freezer (first in this order) reads FROZEN too.
	by := freezer.FrozenBy(methods(t, roots, eng, freezer.MethodV1Freezer, freezer.MethodV2Freeze, freezer.MethodDockerPause), tg)
	if by == nil || by.Name() != freezer.MethodDockerPause {
		t.Fatalf("FrozenBy = %v, want docker-pause", by)
	}
	if err := m.Thaw(context.Background(), tg); err != nil {
		t.Fatal(err)
	}
	if s, _ := e.Docker("inspect", "-f", "{{.State.Status}} {{.State.Paused}}", c.ID); s != "running false" {
		t.Fatalf("docker inspect says %q after thaw", s)
	}
	if out, err := e.Docker("exec", c.ID, "echo", "alive"); err != nil || out != "alive" {
		t.Fatalf("docker exec after thaw: %v %q", err, out)
	}
	if by := freezer.FrozenBy(ms, tg); by != nil {
		t.Fatalf("FrozenBy after thaw = %s", by.Name())
	}

	// The container exits: the engine method reports ErrExited, and Freeze
	// does not fall through to the cgroup methods.
	if _, err := e.Docker("kill", c.ID); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		s, _ := e.Docker("inspect", "-f", "{{.State.Running}}", c.ID)
		if s == "false" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("docker kill: still running")
		}
		time.Sleep(10 * time.Millisecond)
	}
	rep, err = freezer.FreezeReport(context.Background(), ms, tg)
	if !errors.Is(err, freezer.ErrExited) || len(rep.Tried) != 1 {
		t.Fatalf("freeze of an exited docker container: %v (%d tried), want ErrExited from docker-pause only", err, len(rep.Tried))
	}
}

func TestContainerdPauseMethod(t *testing.T) {
	e := testenv.RequireEngines(t)
	roots, eng := engineRoots(t, e), clients(t, e)
	c := e.ContainerdRun(t, "freezer-cpause", nil)
	tg, err := freezer.Locate(roots, c.ID)
	if err != nil {
		t.Fatal(err)
	}
	ms := methods(t, roots, eng, freezer.MethodContainerdPause, freezer.MethodV1Freezer)
	m, err := freezer.Freeze(context.Background(), ms, tg)
	if err != nil {
		t.Fatal(err)
	}
	if m.Name() != freezer.MethodContainerdPause {
		t.Fatalf("froze with %s", m.Name())
	}
	if s, err := eng.Containerd.TaskStatus(context.Background(), testenv.EnginesNamespace, c.ID); err != nil || s != "PAUSED" {
		t.Fatalf("task %q %v after containerd-pause", s, err)
	}
	if tg.FreezerV1 != "" && v1State(t, tg) != "FROZEN" {
		t.Fatalf("freezer %s", v1State(t, tg))
	}
	if ok, err := m.Frozen(tg); !ok || err != nil {
		t.Fatalf("Frozen = %v %v", ok, err)
	}
	if by := freezer.FrozenBy(methods(t, roots, eng, freezer.MethodV1Freezer, freezer.MethodContainerdPause), tg); by == nil || by.Name() != freezer.MethodContainerdPause {
		t.Fatalf("FrozenBy = %v", by)
	}
	if err := m.Thaw(context.Background(), tg); err != nil {
		t.Fatal(err)
	}
	if s, _ := eng.Containerd.TaskStatus(context.Background(), testenv.EnginesNamespace, c.ID); s != "RUNNING" {
		t.Fatalf("task %q after thaw", s)
	}
	if tg.FreezerV1 != "" && v1State(t, tg) != "THAWED" {
		t.Fatalf("freezer %s after thaw", v1State(t, tg))
	}
}

// TestEngineUnreachableFallsBack: with the engine's socket missing,
// docker-pause fails with ErrEngine and the v1 freezer freezes instead.
func TestEngineUnreachableFallsBack(t *testing.T) {
	e := testenv.RequireEngines(t)
	roots := engineRoots(t, e)
	if roots.FreezerV1 == "" {
		testenv.Unavailable(t, "the cgroup v1 freezer")
	}
	bad, err := engines.NewDocker("unix:///nonexistent/docker.sock", 0)
	if err != nil {
		t.Fatal(err)
	}
	defer bad.Close()
	c := e.DockerRun(t, "freezer-fallback", nil)
	tg, err := freezer.Locate(roots, c.ID)
	if err != nil {
		t.Fatal(err)
	}
	ms := methods(t, roots, freezer.Engines{Docker: bad}, freezer.MethodDockerPause, freezer.MethodV1Freezer)
	start := time.Now()
	rep, err := freezer.FreezeReport(context.Background(), ms, tg)
	if err != nil {
		t.Fatal(err)
	}
	m, errs := rep.Method, rep.Tried
	t.Logf("unreachable engine, then v1 freezer: %v", time.Since(start))
	if m.Name() != freezer.MethodV1Freezer || len(errs) != 1 || !errors.Is(errs[0], freezer.ErrEngine) ||
		!strings.Contains(errs[0].Error(), "/nonexistent/docker.sock") {
		t.Fatalf("froze with %s after %v", m.Name(), errs)
	}
	if v1State(t, tg) != "FROZEN" {
		t.Fatal("not frozen")
	}
	if err := m.Thaw(context.Background(), tg); err != nil {
		t.Fatal(err)
	}
}
