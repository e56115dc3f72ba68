package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containsec/contain/cmd/internal/config"
)

// TestNotifyConfig: notify.outputs loads from YAML (durations, headers,
// per-output keys) and a bad output is an error naming its key.
func TestNotifyConfig(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "c.yaml")
	write := func(s string) {
		if err := os.WriteFile(file, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(`notify:
  min_score: 0.7
  outputs:
    - name: slack
      type: webhook
      format: slack
      url: https://hooks.example.com/x
      headers: {Authorization: "Bearer t"}
      timeout: 2s
      max_retries: 3
    - type: syslog
      url: tcp://127.0.0.1:601
      facility: 4
`)
	cfg := defaultConfig()
	if err := config.Load(&cfg, file, nil, flagKeys); err != nil {
		t.Fatal(err)
	}
	o := cfg.Notify.Outputs
	if len(o) != 2 || o[0].Timeout != 2*time.Second || o[0].Headers["authorization"] != "Bearer t" /* viper lowercases keys: header names are case-insensitive */ || o[0].MaxRetries != 3 ||
		o[1].Facility != 4 || cfg.Notify.MinScore != 0.7 || !cfg.Notify.Alerts {
		t.Fatalf("notify config: %+v", cfg.Notify)
	}
	if err := cfg.Notify.Validate(); err != nil {
		t.Fatal(err)
	}
	write("notify:\n  outputs:\n    - {type: syslog, url: \"http://x\"}\n")
	cfg = defaultConfig()
	if err := config.Load(&cfg, file, nil, flagKeys); err != nil {
		t.Fatal(err)
	}
	if err := cfg.validate([]string{stageNotify}); err == nil || !strings.Contains(err.Error(), "notify.outputs[0].url") {
		t.Fatalf("bad syslog url: %v", err)
	}
	// contain notify without outputs says what to set.
	cfg = defaultConfig()
	if err := cfg.validate([]string{stageNotify}); err == nil || !strings.Contains(err.Error(), "notify.outputs") {
		t.Fatalf("no outputs: %v", err)
	}
}
