package main

import (
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containsec/contain/analyzer"
	"github.com/containsec/contain/internal/testenv"
	"github.com/containsec/contain/schemas/containv1"
)

// TestCommitPolicyPipeline: with commits.enabled the collector stage
// watches the docker engine; a docker commit of a container outside
// analyzer.commits.allow_containers reaches the analyzer through the
// enricher and raises commit.unallowed, which the policy scores at the
// responder's threshold (class_scores): the source container is paused. A
// commit of an allowed one raises nothing.
func TestCommitPolicyPipeline(t *testing.T) {
	e := testenv.RequireEngines(t)
	natsURL, nc, _ := testenv.NATS(t)
	host := "commit-host"
	var (
		mu     sync.Mutex
		alerts = map[string][]string{}
		raw    = map[string]int{}
	)
	watchEvents(t, nc, &mu, func(ev *containv1.Event) {
		if ev.GetCommit() != nil {
			raw[ev.ContainerId]++
		}
		alerts[ev.ContainerId] = append(alerts[ev.ContainerId], alertLines(ev)...)
	}, containv1.RawSubject(host), containv1.AlertsSubject(host))
	cfg := defaultConfig()
	cfg.Host = host
	cfg.NATS.URL = natsURL
	cfg.Metrics.Listen = "127.0.0.1:0"
	cfg.Enricher.Registry.Enabled = false
	cfg.Commits.Enabled = true
	cfg.Commits.DockerHosts, cfg.Commits.Containerd, cfg.Commits.Podman = []string{e.DockerHost}, nil, false
	cfg.Analyzer.Commits = analyzer.CommitsConfig{AllowContainers: []string{"contain-allowed-*"}}
	cfg.Analyzer.ClassScores = []string{analyzer.CodeCommitUnallowed + "=0.9"}
	cfg.Responder.DockerHost, cfg.Responder.ContainerdAddress = e.DockerHost, e.Containerd
	cfg.propagate()
	t.Cleanup(startStages(t, &cfg, []string{stageResponder, stageAnalyzer, stageEnricher, stageCollector}, testenv.Logger(t)))

	allowed := e.DockerRun(t, "contain-allowed-1", nil)
	rogue := e.DockerRun(t, "contain-rogue-1", nil)
	for _, ref := range []string{"contain-commit-pipeline:allowed", "contain-commit-pipeline:rogue"} {
		t.Cleanup(func() { _, _ = e.Docker("rmi", "-f", ref) })
	}
	// The watcher subscribes once the stages are up: commit until the
	// allowed container's commit is seen on the raw subject.
	deadline := time.Now().Add(20 * time.Second)
	for {
		if _, err := e.Docker("commit", allowed.ID, "contain-commit-pipeline:allowed"); err != nil {
			t.Fatal(err)
		}
		time.Sleep(500 * time.Millisecond)
		mu.Lock()
		n := raw[allowed.ID]
		mu.Unlock()
		if n > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no KIND_COMMIT on the raw subject within 20s of starting the collector stage")
		}
	}
	if _, err := e.Docker("commit", rogue.ID, "contain-commit-pipeline:rogue"); err != nil {
		t.Fatal(err)
	}
	var got []string
	for end := time.Now().Add(15 * time.Second); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		mu.Lock()
		got = alerts[rogue.ID]
		mu.Unlock()
		if len(got) > 0 {
			break
		}
	}
	if len(got) == 0 || got[0][:len(analyzer.CodeCommitUnallowed)] != analyzer.CodeCommitUnallowed {
		t.Fatalf("rogue commit: alerts %q, want %s", got, analyzer.CodeCommitUnallowed)
	}
	if !strings.HasPrefix(got[0], analyzer.CodeCommitUnallowed+" 0.90") {
		t.Errorf("rogue alert %q: want scored 0.90 by class_scores", got[0])
	}
	paused := ""
	for end := time.Now().Add(10 * time.Second); time.Now().Before(end) && paused != "true"; time.Sleep(100 * time.Millisecond) {
		paused, _ = e.Docker("inspect", "-f", "{{.State.Paused}}", rogue.ID)
	}
	if paused != "true" {
		t.Errorf("the rogue commit's source container is not paused (docker says Paused=%q)", paused)
	}
	if p, _ := e.Docker("inspect", "-f", "{{.State.Paused}}", allowed.ID); p != "false" {
		t.Errorf("the allowed container: Paused=%q", p)
	}
	mu.Lock()
	defer mu.Unlock()
	if a := alerts[allowed.ID]; len(a) > 0 {
		t.Errorf("allowed container's commit raised %q", a)
	}
}

// TestEROFSWriteAlertsWhileLearning: in a docker container run
// --read-only, a write into the image is refused with EROFS; the collector
// reports the failed open with its result and the analyzer raises
// file.write.readonly although the image's baseline is still learning.
func TestEROFSWriteAlertsWhileLearning(t *testing.T) {
	e := testenv.RequireEngines(t)
	natsURL, nc, _ := testenv.NATS(t)
	host := "erofs-host"
	var (
		mu     sync.Mutex
		alerts = map[string][]string{}
	)
	watchEvents(t, nc, &mu, func(ev *containv1.Event) {
		alerts[ev.ContainerId] = append(alerts[ev.ContainerId], alertLines(ev)...)
	}, containv1.AlertsSubject(host))
	cfg := defaultConfig()
	cfg.Host = host
	cfg.NATS.URL = natsURL
	cfg.Metrics.Listen = "127.0.0.1:0"
	cfg.Enricher.Registry.Enabled = false
	cfg.Collector.DockerHost, cfg.Collector.DockerRoot = e.DockerHost, e.DockerRoot
	cfg.Analyzer.LearningWindow = time.Hour // learning throughout
	cfg.propagate()
	t.Cleanup(startStages(t, &cfg, []string{stageAnalyzer, stageEnricher, stageCollector}, testenv.Logger(t)))
	// The collector attaches while the stages start: the container tries
	// its write every 300 ms until the test ends.
	c := e.DockerRun(t, "contain-erofs", []string{"--read-only"}, "sh", "-c", "while true; do echo x > /etc/owned; sleep 0.3; done")
	var got []string
	for end := time.Now().Add(20 * time.Second); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		mu.Lock()
		got = append(got[:0], alerts[c.ID]...)
		mu.Unlock()
		if len(got) > 0 {
			break
		}
	}
	for _, a := range got {
		if strings.HasPrefix(a, analyzer.CodeWriteReadonly+" ") && strings.Contains(a, "/etc/owned") {
			return
		}
	}
	t.Fatalf("read-only container: alerts %q, want %s for /etc/owned", got, analyzer.CodeWriteReadonly)
}
