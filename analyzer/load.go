package analyzer

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/containsec/contain/internal/auth"
	"github.com/containsec/contain/internal/logfields"
	"github.com/containsec/contain/internal/metrics"
	"github.com/containsec/contain/schemas/kvdoc"
)

// The baseline load at start is retried with a doubling delay: until it
// succeeds the analyzer consumes nothing (an image that learned afresh
// would overwrite its stored baseline) and Ready reports why.
const (
	loadRetryFirst = 100 * time.Millisecond
	loadRetryMax   = 5 * time.Second
	// loadTimeout bounds one attempt (a JetStream that does not answer).
	loadTimeout = 5 * time.Second
)

// Error kinds (contain_errors_total{stage="analyzer"}).
const (
	kindBaselineLoad     = "baseline_load"     // a load attempt failed; retried
	kindBaselineCorrupt  = "baseline_corrupt"  // a latest revision that does not load
	kindBaselineFallback = "baseline_fallback" // an older valid revision loaded instead
)

// loadState is whether the stored baselines are loaded, and the last
// attempt's error while they are not.
type loadState struct {
	mu      sync.Mutex
	loaded  bool
	err     error
	timeout time.Duration // one attempt's bound; 0: loadTimeout
}

// Ready is nil once the stored baselines are loaded (at once when no
// analyzer.baselines_bucket is set) and, partitioned, while the instance
// renews its leases; otherwise an error saying why, for /readyz.
func (a *Analyzer) Ready() error {
	if a.cfg.BaselinesBucket == "" {
		return nil
	}
	if a.parts != nil {
		if err := a.parts.ready(); err != nil {
			return err
		}
	}
	a.loading.mu.Lock()
	defer a.loading.mu.Unlock()
	switch {
	case a.loading.loaded:
		return nil
	case a.loading.err != nil:
		return fmt.Errorf("baselines not loaded yet: %w", a.loading.err)
	}
	return errors.New("baselines not loaded yet")
}

// loadBaselines opens the bucket and loads every stored baseline,
// retrying (logged, counted as baseline_load) until it succeeds; an error
// only when ctx ends first.
func (a *Analyzer) loadBaselines(ctx context.Context) error {
	delay := loadRetryFirst
	for attempt := 1; ; attempt++ {
		n, bad, fellBack, err := a.tryLoad(ctx)
		a.loading.mu.Lock()
		a.loading.loaded, a.loading.err = err == nil, err
		a.loading.mu.Unlock()
		if err == nil {
			a.log.Info("baselines loaded", logfields.Bucket, a.cfg.BaselinesBucket, logfields.Loaded, n,
				logfields.Corrupt, bad, logFellBack, fellBack, logfields.Attempt, attempt)
			return nil
		}
		a.m.Errors.WithLabelValues(metrics.StageAnalyzer, kindBaselineLoad).Inc()
		a.log.Warn("loading baselines failed; not ready, retrying", logfields.Bucket, a.cfg.BaselinesBucket,
			logfields.Attempt, attempt, logfields.RetryIn, delay, logfields.Err, err)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(delay):
		}
		delay = min(2*delay, loadRetryMax)
	}
}

// logFellBack counts baselines loaded from an older revision.
const logFellBack = "fell_back"

// tryLoad is one attempt of loadBaselines.
func (a *Analyzer) tryLoad(ctx context.Context) (n, bad, fellBack int, err error) {
	ctx, cancel := context.WithTimeout(ctx, cmp.Or(a.loading.timeout, loadTimeout))
	defer cancel()
	if a.store == nil {
		st, err := openStore(ctx, a.js, a.cfg.BaselinesBucket, a.cfg.KVReplicas)
		if err != nil {
			return 0, 0, 0, err
		}
		st.ops, st.refused = a.operators, func(reason string) { a.m.Refused.WithLabelValues(metrics.StageAnalyzer, reason).Inc() }
		a.store = st
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.cfg.Partitions > 1 {
		// Each partition's baselines are loaded when it is acquired.
		return 0, 0, 0, nil
	}
	n, bad, fellBack, err = a.store.LoadInto(ctx, a.engine, a.log)
	a.m.Errors.WithLabelValues(metrics.StageAnalyzer, kindBaselineCorrupt).Add(float64(bad))
	a.m.Errors.WithLabelValues(metrics.StageAnalyzer, kindBaselineFallback).Add(float64(fellBack))
	return n, bad, fellBack, err
}

// LoadInto loads every stored baseline into e. A latest revision that does
// not load (corrupt, or an operation no trusted operator signed) is counted
// in bad and replaced by the newest revision of the key's history that
// loads (fellBack; marked dirty, so the analyzer writes it back over the
// bad one); with none, the image learns afresh. An error when the bucket
// cannot be listed or read: nothing is known about what was not read.
func (s *Store) LoadInto(ctx context.Context, e *Engine, log *slog.Logger) (n, bad, fellBack int, err error) {
	return s.LoadMatching(ctx, e, log, nil)
}

// LoadMatching is LoadInto for the baselines whose key keep accepts (all
// when keep is nil): an analyzer instance loads the groups of a partition
// it acquires.
func (s *Store) LoadMatching(ctx context.Context, e *Engine, log *slog.Logger, keep func(key string) bool) (n, bad, fellBack int, err error) {
	lister, err := s.kv.ListKeys(ctx)
	if err != nil {
		return 0, 0, 0, fmt.Errorf("listing baselines: %w", err)
	}
	defer func() { _ = lister.Stop() }()
	for k := range lister.Keys() {
		if keep != nil {
			key, uerr := kvdoc.UnescapeKey(k)
			if uerr != nil || !keep(key) {
				continue
			}
		}
		entry, err := s.kv.Get(ctx, k)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue // deleted since the listing
		}
		if err != nil {
			return n, bad, fellBack, fmt.Errorf("reading baseline %s: %w", k, err)
		}
		err = s.loadRevision(e, entry.Value(), true)
		if err == nil {
			n++
			continue
		}
		bad++
		rev, herr := s.loadNewestValid(ctx, e, k, entry.Revision())
		if herr != nil {
			return n, bad, fellBack, herr
		}
		if rev == 0 {
			log.Error("baseline not loaded and no valid revision in its history; the image learns afresh", logfields.KVKey, k, logfields.Err, err)
			continue
		}
		n++
		fellBack++
		log.Warn("baseline's latest revision not loaded; loaded the newest valid revision", logfields.KVKey, k,
			logfields.Revision, rev, logfields.Err, err)
	}
	return n, bad, fellBack, nil
}

// loadRevision decodes, verifies and loads one stored revision; latest
// says it is the key's latest (an operation no trusted operator signed is
// then counted as refused); an older one loaded is marked to be written
// back.
func (s *Store) loadRevision(e *Engine, raw []byte, latest bool) error {
	d, err := UnmarshalJSONDoc(raw)
	if err != nil {
		return err
	}
	if d.Op != "" && s.ops != nil {
		if _, verr := verifyOp(s.ops, d, false); verr != nil {
			if latest && s.refused != nil {
				s.refused(auth.Reason(verr))
			}
			return fmt.Errorf("operation %s not signed by a known operator: %w", d.Op, verr)
		}
	}
	if err := e.Load(d); err != nil {
		return err
	}
	if !latest {
		if b := e.images[d.Key]; b != nil {
			b.dirty = true // written back over the bad latest revision
		}
	}
	return nil
}

// loadNewestValid loads the newest revision of key older than latest that
// loads, stopping at a delete or purge; its revision, 0 when none does.
func (s *Store) loadNewestValid(ctx context.Context, e *Engine, key string, latest uint64) (uint64, error) {
	hist, err := s.kv.History(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("history of baseline %s: %w", key, err)
	}
	for i := len(hist) - 1; i >= 0; i-- {
		h := hist[i]
		if h.Operation() != jetstream.KeyValuePut {
			break // nothing before a delete comes back
		}
		if h.Revision() >= latest {
			continue
		}
		if s.loadRevision(e, h.Value(), false) == nil {
			return h.Revision(), nil
		}
	}
	return 0, nil
}
