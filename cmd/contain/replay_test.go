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

// TestReplay records a history on CONTAIN_EVENTS (a container's normal
// execs, then wget), then replays it: as JSON lines, and re-scored under
// two learning windows, which a backtest must tell apart.
func TestReplay(t *testing.T) {
	a := deployNATS(t)
	url := a.url
	nc, js := a.conn("enricher")
	ids := containv1.NewIDGen()
	t0 := time.Now().Add(-time.Hour).UnixNano()
	exec := func(at time.Duration, file string) *containv1.Event {
		return &containv1.Event{Id: ids.Next(), Host: "h1", ContainerId: "c1", ImageRef: "demo:1", ImageDigest: "sha256:" + strings.Repeat("e", 64),
			Kind: containv1.Kind_KIND_EXEC, WallNs: t0 + int64(at), SchemaVersion: containv1.SchemaVersion,
			Body: &containv1.Event_Exec{Exec: &containv1.Exec{Filename: file, Argv: []string{file}}}}
	}
	var history []*containv1.Event
	for i := range 20 {
		history = append(history, exec(time.Duration(i)*100*time.Millisecond, "/bin/sleep"))
	}
	history = append(history, exec(30*time.Second, "/bin/wget"))
	p := bus.NewProducer("h1", "enricher")
	for i := 0; i < len(history); i += 7 {
		if err := bus.Publish(context.Background(), js, containv1.EventsSubject("h1"), p.Batch(history[i:min(i+7, len(history))])); err != nil {
			t.Fatal(err)
		}
	}
	if err := nc.Publish(containv1.EventsSubject("h1"), []byte("not a batch")); err != nil {
		t.Fatal(err)
	}

	out, err := runCLI(t, "replay", "--nats-url", url)
	if err != nil {
		t.Fatal(err)
	}
	lines := 0
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		if !strings.HasPrefix(l, "{") {
			continue
		}
		var ev map[string]any
		if err := json.Unmarshal([]byte(l), &ev); err != nil {
			t.Fatalf("line is not JSON: %v: %s", err, l)
		}
		lines++
	}
	if lines != len(history) || !strings.Contains(out, "1 malformed messages skipped") {
		t.Fatalf("dump: %d JSON lines for %d events:\n%s", lines, len(history), out)
	}

	t.Setenv("CONTAIN_ANALYZER_LEARNING_WINDOW", "5s")
	out, err = runCLI(t, "replay", "--nats-url", url, "--rescore")
	if err != nil || strings.Count(out, "exec.unseen") != 1 || !strings.Contains(out, "/bin/wget") || !strings.Contains(out, "re-scored: 1 alerts") {
		t.Fatalf("rescore with a 5s window: %v\n%s", err, out)
	}
	// The same history under a longer learning window: wget is learned.
	t.Setenv("CONTAIN_ANALYZER_LEARNING_WINDOW", "1m")
	out, err = runCLI(t, "replay", "--nats-url", url, "--rescore")
	if err != nil || strings.Contains(out, "exec.unseen") || !strings.Contains(out, "re-scored: 0 alerts") {
		t.Fatalf("rescore with a 1m window: %v\n%s", err, out)
	}
}
