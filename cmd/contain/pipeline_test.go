package main

import (
	"context"
	"log/slog"
	"testing"
	"time"
)

// startStages runs stages of cfg (validated first) in this process, like
// `contain run --stages`, and returns stop, which ends them and fails the
// test when they return an error or do not stop within 20s.
func startStages(t *testing.T, cfg *Config, stages []string, log *slog.Logger) (stop func()) {
	t.Helper()
	return startRun(t, cfg, stages, false, log)
}

// startRun is startStages; embedded starts the embedded NATS server (with
// auth.enabled, each stage connects as its own user) as `contain run` does.
func startRun(t *testing.T, cfg *Config, stages []string, embedded bool, log *slog.Logger) (stop func()) {
	t.Helper()
	if err := cfg.validate(stages); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- runStages(ctx, cfg, stages, embedded, log) }()
	return func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("contain run: %v", err)
			}
		case <-time.After(20 * time.Second):
			t.Error("contain run did not stop within 20s")
		}
	}
}
