package engines_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containsec/contain/internal/engines"
	"github.com/containsec/contain/internal/testenv"
)

func freezerState(t *testing.T, cgroup string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("/sys/fs/cgroup/freezer", cgroup, "freezer.state"))
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// pauseRoundTrip pauses through an engine, checks the engine's view and
// the v1 freezer, resumes, and checks the freezer thawed.
func pauseRoundTrip(t *testing.T, cgroup string, pause, resume func() error, paused func() (bool, error)) {
	t.Helper()
	if err := pause(); err != nil {
		t.Fatal(err)
	}
	if s := freezerState(t, cgroup); s != "FROZEN" {
		t.Fatalf("after pause: freezer %s", s)
	}
	if ok, err := paused(); err != nil || !ok {
		t.Fatalf("the engine does not say paused: %v", err)
	}
	if err := resume(); err != nil {
		t.Fatal(err)
	}
	if s := freezerState(t, cgroup); s != "THAWED" {
		t.Fatalf("after resume: freezer %s", s)
	}
}

func TestDockerInspectPause(t *testing.T) {
	e := testenv.RequireEngines(t)
	d, err := engines.NewDocker(e.DockerHost, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	ctx := context.Background()
	if err := d.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	c := e.DockerRun(t, "engines-docker", []string{"--label", "team=payments"})

	got, err := d.Inspect(ctx, c.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.ID != c.ID || got.Name != "engines-docker" || got.ImageRef != testenv.EnginesImage ||
		!strings.HasPrefix(got.ImageID, "sha256:") || got.Labels["team"] != "payments" ||
		got.Pid != c.Pid || !got.Running || got.Paused {
		t.Fatalf("inspect: %+v (want id %s pid %d)", got, c.ID, c.Pid)
	}

	pauseRoundTrip(t, c.Cgroup, func() error { return d.Pause(ctx, c.ID) }, func() error { return d.Unpause(ctx, c.ID) },
		func() (bool, error) { got, err := d.Inspect(ctx, c.ID); return got.Paused, err })

	if _, err := d.Inspect(ctx, "no-such-container"); !errors.Is(err, engines.ErrNotFound) {
		t.Fatalf("missing container: %v", err)
	}
	bad, _ := engines.NewDocker("unix:///nonexistent/docker.sock", 0)
	if err := bad.Ping(ctx); err == nil || !strings.Contains(err.Error(), "/nonexistent/docker.sock") {
		t.Fatalf("unreachable engine: %v", err)
	}
}

func TestContainerdContainerPause(t *testing.T) {
	e := testenv.RequireEngines(t)
	cd, err := engines.NewContainerd(e.Containerd, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer cd.Close()
	ctx := context.Background()
	if v, err := cd.Version(ctx); err != nil || v == "" {
		t.Fatalf("version %q: %v", v, err)
	}
	c := e.ContainerdRun(t, "engines-ctd", []string{"--label", "team=payments"})
	ns := testenv.EnginesNamespace

	got, err := cd.Container(ctx, ns, c.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.ID != c.ID || got.ImageRef != "docker.io/"+testenv.EnginesImage || got.Labels["team"] != "payments" ||
		got.Pid != c.Pid || !got.Running {
		t.Fatalf("container: %+v (pid %d)", got, c.Pid)
	}
	pauseRoundTrip(t, c.Cgroup, func() error { return cd.Pause(ctx, ns, c.ID) }, func() error { return cd.Resume(ctx, ns, c.ID) },
		func() (bool, error) { s, err := cd.TaskStatus(ctx, ns, c.ID); return s == "PAUSED", err })
	if _, err := cd.Container(ctx, ns, "no-such"); !errors.Is(err, engines.ErrNotFound) {
		t.Fatalf("missing container: %v", err)
	}
	if _, err := cd.Container(ctx, "other-ns", c.ID); !errors.Is(err, engines.ErrNotFound) {
		t.Fatalf("wrong namespace: %v", err)
	}
}

func TestContainerdImage(t *testing.T) {
	e := testenv.RequireEngines(t)
	cd, err := engines.NewContainerd(e.Containerd, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer cd.Close()
	ctx := context.Background()
	im, err := cd.Image(ctx, testenv.EnginesNamespace, "docker.io/"+testenv.EnginesImage)
	if err != nil {
		t.Fatal(err)
	}
	// docker imported the same image: its id is the config digest.
	id, err := e.Docker("image", "inspect", "-f", "{{.Id}}", testenv.EnginesImage)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(im.Digest, "sha256:") || im.ID != id {
		t.Fatalf("image: %+v, want id %s", im, id)
	}
	if _, err := cd.Image(ctx, testenv.EnginesNamespace, "docker.io/no/such:image"); !errors.Is(err, engines.ErrNotFound) {
		t.Fatalf("missing image: %v", err)
	}
}
