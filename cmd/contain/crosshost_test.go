package main

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/containsec/contain/analyzer"
	"github.com/containsec/contain/internal/bus"
	"github.com/containsec/contain/internal/testenv"
	"github.com/containsec/contain/schemas/containv1"
)

// TestCrossHostForgery runs the real enricher, analyzer and node-b's
// responder under deploy/nats/contain.conf, and node-a's collector
// credentials trying to get node-b's container frozen: publishing on
// node-b's raw subject is a permission violation; a batch claiming node-b
// (as its host, or in its events) on node-a's own subject is refused and
// counted by the enricher. node-b's container keeps running, nothing about
// node-b reaches the events stream or the baselines. The same events
// published with node-b's own credentials do freeze it: the forgery would
// have worked without the refusal.
func TestCrossHostForgery(t *testing.T) {
	testenv.RequireRoot(t)
	a := deployNATS(t)
	var logs syncBuffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("stages said:\n%s", logs.String())
		}
	})
	cfg := defaultConfig()
	cfg.Host = "node-b"
	cfg.Auth.CredsDir = a.dir
	cfg.Analyzer.LearningWindow = time.Second
	cfg.Analyzer.PersistInterval = 100 * time.Millisecond
	cfg.Enricher.Registry.Enabled = false
	cfg.Responder.Threshold = 0.5
	cfg.propagate()
	enrPort := freePort(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 3)
	stages := []string{stageEnricher, stageAnalyzer, stageResponder}
	for _, s := range stages {
		sc := a.stageConfig(cfg, stageUser(s, "node-b"))
		if s == stageEnricher {
			sc.Metrics.Listen = fmt.Sprintf("127.0.0.1:%d", enrPort)
		}
		go func() { done <- runStages(ctx, sc, []string{s}, false, log.With("stage_user", stageUser(s, "node-b"))) }()
	}
	t.Cleanup(func() {
		cancel()
		for range stages {
			if err := <-done; err != nil {
				t.Errorf("stage: %v", err)
			}
		}
	})
	testenv.WaitFor(t, 20*time.Second, "node-b's responder up", func() bool { return strings.Contains(logs.String(), "responder started") })

	victim := testenv.RunContainer(t, "nodeb-victim", testenv.ContainerSpec{})
	digest := "sha256:" + strings.Repeat("b", 64)
	ids := containv1.NewIDGen()
	t0 := time.Now().UnixNano()
	events := func(host string) []*containv1.Event {
		info := &containv1.Event{Id: ids.Next(), Host: host, ContainerId: victim.ID, Kind: containv1.Kind_KIND_CONTAINER, WallNs: t0,
			SchemaVersion: containv1.SchemaVersion, Body: &containv1.Event_Container{Container: &containv1.ContainerInfo{Runtime: "runc",
				Labels: map[string]string{"org.opencontainers.image.ref.name": "victim/app:1", "io.contain.image.digest": digest}}}}
		exec := func(at time.Duration, file string) *containv1.Event {
			return &containv1.Event{Id: ids.Next(), Host: host, ContainerId: victim.ID, Kind: containv1.Kind_KIND_EXEC, WallNs: t0 + int64(at),
				SchemaVersion: containv1.SchemaVersion, Body: &containv1.Event_Exec{Exec: &containv1.Exec{Filename: file, Argv: []string{file}}}}
		}
		return []*containv1.Event{info, exec(0, "/bin/sleep"), exec(500*time.Millisecond, "/bin/sleep"), exec(5*time.Second, "/bin/sleep"),
			exec(6*time.Second, "/bin/nc")}
	}

	_, colA := a.conn("collector-node-a")
	// 1. node-a's credentials on node-b's subject: the server refuses.
	pctx, pcancel := context.WithTimeout(ctx, time.Second)
	err := bus.Publish(pctx, colA, containv1.RawSubject("node-b"), bus.NewProducer("node-b", "collector").Batch(events("node-b")))
	pcancel()
	if err == nil {
		t.Fatal("collector-node-a published on node-b's raw subject")
	}
	testenv.WaitFor(t, 5*time.Second, "permission violation on node-b's raw subject", func() bool {
		return a.violation("collector-node-a", containv1.RawSubject("node-b"))
	})
	// 2. A batch claiming node-b on node-a's own subject, then one whose
	// events claim node-b: the enricher refuses and counts both.
	if err := bus.Publish(ctx, colA, containv1.RawSubject("node-a"), bus.NewProducer("node-b", "collector").Batch(events("node-b"))); err != nil {
		t.Fatal(err)
	}
	if err := bus.Publish(ctx, colA, containv1.RawSubject("node-a"), bus.NewProducer("node-a", "collector").Batch(events("node-b"))); err != nil {
		t.Fatal(err)
	}
	for _, reason := range []string{bus.ReasonHost, bus.ReasonEventHost} {
		metric := fmt.Sprintf(`contain_refused_total{reason=%q,stage="enricher"} 1`, reason)
		testenv.WaitFor(t, 10*time.Second, metric, func() bool { return strings.Contains(scrape(t, enrPort), metric) })
	}
	// Each refusal is counted before it is logged.
	refusalLines := func() int { return strings.Count(logs.String(), "refusing batch not bound to its subject's host") }
	testenv.WaitFor(t, 5*time.Second, "a refusal log line per reason", func() bool { return refusalLines() >= 2 })
	if n := refusalLines(); n != 2 {
		t.Errorf("%d refusal log lines, want one per reason (2)", n)
	}
	// Nothing about node-b went on: no event, no baseline, no action.
	time.Sleep(2 * time.Second)
	_, rjs := a.conn("reader")
	count := func(stream, subject string) int {
		n := 0
		if err := readStream(ctx, rjs, stream, subject, time.Now().Add(-time.Hour), time.Time{}, false,
			func(b *containv1.Batch) error { n += len(b.Events); return nil }, func(string, error) {}); err != nil {
			t.Fatal(err)
		}
		return n
	}
	if n := count(containv1.StreamEvents, containv1.SubjectPrefix+".events.>"); n != 0 {
		t.Fatalf("%d forged events reached the events stream", n)
	}
	if _, err := analyzer.GetBaseline(ctx, rjs, cfg.Analyzer.BaselinesBucket, digest); err == nil {
		t.Fatal("node-b's image has a baseline made of forged events")
	}
	if s, _ := victim.FreezerState(); s != "THAWED" || count(containv1.StreamActions, containv1.ActionsSubject("node-b")) != 0 {
		t.Fatalf("node-b's container is %s after the forgery", s)
	}

	// Control: node-b's own collector credentials, same events: frozen.
	_, colB := a.conn("collector-node-b")
	if err := bus.Publish(ctx, colB, containv1.RawSubject("node-b"), bus.NewProducer("node-b", "collector").Batch(events("node-b"))); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 20*time.Second, "node-b's container frozen by its own host's events", func() bool {
		s, _ := victim.FreezerState()
		return s == "FROZEN"
	})
	if _, err := runCLI(t, "release", victim.ID, "--reason", "test control", "--nats-url", a.url, "--host", "node-b"); err != nil {
		t.Fatalf("release: %v", err)
	}
}
