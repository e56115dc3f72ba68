package responder

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"

	"github.com/containsec/contain/internal/auth"
	"github.com/containsec/contain/internal/bus"
	"github.com/containsec/contain/internal/freezer"
	"github.com/containsec/contain/internal/metrics"
	"github.com/containsec/contain/internal/testenv"
	"github.com/containsec/contain/schemas/containv1"
)

const testHost = "node-1"

type harness struct {
	t    testing.TB
	r    *Responder
	nc   *nats.Conn
	js   jetstream.JetStream
	m    *metrics.Metrics
	ids  *containv1.IDGen
	prod *bus.Producer
	acts jetstream.Consumer
	stop func()
}

// start runs a responder for testHost against an embedded NATS.
func start(t testing.TB, edit func(*Config)) *harness {
	t.Helper()
	testenv.RequireRoot(t)
	if testenv.FreezerV1Root == "" && testenv.Cgroup2Root == "" {
		testenv.Unavailable(t, "a cgroup v1 freezer or cgroup2 mount")
	}
	_, nc, js := testenv.NATS(t)
	return startOn(t, nc, js, edit)
}

// startOn runs a responder for testHost on an existing NATS; the responder
// stops when the returned stop func is called or the test ends.
func startOn(t testing.TB, nc *nats.Conn, js jetstream.JetStream, edit func(*Config)) *harness {
	t.Helper()
	cfg := DefaultConfig()
	cfg.Host = testHost
	for _, c := range testOperators {
		cfg.OperatorKeys = append(cfg.OperatorKeys, c.Trusted())
	}
	cfg.StateDir = t.TempDir()
	if edit != nil {
		edit(&cfg)
	}
	m := metrics.New()
	r, err := New(cfg, nc, js, m, testenv.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	stop := testenv.Go(t, 5*time.Second, r.Run)
	acts, err := js.OrderedConsumer(context.Background(), containv1.StreamActions, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{containv1.ActionsSubject(testHost)},
	})
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{t: t, r: r, nc: nc, js: js, m: m, ids: containv1.NewIDGen(), prod: bus.NewProducer(testHost, "analyzer"), acts: acts, stop: stop}
	// Wait for the control subscriptions, which Run makes before consuming.
	testenv.WaitFor(t, 5*time.Second, "responder serving quarantine.list", func() bool {
		_, err := ListQuarantined(context.Background(), nc, testHost)
		return err == nil
	})
	return h
}

// testOperators are the operators the test responders trust, by name.
var testOperators = func() map[string]*auth.Credentials {
	out := map[string]*auth.Credentials{}
	for _, name := range []string{"alice", "bob"} {
		c, err := auth.Generate(name)
		if err != nil {
			panic(err)
		}
		out[name] = c
	}
	return out
}()

// release asks the responder to release id, signed by the test operator
// who (alice or bob).
func (h *harness) release(id, who, reason string) (*containv1.Event, error) {
	return Release(context.Background(), h.nc, auth.NewSigner(testOperators[who]), testHost, id, reason, "")
}

// alert builds an alert event about container c.
func (h *harness) alert(containerID string, score float64) *containv1.Event {
	trigger := &containv1.Event{
		Id: h.ids.Next(), Host: testHost, ContainerId: containerID, Kind: containv1.Kind_KIND_EXEC,
		WallNs: time.Now().UnixNano(), SchemaVersion: containv1.SchemaVersion,
		Body: &containv1.Event_Exec{Exec: &containv1.Exec{Filename: "/bin/nc", Argv: []string{"nc", "-l"}}},
	}
	return &containv1.Event{
		Id: h.ids.Next(), Host: testHost, ContainerId: containerID, ContainerName: "web",
		ImageRef: "example.com/web:1", ImageDigest: "sha256:abc", Kind: containv1.Kind_KIND_ALERT,
		WallNs: time.Now().UnixNano(), SchemaVersion: containv1.SchemaVersion,
		Body: &containv1.Event_Alert{Alert: &containv1.Alert{
			Score: score, Rule: "exec.unseen",
			Reasons: []*containv1.Reason{{Code: "exec.unseen", Message: "/bin/nc never ran during learning", Score: score}},
			Trigger: trigger,
		}},
	}
}

func (h *harness) publish(evs ...*containv1.Event) {
	h.t.Helper()
	if err := bus.Publish(context.Background(), h.js, containv1.AlertsSubject(testHost), h.prod.Batch(evs)); err != nil {
		h.t.Fatal(err)
	}
}

// nextOf returns the next action published for testHost, taking a batch
// of several one at a time (queued in pending).
func (h *harness) nextOf(pending *[]*containv1.Event) *containv1.Event {
	h.t.Helper()
	for len(*pending) == 0 {
		msg, err := h.acts.Next(jetstream.FetchMaxWait(10 * time.Second))
		if err != nil {
			h.t.Fatalf("no action published: %v", err)
		}
		b, err := bus.Decode(msg.Data())
		if err != nil {
			h.t.Fatal(err)
		}
		_ = msg.Ack()
		*pending = b.Events
	}
	ev := (*pending)[0]
	*pending = (*pending)[1:]
	return ev
}

// next returns the next action published for testHost.
func (h *harness) next() *containv1.Event {
	h.t.Helper()
	msg, err := h.acts.Next(jetstream.FetchMaxWait(10 * time.Second))
	if err != nil {
		h.t.Fatalf("no action published: %v", err)
	}
	b, err := bus.Decode(msg.Data())
	if err != nil {
		h.t.Fatal(err)
	}
	if len(b.Events) != 1 {
		h.t.Fatalf("want 1 action per batch here, got %d", len(b.Events))
	}
	ev := b.Events[0]
	if ev.Kind != containv1.Kind_KIND_ACTION || ev.GetAction() == nil {
		h.t.Fatalf("not an action: %v", ev)
	}
	return ev
}

func detail(t testing.TB, a *containv1.Action) Detail {
	t.Helper()
	var d Detail
	if err := json.Unmarshal([]byte(a.Detail), &d); err != nil {
		t.Fatalf("detail is not JSON: %v: %q", err, a.Detail)
	}
	return d
}

func wantAction(t testing.TB, ev *containv1.Event, typ containv1.Action_Type, res containv1.Action_Result, containerID string) *containv1.Action {
	t.Helper()
	a := ev.GetAction()
	if a.Type != typ || a.Result != res {
		t.Fatalf("action %v/%v, want %v/%v; detail %s", a.Type, a.Result, typ, res, a.Detail)
	}
	if ev.ContainerId != containerID {
		t.Fatalf("action container %q, want %q", ev.ContainerId, containerID)
	}
	return a
}

func freezerState(t testing.TB, c *testenv.Container) string {
	t.Helper()
	s, err := c.FreezerState()
	if err != nil {
		t.Fatalf("freezer state of %s: %v", c.ID, err)
	}
	return s
}

func TestPauseAndRelease(t *testing.T) {
	h := start(t, nil)
	c := testenv.RunContainer(t, "pause", testenv.ContainerSpec{})
	if out, err := c.Exec(10*time.Second, "/bin/sh", "-c", "echo pwned > /tmp/dropped"); err != nil {
		t.Fatalf("exec before: %v: %s", err, out)
	}
	al := h.alert(c.ID, 0.95)
	h.publish(al)

	ev := h.next()
	a := wantAction(t, ev, containv1.Action_TYPE_PAUSE, containv1.Action_RESULT_OK, c.ID)
	if got := freezerState(t, c); got != "FROZEN" {
		t.Fatalf("freezer state %s after PAUSE/OK", got)
	}
	if ev.ImageRef != "example.com/web:1" || ev.ImageDigest != "sha256:abc" || ev.Host != testHost {
		t.Errorf("fields not copied: image %q digest %q host %q", ev.ImageRef, ev.ImageDigest, ev.Host)
	}
	if string(a.AlertId) != string(al.Id) || a.Score != 0.95 || a.Actor != "responder@"+testHost {
		t.Errorf("alert_id/score/actor: %x %v %q", a.AlertId, a.Score, a.Actor)
	}
	if a.Method != freezer.MethodV1Freezer || !strings.Contains(a.Reason, "exec.unseen") {
		t.Errorf("method %q reason %q", a.Method, a.Reason)
	}
	if a.LatencyNs <= 0 || a.LatencyNs > int64(10*time.Second) {
		t.Errorf("latency_ns %d out of range", a.LatencyNs)
	}
	t.Logf("alert trigger -> verified frozen: %v", time.Duration(a.LatencyNs))
	d := detail(t, a)
	if d.Snapshot == nil || len(d.Snapshot.Processes) == 0 {
		t.Fatalf("no snapshot processes: %s", a.Detail)
	}
	foundLoop := false
	for _, p := range d.Snapshot.Processes {
		if len(p.Argv) > 0 && strings.Contains(strings.Join(p.Argv, " "), "while true") {
			foundLoop = true
		}
	}
	if !foundLoop {
		t.Errorf("snapshot lacks the container's shell loop: %+v", d.Snapshot.Processes)
	}
	foundFile := false
	for _, f := range d.Snapshot.ChangedFiles {
		if f.Path == "/tmp/dropped" {
			foundFile = true
		}
	}
	if !foundFile {
		t.Errorf("snapshot lacks /tmp/dropped among changed files: %+v", d.Snapshot.ChangedFiles)
	}
	if _, err := c.Exec(time.Second, "/bin/true"); err == nil {
		t.Errorf("exec into a frozen container succeeded")
	}

	q, err := ListQuarantined(context.Background(), h.nc, testHost)
	if err != nil {
		t.Fatal(err)
	}
	if len(q) != 1 || q[0].ContainerID != c.ID || q[0].State != "frozen" || q[0].AlertID != containv1.FormatID(al.Id) {
		t.Fatalf("quarantine list: %+v", q)
	}
	if n := testutil.ToFloat64(h.m.Quarantined); n != 1 {
		t.Errorf("contain_quarantined_containers %v, want 1", n)
	}
	if n, n2 := histCount(h.m.ExecToFrozen), histCount(h.m.AlertToFrozen); n != 1 || n2 != 1 {
		t.Errorf("exec_to_frozen / alert_to_frozen observations %d %d, want 1 1", n, n2)
	}

	rel, err := h.release(c.ID, "alice", "false positive: nc is expected")
	if err != nil {
		t.Fatal(err)
	}
	ra := wantAction(t, rel, containv1.Action_TYPE_RELEASE, containv1.Action_RESULT_OK, c.ID)
	if !strings.HasPrefix(ra.Actor, "alice/") || ra.Reason != "false positive: nc is expected" || string(ra.AlertId) != string(al.Id) {
		t.Errorf("release actor %q reason %q alert %x", ra.Actor, ra.Reason, ra.AlertId)
	}
	if got := freezerState(t, c); got != "THAWED" {
		t.Fatalf("freezer state %s after release", got)
	}
	if out, err := c.Exec(10*time.Second, "/bin/echo", "alive"); err != nil || !strings.Contains(out, "alive") {
		t.Fatalf("exec after release: %v: %s", err, out)
	}
	pub := wantAction(t, h.next(), containv1.Action_TYPE_RELEASE, containv1.Action_RESULT_OK, c.ID)
	if !strings.HasPrefix(pub.Actor, "alice/") {
		t.Errorf("published release actor %q", pub.Actor)
	}
	if q, _ := ListQuarantined(context.Background(), h.nc, testHost); len(q) != 0 {
		t.Errorf("quarantine list after release: %+v", q)
	}
	if n := testutil.ToFloat64(h.m.Quarantined); n != 0 {
		t.Errorf("contain_quarantined_containers %v after release, want 0", n)
	}
	// Releasing again: nothing frozen, recorded as SKIPPED and reported.
	if _, err := h.release(c.ID, "alice", "again"); err == nil {
		t.Errorf("second release of a thawed container reported ok")
	}
	wantAction(t, h.next(), containv1.Action_TYPE_RELEASE, containv1.Action_RESULT_SKIPPED, c.ID)
	// Within release_grace, a new alert is recorded, not acted on.
	h.publish(h.alert(c.ID, 0.97))
	ga := wantAction(t, h.next(), containv1.Action_TYPE_PAUSE, containv1.Action_RESULT_SKIPPED, c.ID)
	if d := detail(t, ga); !strings.Contains(d.Decision, "release_grace") || !strings.Contains(d.Decision, "alice") {
		t.Errorf("decision within the release grace: %q", d.Decision)
	}
	if got := freezerState(t, c); got != "THAWED" {
		t.Fatalf("frozen again within the release grace: %s", got)
	}
	if n := testutil.ToFloat64(h.m.Actions.WithLabelValues("PAUSE", "OK")); n != 1 {
		t.Errorf("actions_total{PAUSE,OK} = %v", n)
	}
}

func TestBelowThresholdSkipped(t *testing.T) {
	h := start(t, func(c *Config) { c.Threshold = 0.7 })
	c := testenv.RunContainer(t, "below", testenv.ContainerSpec{})
	h.publish(h.alert(c.ID, 0.5))
	a := wantAction(t, h.next(), containv1.Action_TYPE_PAUSE, containv1.Action_RESULT_SKIPPED, c.ID)
	if d := detail(t, a); !strings.Contains(d.Decision, "below threshold") {
		t.Errorf("decision %q", d.Decision)
	}
	if got := freezerState(t, c); got != "THAWED" {
		t.Fatalf("freezer state %s after a below-threshold alert", got)
	}
}

func TestDryRun(t *testing.T) {
	h := start(t, func(c *Config) { c.DryRun = true })
	c := testenv.RunContainer(t, "dry", testenv.ContainerSpec{})
	h.publish(h.alert(c.ID, 0.99))
	a := wantAction(t, h.next(), containv1.Action_TYPE_PAUSE, containv1.Action_RESULT_DRY_RUN, c.ID)
	if d := detail(t, a); !strings.Contains(d.Decision, "would pause") {
		t.Errorf("decision %q", d.Decision)
	}
	if got := freezerState(t, c); got != "THAWED" {
		t.Fatalf("freezer state %s in dry run", got)
	}
}

func TestPolicyRuleDryRunScope(t *testing.T) {
	h := start(t, func(c *Config) {
		c.Policy.Rules = []Rule{{Name: "canary", Scope: Scope{Image: "example.com/web:*"}, Threshold: 0.5, DryRun: true}}
	})
	c := testenv.RunContainer(t, "scope", testenv.ContainerSpec{})
	h.publish(h.alert(c.ID, 0.6)) // below the default 0.8, above the rule's 0.5
	a := wantAction(t, h.next(), containv1.Action_TYPE_PAUSE, containv1.Action_RESULT_DRY_RUN, c.ID)
	if d := detail(t, a); d.PolicyRule != "canary" || d.Threshold != 0.5 {
		t.Errorf("detail %+v", d)
	}
}

func TestContainerExitedBeforeFreeze(t *testing.T) {
	h := start(t, nil)
	c := testenv.RunContainer(t, "exits", testenv.ContainerSpec{Args: []string{"/bin/true"}})
	testenv.WaitFor(t, 10*time.Second, "container to stop", func() bool {
		s, err := c.State()
		return err == nil && s.Status == "stopped"
	})
	h.publish(h.alert(c.ID, 0.99))
	a := wantAction(t, h.next(), containv1.Action_TYPE_PAUSE, containv1.Action_RESULT_FAILED, c.ID)
	d := detail(t, a)
	if !strings.Contains(d.Decision, "exited") || !strings.Contains(d.Error, "no process") {
		t.Errorf("decision %q error %q", d.Decision, d.Error)
	}
	if s, err := c.FreezerState(); err == nil && s != "THAWED" {
		t.Errorf("empty cgroup left %s", s)
	}

	// Deleted altogether: no runtime knows it any more, refused.
	c.Remove()
	h.publish(h.alert(c.ID, 0.99))
	a = wantAction(t, h.next(), containv1.Action_TYPE_PAUSE, containv1.Action_RESULT_FAILED, c.ID)
	if d := detail(t, a); !strings.Contains(d.Decision, "refused") || !strings.Contains(d.Error, "container not found") {
		t.Errorf("decision %q error %q", d.Decision, d.Error)
	}
	if q, _ := ListQuarantined(context.Background(), h.nc, testHost); len(q) != 0 {
		t.Errorf("quarantine list: %+v", q)
	}
}

func TestNeverPause(t *testing.T) {
	h := start(t, func(c *Config) {
		c.Policy.Allow = []Scope{{ContainerName: "trusted-*"}}
		c.Policy.NeverPauseIDs = []string{"contain-*"}
		c.Policy.TrustedLabels = []string{CriticalLabel}
		c.Policy.NeverPauseLabels = map[string]string{CriticalLabel: "true"}
	})
	crit := testenv.RunContainer(t, "crit", testenv.ContainerSpec{Annotations: map[string]string{CriticalLabel: "true"}})
	plain := testenv.RunContainer(t, "plain", testenv.ContainerSpec{})

	h.publish(h.alert(crit.ID, 1))
	a := wantAction(t, h.next(), containv1.Action_TYPE_PAUSE, containv1.Action_RESULT_SKIPPED, crit.ID)
	if d := detail(t, a); !strings.Contains(d.Decision, "never-pause: container labelled io.contain.critical=true") {
		t.Errorf("decision %q", d.Decision)
	}

	host := h.alert("", 1)
	h.publish(host)
	a = wantAction(t, h.next(), containv1.Action_TYPE_PAUSE, containv1.Action_RESULT_FAILED, "")
	if d := detail(t, a); !strings.Contains(d.Error, "refused: not a container: no container id (a host process") {
		t.Errorf("decision %q error %q", d.Decision, d.Error)
	}

	trusted := h.alert(plain.ID, 1)
	trusted.ContainerName = "trusted-db"
	h.publish(trusted)
	a = wantAction(t, h.next(), containv1.Action_TYPE_PAUSE, containv1.Action_RESULT_SKIPPED, plain.ID)
	if d := detail(t, a); !strings.Contains(d.Decision, "allowlisted") {
		t.Errorf("decision %q", d.Decision)
	}

	own := h.alert("contain-collector", 1)
	h.publish(own)
	a = wantAction(t, h.next(), containv1.Action_TYPE_PAUSE, containv1.Action_RESULT_SKIPPED, "contain-collector")
	if d := detail(t, a); !strings.Contains(d.Decision, "contain's own") {
		t.Errorf("decision %q", d.Decision)
	}
	for _, c := range []*testenv.Container{crit, plain} {
		if got := freezerState(t, c); got != "THAWED" {
			t.Errorf("%s is %s", c.ID, got)
		}
	}
}

func TestCircuitBreaker(t *testing.T) {
	h := start(t, func(c *Config) { c.MaxPausesPerMinute = 1; c.Snapshot = false })
	c1 := testenv.RunContainer(t, "cb1", testenv.ContainerSpec{})
	c2 := testenv.RunContainer(t, "cb2", testenv.ContainerSpec{})
	h.publish(h.alert(c1.ID, 1))
	wantAction(t, h.next(), containv1.Action_TYPE_PAUSE, containv1.Action_RESULT_OK, c1.ID)
	h.publish(h.alert(c2.ID, 1))
	a := wantAction(t, h.next(), containv1.Action_TYPE_PAUSE, containv1.Action_RESULT_SKIPPED, c2.ID)
	if d := detail(t, a); !strings.Contains(d.Decision, "circuit breaker open") {
		t.Errorf("decision %q", d.Decision)
	}
	if got := freezerState(t, c2); got != "THAWED" {
		t.Errorf("c2 is %s with the breaker open", got)
	}
	if n := testutil.ToFloat64(h.m.Errors.WithLabelValues(metrics.StageResponder, "circuit_open")); n != 1 {
		t.Errorf("errors_total{circuit_open} = %v", n)
	}
	// A minute later the window is free again.
	h.r.actMu.Lock()
	h.r.now = func() time.Time { return time.Now().Add(61 * time.Second) }
	h.r.actMu.Unlock()
	h.publish(h.alert(c2.ID, 1))
	wantAction(t, h.next(), containv1.Action_TYPE_PAUSE, containv1.Action_RESULT_OK, c2.ID)
	if got := freezerState(t, c2); got != "FROZEN" {
		t.Errorf("c2 is %s after the breaker closed", got)
	}
}

func TestAlreadyQuarantinedSkipped(t *testing.T) {
	h := start(t, func(c *Config) { c.Snapshot = false })
	c := testenv.RunContainer(t, "twice", testenv.ContainerSpec{})
	h.publish(h.alert(c.ID, 1), h.alert(c.ID, 1))
	msg, err := h.acts.Next(jetstream.FetchMaxWait(10 * time.Second))
	if err != nil {
		t.Fatal(err)
	}
	b, err := bus.Decode(msg.Data())
	if err != nil {
		t.Fatal(err)
	}
	if len(b.Events) != 2 {
		t.Fatalf("%d actions for a batch of 2 alerts", len(b.Events))
	}
	wantAction(t, b.Events[0], containv1.Action_TYPE_PAUSE, containv1.Action_RESULT_OK, c.ID)
	a := wantAction(t, b.Events[1], containv1.Action_TYPE_PAUSE, containv1.Action_RESULT_SKIPPED, c.ID)
	if d := detail(t, a); !strings.Contains(d.Decision, "already quarantined") {
		t.Errorf("decision %q", d.Decision)
	}
}

func TestFreezeMethods(t *testing.T) {
	for _, method := range []string{freezer.MethodV2Freeze, freezer.MethodRuncPause} {
		t.Run(method, func(t *testing.T) {
			if method == freezer.MethodV2Freeze {
				if _, err := os.Stat("/sys/fs/cgroup/unified/cgroup.procs"); err != nil {
					testenv.Unavailable(t, "cgroup2 at /sys/fs/cgroup/unified")
				}
			}
			h := start(t, func(c *Config) { c.Methods = []string{method}; c.Snapshot = false })
			c := testenv.RunContainer(t, "m", testenv.ContainerSpec{})
			h.publish(h.alert(c.ID, 1))
			a := wantAction(t, h.next(), containv1.Action_TYPE_PAUSE, containv1.Action_RESULT_OK, c.ID)
			if a.Method != method {
				t.Errorf("method %q", a.Method)
			}
			if method == freezer.MethodV2Freeze {
				ev, err := os.ReadFile(filepath.Join("/sys/fs/cgroup/unified", c.ID, "cgroup.events"))
				if err != nil || !strings.Contains(string(ev), "frozen 1") {
					t.Fatalf("cgroup.events: %v: %s", err, ev)
				}
			} else if s, err := c.State(); err != nil || s.Status != "paused" {
				t.Fatalf("runc state %+v %v", s, err)
			}
			if _, err := c.Exec(time.Second, "/bin/true"); err == nil {
				t.Errorf("exec into a frozen container succeeded")
			}
			if _, err := h.release(c.ID, "bob", "checked"); err != nil {
				t.Fatal(err)
			}
			if out, err := c.Exec(10*time.Second, "/bin/echo", "alive"); err != nil || !strings.Contains(out, "alive") {
				t.Fatalf("exec after release: %v: %s", err, out)
			}
		})
	}
}

// TestHostBindingRefused: an alert batch on this host's subject whose
// event names another host is refused and counted by reason, whatever
// stage the batch claims, and freezes nothing.
func TestHostBindingRefused(t *testing.T) {
	h := start(t, nil)
	c := testenv.RunContainer(t, "unauth", testenv.ContainerSpec{})
	ev := h.alert(c.ID, 1)
	ev.Host = "other-host"
	if err := bus.Publish(context.Background(), h.js, containv1.AlertsSubject(testHost), h.prod.Batch([]*containv1.Event{ev})); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 10*time.Second, "the mismatched batch counted", func() bool {
		return testutil.ToFloat64(h.m.Refused.WithLabelValues(metrics.StageResponder, bus.ReasonEventHost)) == 1
	})
	if got := freezerState(t, c); got != "THAWED" {
		t.Errorf("container is %s after a batch for another host", got)
	}
	// The same alert naming this host is acted on.
	h.publish(h.alert(c.ID, 1))
	wantAction(t, h.next(), containv1.Action_TYPE_PAUSE, containv1.Action_RESULT_OK, c.ID)
}

// TestForgedControlRefused: a release request that is unsigned, signed by
// an unknown key, tampered with, for another host, stale or replayed is
// refused with its reason and counted; the container stays frozen. The
// same request signed by a trusted operator then releases it.
func TestForgedControlRefused(t *testing.T) {
	h := start(t, func(c *Config) { c.Snapshot = false })
	c := testenv.RunContainer(t, "forged", testenv.ContainerSpec{})
	h.publish(h.alert(c.ID, 1))
	wantAction(t, h.next(), containv1.Action_TYPE_PAUSE, containv1.Action_RESULT_OK, c.ID)

	body, _ := json.Marshal(ReleaseRequest{ContainerID: c.ID, Reason: "forged", Actor: "alice"})
	alice := auth.NewSigner(testOperators["alice"])
	mallory, _ := auth.Generate("alice")
	sign := func(s *auth.Signer, purpose string) []byte {
		raw, err := s.Sign(purpose, body)
		if err != nil {
			t.Fatal(err)
		}
		return raw
	}
	tampered := func() []byte {
		var env auth.Signed
		_ = json.Unmarshal(sign(alice, ReleasePurpose(testHost)), &env)
		env.OSUser = "someone-else"
		raw, _ := json.Marshal(env)
		return raw
	}()
	stale := &auth.Signer{Creds: testOperators["alice"], OSUser: "x", Now: func() time.Time { return time.Now().Add(-10 * time.Minute) }}
	valid := sign(alice, ReleasePurpose(testHost))
	send := func(data []byte) ControlReply {
		t.Helper()
		msg, err := h.nc.Request(containv1.ControlSubject(testHost, VerbRelease), data, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		var reply ControlReply
		if err := json.Unmarshal(msg.Data, &reply); err != nil {
			t.Fatal(err)
		}
		return reply
	}
	for _, tc := range []struct {
		name, reason string
		data         []byte
	}{
		{"unsigned", auth.ReasonUnsigned, body},
		{"unknown key", auth.ReasonUnknownKey, sign(auth.NewSigner(mallory), ReleasePurpose(testHost))},
		{"tampered", auth.ReasonBadSignature, tampered},
		{"other host", auth.ReasonPurpose, sign(alice, ReleasePurpose("other-host"))},
		{"stale", auth.ReasonStale, sign(stale, ReleasePurpose(testHost))},
	} {
		if r := send(tc.data); r.OK || !strings.Contains(r.Error, tc.reason) {
			t.Errorf("%s: reply %+v, want refused (%s)", tc.name, r, tc.reason)
		}
		if n := testutil.ToFloat64(h.m.Refused.WithLabelValues(metrics.StageResponder, tc.reason)); n != 1 {
			t.Errorf("%s: contain_refused_total{reason=%q} = %v, want 1", tc.name, tc.reason, n)
		}
	}
	if got := freezerState(t, c); got != "FROZEN" {
		t.Fatalf("container %s after forged releases", got)
	}
	if r := send(valid); !r.OK {
		t.Fatalf("signed release refused: %s", r.Error)
	}
	ra := wantAction(t, h.next(), containv1.Action_TYPE_RELEASE, containv1.Action_RESULT_OK, c.ID)
	if ra.Actor != alice.Actor() {
		t.Errorf("actor %q, want the signer %q (not the request's self-declared one)", ra.Actor, alice.Actor())
	}
	// The same signed request again: replayed.
	if r := send(valid); r.OK || !strings.Contains(r.Error, auth.ReasonReplayed) {
		t.Errorf("replayed release: %+v", r)
	}
	if n := testutil.ToFloat64(h.m.Refused.WithLabelValues(metrics.StageResponder, auth.ReasonReplayed)); n != 1 {
		t.Errorf("replayed counted %v times, want 1", n)
	}
}

func TestReleaseRequestErrors(t *testing.T) {
	h := start(t, nil)
	if _, err := h.release("../etc", "alice", "x"); err == nil || !strings.Contains(err.Error(), "invalid container_id") {
		t.Errorf("bad id: %v", err)
	}
	if _, err := h.release("abc", "alice", ""); err == nil || !strings.Contains(err.Error(), "reason must be set") {
		t.Errorf("no reason: %v", err)
	}
	if _, err := Release(context.Background(), h.nc, auth.NewSigner(testOperators["alice"]), "other-host", "abc", "x", ""); err == nil || !strings.Contains(err.Error(), "no responder") {
		t.Errorf("unserved host: %v", err)
	}
	msg, err := h.nc.Request(containv1.ControlSubject(testHost, VerbRelease), []byte("{not json"), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var reply ControlReply
	if err := json.Unmarshal(msg.Data, &reply); err != nil || reply.OK || reply.Error == "" {
		t.Errorf("malformed request reply %s (%v)", msg.Data, err)
	}
}

func TestQuarantineSurvivesRestart(t *testing.T) {
	h := start(t, func(c *Config) { c.Snapshot = false })
	kept := testenv.RunContainer(t, "kept", testenv.ContainerSpec{})
	thawed := testenv.RunContainer(t, "thawed", testenv.ContainerSpec{})
	released := testenv.RunContainer(t, "released", testenv.ContainerSpec{})
	for _, c := range []*testenv.Container{kept, thawed, released} {
		h.publish(h.alert(c.ID, 1))
		wantAction(t, h.next(), containv1.Action_TYPE_PAUSE, containv1.Action_RESULT_OK, c.ID)
	}
	if _, err := h.release(released.ID, "alice", "ok"); err != nil {
		t.Fatal(err)
	}
	h.stop()
	// Thawed behind the responder's back while it was down.
	if err := os.WriteFile(filepath.Join("/sys/fs/cgroup/freezer", thawed.ID, "freezer.state"), []byte("THAWED"), 0); err != nil {
		t.Fatal(err)
	}

	h2 := startOn(t, h.nc, h.js, nil)
	q, err := ListQuarantined(context.Background(), h2.nc, testHost)
	if err != nil {
		t.Fatal(err)
	}
	if len(q) != 1 || q[0].ContainerID != kept.ID || q[0].State != "frozen" || q[0].Method != freezer.MethodV1Freezer || q[0].Score != 1 {
		t.Fatalf("restored list: %+v", q)
	}
	// A new alert about it is recognised as already quarantined.
	h2.publish(h2.alert(kept.ID, 1))
	for {
		ev := h2.next()
		if ev.GetAction().Type == containv1.Action_TYPE_PAUSE && ev.ContainerId == kept.ID && ev.GetAction().Result == containv1.Action_RESULT_SKIPPED {
			if d := detail(t, ev.GetAction()); !strings.Contains(d.Decision, "already quarantined") {
				t.Errorf("decision %q", d.Decision)
			}
			break
		}
	}
	if _, err := h2.release(kept.ID, "alice", "done"); err != nil {
		t.Fatal(err)
	}
	if got := freezerState(t, kept); got != "THAWED" {
		t.Fatalf("kept is %s after release", got)
	}
}

// TestWrongHostAlertSkipped: an alert on this host's subject whose event
// names another host is recorded SKIPPED and counted, never acted on.

// histCount is the number of observations of a histogram.
func histCount(h prometheus.Histogram) uint64 {
	var m dto.Metric
	if err := h.Write(&m); err != nil {
		return 0
	}
	return m.GetHistogram().GetSampleCount()
}
