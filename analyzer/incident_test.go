package analyzer

import (
	"bytes"
	"testing"
	"time"
)

// TestEngineIncidents: a container's alerts within the incident window of
// the previous one share the first alert's id as incident_id; a later one
// opens a new incident; another container has its own.
func TestEngineIncidents(t *testing.T) {
	cfg := testConfig()
	cfg.IncidentWindow = 10 * time.Second
	e := newEngine(t, cfg, nil)
	learn(e, "c1")
	learn(e, "c2")
	first := e.Observe(execEv("c1", sec(5), "/bin/wget", "wget"))
	a1 := alertOf(t, first)
	if !bytes.Equal(a1.IncidentId, first[0].Id) {
		t.Fatalf("first alert's incident %x, want its own id %x", a1.IncidentId, first[0].Id)
	}
	a2 := alertOf(t, e.Observe(execEv("c1", sec(12), "/bin/nc", "nc")))
	a3 := alertOf(t, e.Observe(execEv("c1", sec(20), "/bin/id", "id"))) // 8s after the previous: same incident
	if !bytes.Equal(a2.IncidentId, a1.IncidentId) || !bytes.Equal(a3.IncidentId, a1.IncidentId) {
		t.Fatalf("alerts within the window are not one incident: %x %x %x", a1.IncidentId, a2.IncidentId, a3.IncidentId)
	}
	other := alertOf(t, e.Observe(execEv("c2", sec(13), "/bin/wget", "wget")))
	if bytes.Equal(other.IncidentId, a1.IncidentId) {
		t.Fatal("another container joined c1's incident")
	}
	later := e.Observe(execEv("c1", sec(31), "/bin/ps", "ps")) // 11s after the last
	if a4 := alertOf(t, later); !bytes.Equal(a4.IncidentId, later[0].Id) {
		t.Fatalf("an alert after the window did not open a new incident: %x", a4.IncidentId)
	}

	cfg.IncidentWindow = 0
	e = newEngine(t, cfg, nil)
	learn(e, "c1")
	x := e.Observe(execEv("c1", sec(5), "/bin/wget", "wget"))
	y := e.Observe(execEv("c1", sec(5.5), "/bin/nc", "nc"))
	if !bytes.Equal(alertOf(t, x).IncidentId, x[0].Id) || !bytes.Equal(alertOf(t, y).IncidentId, y[0].Id) {
		t.Fatal("with incident_window 0 every alert must be its own incident")
	}
}
