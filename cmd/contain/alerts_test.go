package main

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/containsec/contain/internal/bus"
	"github.com/containsec/contain/schemas/containv1"
)

func TestAlertsCommandFormats(t *testing.T) {
	a := deployNATS(t)
	url := a.url
	nc, js := a.conn("analyzer")
	ids := containv1.NewIDGen()
	trigger := &containv1.Event{Id: ids.Next(), Host: "h1", ContainerId: "c1", Kind: containv1.Kind_KIND_EXEC,
		WallNs: time.Now().UnixNano(), SchemaVersion: containv1.SchemaVersion,
		Body: &containv1.Event_Exec{Exec: &containv1.Exec{Filename: "/bin/wget", Argv: []string{"wget"}}}}
	alert := &containv1.Event{Id: ids.Next(), Host: "h1", ContainerId: "c1", ImageRef: "demo:1", Kind: containv1.Kind_KIND_ALERT,
		WallNs: time.Now().UnixNano(), SchemaVersion: containv1.SchemaVersion,
		Body: &containv1.Event_Alert{Alert: &containv1.Alert{Score: 0.8, Rule: "Unseen executable in container", Priority: "Error",
			Reasons: []*containv1.Reason{{Code: "exec.unseen", Message: `"/bin/wget" was never executed`}}, Trigger: trigger}}}
	p := bus.NewProducer("h1", "analyzer")
	if err := bus.Publish(context.Background(), js, containv1.AlertsSubject("h1"), p.Batch([]*containv1.Event{alert})); err != nil {
		t.Fatal(err)
	}
	// A malformed message on the stream is skipped, not fatal.
	if err := nc.Publish(containv1.AlertsSubject("h1"), []byte("junk")); err != nil {
		t.Fatal(err)
	}
	out, err := runCLI(t, "alerts", "--nats-url", url)
	if err != nil || !strings.Contains(out, "exec.unseen") || !strings.Contains(out, "container=c1") {
		t.Fatalf("text: %v\n%s", err, out)
	}
	out, err = runCLI(t, "alerts", "--nats-url", url, "--format", "falco")
	if err != nil {
		t.Fatal(err)
	}
	var falco struct {
		Rule         string         `json:"rule"`
		Priority     string         `json:"priority"`
		Output       string         `json:"output"`
		OutputFields map[string]any `json:"output_fields"`
	}
	if err := json.Unmarshal([]byte(strings.TrimSpace(out)), &falco); err != nil {
		t.Fatalf("falco output is not one JSON object per line: %v\n%s", err, out)
	}
	if falco.Rule != "Unseen executable in container" || falco.Priority == "" || falco.Output == "" || falco.OutputFields["container.id"] != "c1" {
		t.Fatalf("falco fields: %+v", falco)
	}
	if out, err := runCLI(t, "alerts", "--nats-url", url, "--alert-host", "other"); err != nil || strings.TrimSpace(out) != "" {
		t.Fatalf("alerts of another host: %v %q", err, out)
	}
}
