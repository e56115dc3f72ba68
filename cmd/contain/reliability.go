package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/containsec/contain/internal/bus"
	"github.com/containsec/contain/internal/metrics"
	"github.com/containsec/contain/store"
)

// validateReliability checks nats.max_deliver and nats.health.*.
func (c NATSConfig) validateReliability() error {
	if c.MaxDeliver < 1 || c.MaxDeliver > 1000 {
		return fmt.Errorf("nats.max_deliver: %d out of range 1..1000", c.MaxDeliver)
	}
	return c.Health.Validate()
}

// newReporter makes the process's publish/consume reporter: counts and
// logs publish trouble, dead-letters after nats.max_deliver, and feeds
// /readyz.
func newReporter(cfg *Config, m *metrics.Metrics, log *slog.Logger) *bus.Reporter {
	return &bus.Reporter{M: m, Log: log, MaxDeliver: cfg.NATS.MaxDeliver, Health: bus.NewHealth(), HealthBounds: cfg.NATS.Health}
}

// registerNATSCheck makes /readyz check the stage's connection: one
// check per connection (per stage user with own credentials, else one).
func registerNATSCheck(h *bus.Health, own bool, stage string, nc *nats.Conn, js jetstream.JetStream, hc bus.HealthConfig) {
	name := "nats"
	if own {
		name = "nats (" + stage + ")"
	}
	h.Register(name, bus.NATSCheck(nc, js, hc.JetstreamTimeout))
}

// clickhouseCheck is the store's sink check: ClickHouse answers a ping
// and its schema is in place.
func clickhouseCheck(st *store.Store) func(context.Context) error {
	return func(ctx context.Context) error {
		if err := st.Conn().Ping(ctx); err != nil {
			return fmt.Errorf("ping: %w", err)
		}
		if !st.Ready() {
			return errors.New("schema not in place yet")
		}
		return nil
	}
}
