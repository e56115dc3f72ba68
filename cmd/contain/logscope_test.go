package main

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/containsec/contain/internal/bus"
	"github.com/containsec/contain/internal/logfields"
	"github.com/containsec/contain/internal/testenv"
)

// logLines splits what a JSON logger wrote into lines.
func logLines(b *syncBuffer) []string {
	return strings.Split(strings.TrimSpace(b.String()), "\n")
}

// lineKeys returns the top-level keys of one JSON log line in order,
// duplicates included (a map would hide them).
func lineKeys(line string) ([]string, error) {
	dec := json.NewDecoder(strings.NewReader(line))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return nil, fmt.Errorf("not a JSON object: %v", err)
	}
	var keys []string
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, err
		}
		keys = append(keys, tok.(string))
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			return nil, err
		}
	}
	return keys, nil
}

// TestStageLogScopedOnce: the lines the enricher and the analyzer log when
// `contain run` builds them (cmd scopes each stage's logger) carry the
// stage key once, and no key twice.
func TestStageLogScopedOnce(t *testing.T) {
	srv, err := bus.StartEmbedded(bus.EmbeddedConfig{Port: -1, StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Shutdown(); srv.WaitForShutdown() })
	cfg := defaultConfig()
	cfg.Host = "h1"
	cfg.NATS.URL = srv.ClientURL()
	cfg.Auth.Enabled = false
	cfg.Metrics.Listen = ""
	cfg.Enricher.Registry.Enabled = false
	cfg.propagate()
	var sink syncBuffer
	log := slog.New(slog.NewJSONHandler(io.MultiWriter(&sink, testWriter{t}), nil))
	stop := startStages(t, &cfg, []string{stageAnalyzer, stageEnricher}, log)
	defer stop()

	// Each stage logs a line once it has loaded its KV state.
	seen := map[string]string{}
	testenv.WaitForState(t, 20*time.Second, "a log line from each stage", func() (bool, string) {
		for _, line := range logLines(&sink) {
			var m map[string]any
			if json.Unmarshal([]byte(line), &m) != nil {
				continue
			}
			if s, ok := m[logfields.Stage].(string); ok && seen[s] == "" {
				seen[s] = line
			}
		}
		return seen[stageAnalyzer] != "" && seen[stageEnricher] != "", fmt.Sprintf("stages seen: %v", seen)
	})
	for _, line := range logLines(&sink) {
		keys, err := lineKeys(line)
		if err != nil {
			t.Fatalf("%v: %s", err, line)
		}
		count := map[string]int{}
		for _, k := range keys {
			if count[k]++; count[k] == 2 {
				t.Errorf("key %q twice in %s", k, line)
			}
		}
	}
}

// testWriter shows the captured lines in the test's log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}
