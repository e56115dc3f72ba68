package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/containsec/contain/analyzer"
	"github.com/containsec/contain/internal/auth"
	"github.com/containsec/contain/internal/bus"
	"github.com/containsec/contain/internal/testenv"
	"github.com/containsec/contain/responder"
	"github.com/containsec/contain/schemas/containv1"
)

// TestUnifiedEndToEnd runs collector, enricher, analyzer and responder
// with contain's default cgroup configuration (detect) on a cgroup2-only
// host (RunUnified): after learning, an unexpected exec in a runc
// container gets it frozen through cgroup.freeze (cgroup.events frozen
// 1), and a signed release thaws it.
func TestUnifiedEndToEnd(t *testing.T) {
	if !testenv.RunUnified(t) {
		return
	}
	natsURL, nc, js := testenv.NATS(t)
	log := testenv.Logger(t)
	const learning = 4 * time.Second
	host := "unified-host"
	op, err := auth.Generate("operator")
	if err != nil {
		t.Fatal(err)
	}
	cfg := defaultConfig()
	cfg.Host = host
	cfg.NATS.URL = natsURL
	cfg.Metrics.Listen = "127.0.0.1:0"
	cfg.Analyzer.LearningWindow = learning
	cfg.Analyzer.ExecSessions = analyzer.ExecSessionsAlert
	cfg.Responder.Threshold = 0.5
	cfg.Responder.OperatorKeys = append(cfg.Responder.OperatorKeys, op.Trusted())
	cfg.Enricher.Registry.Enabled = false
	cfg.propagate()
	if cfg.Collector.CgroupRoot != "" || cfg.Responder.Cgroup2Root != "" || cfg.Responder.FreezerRoot != "" {
		t.Fatalf("default cgroup roots are not \"\" (detect): collector %q, responder %q %q",
			cfg.Collector.CgroupRoot, cfg.Responder.Cgroup2Root, cfg.Responder.FreezerRoot)
	}
	stages := []string{stageResponder, stageAnalyzer, stageEnricher, stageCollector}
	t.Cleanup(startStages(t, &cfg, stages, log))
	// The responder serves quarantine.list once it is up.
	testenv.WaitFor(t, 20*time.Second, "responder up", func() bool {
		_, err := responder.ListQuarantined(context.Background(), nc, host)
		return err == nil
	})

	c := testenv.RunContainer(t, "e2e-unified", testenv.ContainerSpec{
		Args:        []string{"/bin/sh", "-c", "while true; do /bin/sleep 0.3; done"},
		Annotations: map[string]string{"org.opencontainers.image.ref.name": "demo/loop:1.0"},
	})
	freeze := filepath.Join("/sys/fs/cgroup", c.ID, "cgroup.freeze")
	if _, err := os.Stat(freeze); err != nil {
		t.Fatalf("runc did not run in unified mode: %v", err)
	}
	frozen := func() bool {
		f, err := c.Cgroup2Frozen()
		return err == nil && f
	}
	// Learning: the loop's own execs seen by the collector (it attaches
	// seconds after start on a loaded host), then the window passes in
	// event time.
	cons, err := js.OrderedConsumer(context.Background(), containv1.StreamRaw, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	var seen atomic.Bool
	cc, err := cons.Consume(func(msg jetstream.Msg) {
		b, err := bus.Decode(msg.Data())
		if err != nil {
			return
		}
		for _, ev := range b.Events {
			if ev.ContainerId == c.ID && ev.GetExec().GetFilename() == "/bin/sleep" {
				seen.Store(true)
			}
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Stop()
	testenv.WaitFor(t, 30*time.Second, "learning-time execs collected", seen.Load)
	time.Sleep(learning + time.Second)
	if frozen() {
		t.Fatal("frozen before the deviation")
	}
	start := time.Now()
	go func() { _, _ = c.Exec(20*time.Second, "/bin/wget", "--help") }()
	testenv.WaitFor(t, 15*time.Second, "container frozen (cgroup.events frozen 1)", frozen)
	t.Logf("exec→frozen latency (polled): %v", time.Since(start))
	if b, _ := os.ReadFile(freeze); strings.TrimSpace(string(b)) != "1" {
		t.Fatalf("cgroup.freeze %q while frozen", b)
	}
	q, err := responder.ListQuarantined(context.Background(), nc, host)
	if err != nil || len(q) != 1 || q[0].ContainerID != c.ID {
		t.Fatalf("quarantine list: %+v %v", q, err)
	}
	t.Logf("quarantined: %+v", q[0])
	if _, err := responder.Release(context.Background(), nc, auth.NewSigner(op), host, c.ID, "e2e: investigated", ""); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 10*time.Second, "container thawed", func() bool { return !frozen() })
	if out, err := c.Exec(10*time.Second, "/bin/sleep", "0.01"); err != nil {
		t.Fatalf("container does not run after release: %q %v", out, err)
	}
}
