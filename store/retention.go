package store

import (
	"context"
	"time"

	"github.com/containsec/contain/internal/logfields"
	"github.com/containsec/contain/internal/metrics"
)

// pruneEvery and pruneRetry pace the retention loop.
const (
	pruneEvery = 24 * time.Hour
	pruneRetry = time.Minute
)

// retain calls Prune(cfg.Retention) at once and then every s.pruneEvery
// until ctx ends; a failed Prune is counted
// (contain_errors_total{stage="store",kind="prune"}) and retried after
// s.pruneRetry.
func (s *Store) retain(ctx context.Context, m *metrics.Metrics) {
	for ctx.Err() == nil {
		next := s.pruneEvery
		dropped, err := s.Prune(ctx, s.cfg.Retention)
		switch {
		case ctx.Err() != nil:
			return
		case err != nil:
			m.Errors.WithLabelValues(metrics.StageStore, "prune").Inc()
			s.log.Warn("retention: prune failed; retrying", logfields.Retention, s.cfg.Retention, logfields.RetryIn, s.pruneRetry, logfields.Err, err)
			next = s.pruneRetry
		default:
			s.prunes.Add(1)
			s.log.Debug("retention: pruned", logfields.Retention, s.cfg.Retention, logfields.Dropped, len(dropped))
		}
		sleepCtx(ctx, next)
	}
}
