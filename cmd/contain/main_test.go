package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containsec/contain/internal/testenv"
)

func runCLI(t *testing.T, args ...string) (string, error) {
	t.Helper()
	root := newRoot()
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetArgs(args)
	err := root.ExecuteContext(context.Background())
	return out.String(), err
}

func TestCheckConfig(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.yaml")
	os.WriteFile(good, []byte("host: node-1\nanalyzer:\n  learning_window: 30s\n  class_scores: [exec.pkg_manager=0.85]\n"), 0o644)
	out, err := runCLI(t, "check-config", "-c", good)
	if err != nil {
		t.Fatalf("good config rejected: %v\n%s", err, out)
	}
	if !strings.Contains(out, "configuration OK") || !strings.Contains(out, "    learning_window: 30s") || !strings.Contains(out, "host: node-1") {
		t.Fatalf("check-config output lacks the effective values:\n%s", out)
	}
	// The shipped sample validates as it is (host: "" = the machine's name).
	sample := filepath.Join(testenv.RepoRoot(t), "deploy", "contain.yaml")
	if out, err := runCLI(t, "check-config", "-c", sample); err != nil || !strings.Contains(out, "    wakeup_coalesce: 20ms") ||
		!strings.Contains(out, "    exec_sessions: behaviours") {
		t.Fatalf("deploy/contain.yaml: %v\n%s", err, out)
	}
	if _, err := runCLI(t, "check-config", "-c", "deploy-does-not-exist.yaml"); err == nil {
		t.Fatal("a missing config file was accepted")
	}
	for body, key := range map[string]string{
		"analyzer:\n  learning_windw: 30s\n":                 "learning_windw",
		"host: \"a.b\"\n":                                    "host",
		"log:\n  level: loud\n":                              "log.level",
		"nats:\n  streams:\n    replicas: 9\n":               "nats.streams.replicas",
		"store:\n  addr: [nowhere]\n":                        "store.addr",
		"responder:\n  threshold: 7\n":                       "threshold",
		"analyzer:\n  exec_sessions: sometimes\n":            "analyzer.exec_sessions",
		"analyzer:\n  class_scores: [exec.nope=0.5]\n":       "analyzer.class_scores.exec.nope",
		"analyzer:\n  class_scores: [exec.shell=1.5]\n":      "analyzer.class_scores.exec.shell",
		"nats:\n  nkey_seed: /nonexistent/enricher.nk\n":     "nats.nkey_seed: no credentials readable at /nonexistent/enricher.nk",
		"responder:\n  operator_keys: [\"operator:UX\"]\n":   "responder.operator_keys",
		"responder:\n  docker_methods: [containerd-pause]\n": "responder.docker_methods",
		"nats:\n  max_deliver: 0\n":                          "nats.max_deliver",
		"nats:\n  health:\n    max_lag: -1\n":                "nats.health.max_lag",
		"nats:\n  health:\n    check_interval: 0s\n":         "nats.health.check_interval",
		"nats:\n  health:\n    jetstream_timeout: 0s\n":      "nats.health.jetstream_timeout",
	} {
		bad := filepath.Join(dir, "bad.yaml")
		os.WriteFile(bad, []byte(body), 0o644)
		_, err := runCLI(t, "check-config", "-c", bad)
		if err == nil || !strings.Contains(err.Error(), key) {
			t.Errorf("config %q: error %v does not name %s", body, err, key)
		}
	}
}

func TestEnvOverridesFile(t *testing.T) {
	t.Setenv("CONTAIN_ANALYZER_LEARNING_WINDOW", "2m")
	t.Setenv("CONTAIN_HOST", "from-env")
	out, err := runCLI(t, "check-config")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "    learning_window: 2m0s") || !strings.Contains(out, "host: from-env") {
		t.Fatalf("environment not applied:\n%s", out)
	}
}

func TestVersion(t *testing.T) {
	out, err := runCLI(t, "version")
	if err != nil || !strings.Contains(out, "event schema v1") {
		t.Fatalf("version: %q %v", out, err)
	}
}
