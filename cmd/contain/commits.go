package main

import (
	"context"
	"log/slog"
	"sync"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/containsec/contain/internal/bus"
	"github.com/containsec/contain/internal/commits"
	"github.com/containsec/contain/internal/metrics"
	"github.com/containsec/contain/schemas/containv1"
)

// stageCommits names the commit watcher in logs and batches; it runs with
// the collector (commits.enabled) and publishes on the collector's raw
// subject with the collector's credentials.
const stageCommits = "commits"

// newCommitWatcher returns the commit watcher publishing each commit as
// one batch on the host's raw subject, counted in
// contain_events_out_total{stage="commits"} (failures:
// contain_errors_total{stage="commits",kind="publish"}).
func newCommitWatcher(cfg *Config, js jetstream.JetStream, m *metrics.Metrics, log *slog.Logger) (*commits.Watcher, error) {
	var mu sync.Mutex
	p := bus.NewProducer(cfg.Host, stageCommits)
	subject := containv1.RawSubject(cfg.Host)
	publish := func(ctx context.Context, ev *containv1.Event) error {
		mu.Lock()
		b := p.Batch([]*containv1.Event{ev})
		mu.Unlock()
		if err := bus.Publish(ctx, js, subject, b); err != nil {
			m.Errors.WithLabelValues(stageCommits, "publish").Inc()
			return err
		}
		m.EventsOut.WithLabelValues(stageCommits).Inc()
		return nil
	}
	return commits.New(cfg.Commits, cfg.Host, publish, log)
}
