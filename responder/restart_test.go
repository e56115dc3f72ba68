package responder

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/containsec/contain/internal/testenv"
	"github.com/containsec/contain/schemas/containv1"
)

// nextFor returns the next action answering alert al, passing over the
// others (a restarted harness reads the stream from its start).
func (h *harness) nextFor(al *containv1.Event) *containv1.Event {
	h.t.Helper()
	var pending []*containv1.Event
	for {
		ev := h.nextOf(&pending)
		if string(ev.GetAction().GetAlertId()) == string(al.Id) {
			return ev
		}
	}
}

// TestRestartKeepsGraceAndBreaker: release grace and the circuit breaker
// are rebuilt from CONTAIN_ACTIONS when the responder restarts, so a
// restart neither re-freezes a container an operator just released nor
// resets the breaker's count.
func TestRestartKeepsGraceAndBreaker(t *testing.T) {
	edit := func(c *Config) { c.MaxPausesPerMinute = 2; c.Snapshot = false }
	h := start(t, edit)
	c1 := testenv.RunContainer(t, "rk1", testenv.ContainerSpec{})
	c2 := testenv.RunContainer(t, "rk2", testenv.ContainerSpec{})
	c3 := testenv.RunContainer(t, "rk3", testenv.ContainerSpec{})
	for _, c := range []*testenv.Container{c1, c2} {
		al := h.alert(c.ID, 1)
		h.publish(al)
		wantAction(t, h.nextFor(al), containv1.Action_TYPE_PAUSE, containv1.Action_RESULT_OK, c.ID)
	}
	if _, err := h.release(c1.ID, "alice", "false positive"); err != nil {
		t.Fatal(err)
	}
	if _, err := h.release(c2.ID, "bob", "checked"); err != nil {
		t.Fatal(err)
	}
	h.stop()

	h2 := startOn(t, h.nc, h.js, edit)
	// c1 was released a moment ago: within release_grace.
	al := h2.alert(c1.ID, 1)
	h2.publish(al)
	a := wantAction(t, h2.nextFor(al), containv1.Action_TYPE_PAUSE, containv1.Action_RESULT_SKIPPED, c1.ID)
	if d := detail(t, a); !strings.Contains(d.Decision, "release_grace") || !strings.Contains(d.Decision, "alice") {
		t.Errorf("decision after the restart: %q, want release grace by alice", d.Decision)
	}
	// Two pauses in the last minute: the breaker is open for c3.
	al = h2.alert(c3.ID, 1)
	h2.publish(al)
	a = wantAction(t, h2.nextFor(al), containv1.Action_TYPE_PAUSE, containv1.Action_RESULT_SKIPPED, c3.ID)
	if d := detail(t, a); !strings.Contains(d.Decision, "circuit breaker open: 2 containers") {
		t.Errorf("decision after the restart: %q, want the circuit breaker open", d.Decision)
	}
	for _, c := range []*testenv.Container{c1, c3} {
		if got := freezerState(t, c); got != "THAWED" {
			t.Errorf("%s is %s after the restart", c.ID, got)
		}
	}
}

// TestStaleAlert: an alert older than max_alert_age when it arrives (a
// backlog replayed after an outage) is recorded SKIPPED, counted and
// never acted on; a younger one is acted on.
func TestStaleAlert(t *testing.T) {
	h := start(t, func(c *Config) { c.MaxAlertAge = time.Minute; c.Snapshot = false })
	c := testenv.RunContainer(t, "stale", testenv.ContainerSpec{})
	old := h.alert(c.ID, 1)
	old.WallNs = time.Now().Add(-3 * time.Minute).UnixNano()
	h.publish(old)
	a := wantAction(t, h.nextFor(old), containv1.Action_TYPE_PAUSE, containv1.Action_RESULT_SKIPPED, c.ID)
	if d := detail(t, a); !strings.Contains(d.Decision, "stale alert") || !strings.Contains(d.Decision, "max_alert_age 1m0s") {
		t.Errorf("decision %q", d.Decision)
	}
	if n := testutil.ToFloat64(h.r.staleTotal); n != 1 {
		t.Errorf("contain_responder_stale_alerts_total = %v, want 1", n)
	}
	if got := freezerState(t, c); got != "THAWED" {
		t.Fatalf("a stale alert froze the container: %s", got)
	}
	fresh := h.alert(c.ID, 1)
	fresh.WallNs = time.Now().Add(-30 * time.Second).UnixNano()
	h.publish(fresh)
	wantAction(t, h.nextFor(fresh), containv1.Action_TYPE_PAUSE, containv1.Action_RESULT_OK, c.ID)
	if n := testutil.ToFloat64(h.r.staleTotal); n != 1 {
		t.Errorf("contain_responder_stale_alerts_total = %v after a fresh alert, want 1", n)
	}
}
