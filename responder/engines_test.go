package responder

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/containsec/contain/internal/freezer"
	"github.com/containsec/contain/internal/metrics"
	"github.com/containsec/contain/internal/testenv"
	"github.com/containsec/contain/schemas/containv1"
)

// withEngines points the responder at the test engines
// (deploy/engines/start.sh: dockerd's exec root RUN_DIR/docker-exec sits
// beside its data root RUN_DIR/docker; containerd's runc state is the
// default /run/containerd/runc).
func withEngines(e testenv.Engines, edit func(*Config)) func(*Config) {
	return func(c *Config) {
		c.DockerHost = e.DockerHost
		c.ContainerdAddress = e.Containerd
		c.DockerRoot = e.DockerRoot
		c.DockerRuncRoot = filepath.Join(filepath.Dir(e.DockerRoot), "docker-exec", "runtime-runc", "moby")
		c.EngineTimeout = 1500 * time.Millisecond
		c.VerifyTimeout = 5 * time.Second
		if edit != nil {
			edit(c)
		}
	}
}

// v1 reads the v1 freezer state of an engine container's cgroup.
func v1(t testing.TB, c *testenv.EngineContainer) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("/sys/fs/cgroup/freezer", c.Cgroup, "freezer.state"))
	if err != nil {
		t.Fatalf("freezer of %s: %v", c.ID, err)
	}
	return strings.TrimSpace(string(b))
}

// thawOnCleanup thaws c's v1 freezer when the test ends (registered after
// the engine's own cleanup, so it runs first): a cgroup-frozen container
// cannot be killed.
func thawOnCleanup(t testing.TB, c *testenv.EngineContainer) {
	t.Cleanup(func() {
		_ = os.WriteFile(filepath.Join("/sys/fs/cgroup/freezer", c.Cgroup, "freezer.state"), []byte("THAWED"), 0)
	})
}

func ctrStatus(t testing.TB, e testenv.Engines, id string) string {
	t.Helper()
	out, err := e.Ctr("tasks", "ls")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(out, "\n") {
		if f := strings.Fields(line); len(f) >= 3 && f[0] == id {
			return f[2]
		}
	}
	t.Fatalf("no task %s in %q", id, out)
	return ""
}

func requireV1(t testing.TB) {
	if _, err := os.Stat("/sys/fs/cgroup/freezer"); err != nil {
		testenv.Unavailable(t, "the cgroup v1 freezer at /sys/fs/cgroup/freezer (these tests read it to verify)")
	}
}

// TestDockerPauseAndRelease: an alert about a docker container pauses it
// through the Docker Engine API (docker says Paused, the freezer FROZEN),
// the quarantine list shows it, and a release unpauses it through docker
// (docker says running and `docker exec` works), every action recording
// the method and who and why.
func TestDockerPauseAndRelease(t *testing.T) {
	e := testenv.RequireEngines(t)
	requireV1(t)
	h := start(t, withEngines(e, func(c *Config) {
		c.Policy.TrustedLabels = []string{CriticalLabel}
		c.Policy.NeverPauseLabels = map[string]string{CriticalLabel: "true"}
	}))
	c := e.DockerRun(t, "resp-docker", nil)
	thawOnCleanup(t, c)

	al := h.alert(c.ID, 0.95)
	h.publish(al)
	a := wantAction(t, h.next(), containv1.Action_TYPE_PAUSE, containv1.Action_RESULT_OK, c.ID)
	if a.Method != freezer.MethodDockerPause || a.Actor != "responder@"+testHost || !strings.Contains(a.Reason, "exec.unseen") {
		t.Fatalf("method %q actor %q reason %q", a.Method, a.Actor, a.Reason)
	}
	d := detail(t, a)
	t.Logf("docker-pause: alert trigger -> verified frozen %v, freeze %d us", time.Duration(a.LatencyNs), d.FreezeUs)
	if s, _ := e.Docker("inspect", "-f", "{{.State.Status}} {{.State.Paused}}", c.ID); s != "paused true" {
		t.Fatalf("docker inspect says %q after PAUSE/OK", s)
	}
	if s := v1(t, c); s != "FROZEN" {
		t.Fatalf("freezer %s after PAUSE/OK", s)
	}
	if len(d.Fallback) != 0 || d.Snapshot == nil || len(d.Snapshot.Processes) == 0 {
		t.Errorf("fallback %v, snapshot %+v", d.Fallback, d.Snapshot)
	}

	q, err := ListQuarantined(context.Background(), h.nc, testHost)
	if err != nil {
		t.Fatal(err)
	}
	if len(q) != 1 || q[0].ContainerID != c.ID || q[0].State != "frozen" || q[0].Method != freezer.MethodDockerPause || q[0].AlertID != containv1.FormatID(al.Id) {
		t.Fatalf("quarantine list: %+v", q)
	}

	rel, err := h.release(c.ID, "alice", "false positive: a deploy hook")
	if err != nil {
		t.Fatal(err)
	}
	ra := wantAction(t, rel, containv1.Action_TYPE_RELEASE, containv1.Action_RESULT_OK, c.ID)
	if ra.Method != freezer.MethodDockerPause || !strings.HasPrefix(ra.Actor, "alice/") || ra.Reason != "false positive: a deploy hook" {
		t.Errorf("release method %q actor %q reason %q", ra.Method, ra.Actor, ra.Reason)
	}
	if s, _ := e.Docker("inspect", "-f", "{{.State.Status}} {{.State.Paused}}", c.ID); s != "running false" {
		t.Fatalf("docker inspect says %q after release", s)
	}
	if s := v1(t, c); s != "THAWED" {
		t.Fatalf("freezer %s after release", s)
	}
	if out, err := e.Docker("exec", c.ID, "echo", "alive"); err != nil || out != "alive" {
		t.Fatalf("docker exec after release: %v %q", err, out)
	}
	pub := wantAction(t, h.next(), containv1.Action_TYPE_RELEASE, containv1.Action_RESULT_OK, c.ID)
	if !strings.HasPrefix(pub.Actor, "alice/") || pub.Method != freezer.MethodDockerPause {
		t.Errorf("published release: actor %q method %q", pub.Actor, pub.Method)
	}
	if q, _ := ListQuarantined(context.Background(), h.nc, testHost); len(q) != 0 {
		t.Errorf("quarantine list after release: %+v", q)
	}

	// A container labelled critical through docker (config.v2.json, not an
	// OCI annotation) is never paused.
	crit := e.DockerRun(t, "resp-docker-crit", []string{"--label", CriticalLabel + "=true"})
	h.publish(h.alert(crit.ID, 1))
	ca := wantAction(t, h.next(), containv1.Action_TYPE_PAUSE, containv1.Action_RESULT_SKIPPED, crit.ID)
	if d := detail(t, ca); !strings.Contains(d.Decision, "never-pause: container labelled "+CriticalLabel) {
		t.Errorf("critical docker container: %q", d.Decision)
	}
}

// TestDockerPausedByHumanReleasedThroughDocker: a container paused with
// `docker pause` (not by the responder) is recognised as frozen and a
// release unpauses it through docker, not the cgroup (which would leave
// docker saying Paused).
func TestDockerPausedByHumanReleasedThroughDocker(t *testing.T) {
	e := testenv.RequireEngines(t)
	requireV1(t)
	h := start(t, withEngines(e, func(c *Config) { c.Snapshot = false }))
	c := e.DockerRun(t, "resp-docker-human", nil)
	if _, err := e.Docker("pause", c.ID); err != nil {
		t.Fatal(err)
	}
	h.publish(h.alert(c.ID, 1))
	a := wantAction(t, h.next(), containv1.Action_TYPE_PAUSE, containv1.Action_RESULT_SKIPPED, c.ID)
	if d := detail(t, a); !strings.Contains(d.Decision, "already frozen ("+freezer.MethodDockerPause+")") {
		t.Errorf("decision %q", d.Decision)
	}
	rel, err := h.release(c.ID, "bob", "maintenance over")
	if err != nil {
		t.Fatal(err)
	}
	if ra := wantAction(t, rel, containv1.Action_TYPE_RELEASE, containv1.Action_RESULT_OK, c.ID); ra.Method != freezer.MethodDockerPause {
		t.Errorf("released with %q", ra.Method)
	}
	if s, _ := e.Docker("inspect", "-f", "{{.State.Status}}", c.ID); s != "running" {
		t.Fatalf("docker says %q after release", s)
	}
}

// TestContainerdPauseAndRelease: the same through containerd's task
// service (task PAUSED, then RUNNING).
func TestContainerdPauseAndRelease(t *testing.T) {
	e := testenv.RequireEngines(t)
	requireV1(t)
	h := start(t, withEngines(e, nil))
	c := e.ContainerdRun(t, "resp-ctd", nil)

	h.publish(h.alert(c.ID, 0.95))
	a := wantAction(t, h.next(), containv1.Action_TYPE_PAUSE, containv1.Action_RESULT_OK, c.ID)
	if a.Method != freezer.MethodContainerdPause {
		t.Fatalf("method %q; detail %s", a.Method, a.Detail)
	}
	t.Logf("containerd-pause: alert trigger -> verified frozen %v, freeze %d us", time.Duration(a.LatencyNs), detail(t, a).FreezeUs)
	if s := ctrStatus(t, e, c.ID); s != "PAUSED" {
		t.Fatalf("task %s after PAUSE/OK", s)
	}
	if s := v1(t, c); s != "FROZEN" {
		t.Fatalf("freezer %s after PAUSE/OK", s)
	}
	q, err := ListQuarantined(context.Background(), h.nc, testHost)
	if err != nil {
		t.Fatal(err)
	}
	if len(q) != 1 || q[0].ContainerID != c.ID || q[0].State != "frozen" || q[0].Method != freezer.MethodContainerdPause {
		t.Fatalf("quarantine list: %+v", q)
	}
	rel, err := h.release(c.ID, "alice", "verified benign")
	if err != nil {
		t.Fatal(err)
	}
	if ra := wantAction(t, rel, containv1.Action_TYPE_RELEASE, containv1.Action_RESULT_OK, c.ID); ra.Method != freezer.MethodContainerdPause || !strings.HasPrefix(ra.Actor, "alice/") || ra.Reason != "verified benign" {
		t.Errorf("release %q %q %q", ra.Method, ra.Actor, ra.Reason)
	}
	if s := ctrStatus(t, e, c.ID); s != "RUNNING" {
		t.Fatalf("task %s after release", s)
	}
	if s := v1(t, c); s != "THAWED" {
		t.Fatalf("freezer %s after release", s)
	}
	wantAction(t, h.next(), containv1.Action_TYPE_RELEASE, containv1.Action_RESULT_OK, c.ID)
}

// TestEngineUnreachableFallsBack: with the engines' sockets missing, the
// docker and containerd containers are frozen through the v1 freezer, the
// action records that method and, in its detail, the engine's failure;
// the fallback is counted.
func TestEngineUnreachableFallsBack(t *testing.T) {
	e := testenv.RequireEngines(t)
	requireV1(t)
	h := start(t, withEngines(e, func(c *Config) {
		c.DockerHost = "unix:///nonexistent/docker.sock"
		c.ContainerdAddress = "/nonexistent/containerd.sock"
		c.Snapshot = false
	}))
	dc := e.DockerRun(t, "resp-fallback-d", nil)
	thawOnCleanup(t, dc)
	cc := e.ContainerdRun(t, "resp-fallback-c", nil)
	thawOnCleanup(t, cc)

	for i, c := range []*testenv.EngineContainer{dc, cc} {
		h.publish(h.alert(c.ID, 1))
		a := wantAction(t, h.next(), containv1.Action_TYPE_PAUSE, containv1.Action_RESULT_OK, c.ID)
		d := detail(t, a)
		want := []string{freezer.MethodDockerPause, "/nonexistent/docker.sock"}
		if i == 1 {
			want = []string{freezer.MethodContainerdPause, "/nonexistent/containerd.sock"}
		}
		if a.Method != freezer.MethodV1Freezer || len(d.Fallback) != 1 || !strings.HasPrefix(d.Fallback[0], want[0]+": ") ||
			!strings.Contains(d.Fallback[0], want[1]) || !strings.Contains(d.Decision, "after 1 other method") {
			t.Fatalf("%s: method %q decision %q fallback %q", c.ID, a.Method, d.Decision, d.Fallback)
		}
		t.Logf("%s unreachable -> %s: freeze %d us", want[0], a.Method, d.FreezeUs)
		if s := v1(t, c); s != "FROZEN" {
			t.Fatalf("%s: freezer %s", c.ID, s)
		}
		if n := testutil.ToFloat64(h.m.Errors.WithLabelValues(metrics.StageResponder, "freeze_fallback")); n != float64(i+1) {
			t.Errorf("errors_total{freeze_fallback} = %v", n)
		}
		// The release thaws through the same means: the freezer.
		rel, err := h.release(c.ID, "alice", "engine down, checked by hand")
		if err != nil {
			t.Fatal(err)
		}
		if ra := wantAction(t, rel, containv1.Action_TYPE_RELEASE, containv1.Action_RESULT_OK, c.ID); ra.Method != freezer.MethodV1Freezer {
			t.Errorf("released with %q", ra.Method)
		}
		if s := v1(t, c); s != "THAWED" {
			t.Fatalf("%s: freezer %s after release", c.ID, s)
		}
		h.next()
	}
	if out, err := e.Docker("exec", dc.ID, "echo", "alive"); err != nil || out != "alive" {
		t.Fatalf("docker exec after release: %v %q", err, out)
	}
}

// TestDockerExitedBeforeFreeze: a docker container that exits before the
// alert is handled (dockerd removes its cgroup and runc state) is a clean
// FAILED "exited" action, nothing quarantined.
func TestDockerExitedBeforeFreeze(t *testing.T) {
	e := testenv.RequireEngines(t)
	h := start(t, withEngines(e, nil))
	c := e.DockerRun(t, "resp-docker-exits", nil)
	if _, err := e.Docker("kill", c.ID); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 10*time.Second, "the docker container to stop", func() bool {
		s, err := e.Docker("inspect", "-f", "{{.State.Running}}", c.ID)
		return err == nil && s == "false"
	})
	h.publish(h.alert(c.ID, 1))
	a := wantAction(t, h.next(), containv1.Action_TYPE_PAUSE, containv1.Action_RESULT_FAILED, c.ID)
	d := detail(t, a)
	if !strings.Contains(d.Decision, "exited before it could be paused") || !strings.Contains(d.Error, freezer.ErrExited.Error()) {
		t.Errorf("decision %q error %q", d.Decision, d.Error)
	}
	if q, _ := ListQuarantined(context.Background(), h.nc, testHost); len(q) != 0 {
		t.Errorf("quarantine list: %+v", q)
	}
}

// A responder that stopped between an engine method's cgroup2 pre-freeze
// and the engine's pause left a container frozen that docker calls
// running, with no record. The next responder completes the pause through
// docker at start and records it; release thaws it.
func TestInterruptedPreFreezeCompletedAtStart(t *testing.T) {
	e := testenv.RequireEngines(t)
	requireV1(t)
	c := e.DockerRun(t, "resp-prefrozen", nil)
	thawOnCleanup(t, c)
	freeze := filepath.Join("/sys/fs/cgroup/unified", c.Cgroup, "cgroup.freeze")
	t.Cleanup(func() { _ = os.WriteFile(freeze, []byte("0"), 0) })
	// What the stopped responder left: cgroup2 frozen, docker unaware.
	if err := os.WriteFile(freeze, []byte("1"), 0); err != nil {
		t.Fatal(err)
	}
	if s, _ := e.Docker("inspect", "-f", "{{.State.Status}}", c.ID); s != "running" {
		t.Fatalf("docker says %q before the responder starts", s)
	}

	h := start(t, withEngines(e, nil))
	a := wantAction(t, h.next(), containv1.Action_TYPE_PAUSE, containv1.Action_RESULT_OK, c.ID)
	if a.Method != freezer.MethodDockerPause || !strings.Contains(a.Reason, "interrupted cgroup2 pre-freeze") {
		t.Fatalf("method %q reason %q", a.Method, a.Reason)
	}
	if s, _ := e.Docker("inspect", "-f", "{{.State.Status}} {{.State.Paused}}", c.ID); s != "paused true" {
		t.Fatalf("docker inspect says %q after the completed pause", s)
	}
	if b, _ := os.ReadFile(freeze); strings.TrimSpace(string(b)) != "0" {
		t.Fatalf("cgroup2 still frozen by the pre-freeze: %q", b)
	}
	q, err := ListQuarantined(context.Background(), h.nc, testHost)
	if err != nil || len(q) != 1 || q[0].ContainerID != c.ID || q[0].State != "frozen" {
		t.Fatalf("quarantine list: %+v %v", q, err)
	}
	rel, err := h.release(c.ID, "alice", "checked")
	if err != nil {
		t.Fatal(err)
	}
	wantAction(t, rel, containv1.Action_TYPE_RELEASE, containv1.Action_RESULT_OK, c.ID)
	if out, err := e.Docker("exec", c.ID, "echo", "alive"); err != nil || out != "alive" {
		t.Fatalf("docker exec after release: %v %q", err, out)
	}
}
