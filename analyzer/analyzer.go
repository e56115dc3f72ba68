package analyzer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/containsec/contain/internal/auth"
	"github.com/containsec/contain/internal/bus"
	"github.com/containsec/contain/internal/logfields"
	"github.com/containsec/contain/internal/metrics"
	"github.com/containsec/contain/schemas/containv1"
)

// Analyzer runs an Engine on the CONTAIN_EVENTS stream and publishes its
// alerts to CONTAIN_ALERTS.
type Analyzer struct {
	cfg  Config
	js   jetstream.JetStream
	m    *metrics.Metrics
	log  *slog.Logger
	prod *bus.Producer
	// operators verifies manual baseline operations (opsign.go).
	operators *auth.Verifier

	mu       sync.Mutex
	engine   *Engine
	pending  []*containv1.Event // alerts not yet published
	store    *Store
	profiles *profileCache
	// loading is the state of the baseline load at start (load.go).
	loading loadState
	// parts holds the partition leases when Config.Partitions > 1
	// (lease.go); nil otherwise.
	parts *partitioner
	// handleMu serialises handle across partition consumers (the
	// producer numbers batches, pending is shared).
	handleMu sync.Mutex
	// persistMu serialises baseline writes (store.go).
	persistMu sync.Mutex
	// afterPublish, when set (tests), runs after a fetch's alerts are
	// published and before the fetch is acknowledged.
	afterPublish func()
}

// maxPending bounds the alerts kept while publishing fails.
const maxPending = 10000

// New makes an Analyzer; call Run to start it. log is used as given: the
// caller scopes it once (logfields.Stage).
func New(cfg Config, js jetstream.JetStream, m *metrics.Metrics, log *slog.Logger) (*Analyzer, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if js == nil || m == nil || log == nil {
		return nil, errors.New("analyzer: jetstream, metrics and logger are required")
	}
	host := cfg.Host
	if host == "" {
		host, _ = os.Hostname()
	}
	a := &Analyzer{cfg: cfg, js: js, m: m, log: log, prod: bus.NewProducer(host, metrics.StageAnalyzer)}
	operators, err := auth.ParseTrusted("analyzer.operator_keys", cfg.OperatorKeys)
	if err != nil {
		return nil, err
	}
	a.operators = auth.NewVerifier(operators, 0)
	var pf ProfileFunc
	if cfg.ProfilesBucket != "" {
		a.profiles = newProfileCache(js, cfg.ProfilesBucket, a.log)
		pf = a.profiles.get
	}
	eng, err := NewEngine(cfg, pf)
	if err != nil {
		return nil, err
	}
	if a.profiles != nil {
		eng.SetRefProfiles(a.profiles.getRef)
	}
	a.engine = eng
	registerStats(m.Registry, a)
	if cfg.Partitions > 1 {
		if cfg.BaselinesBucket == "" {
			return nil, errors.New("analyzer.partitions: needs analyzer.baselines_bucket (a partition's next owner loads its baselines)")
		}
		a.parts = newPartitioner(a)
	}
	return a, nil
}

// InstanceID is this instance's id among the analyzers sharing the
// partitions ("" when not partitioned).
func (a *Analyzer) InstanceID() string {
	if a.parts == nil {
		return ""
	}
	return a.parts.id
}

// Partitions lists the partitions this instance holds, ascending (nil
// when not partitioned).
func (a *Analyzer) Partitions() []int {
	if a.parts == nil {
		return nil
	}
	return a.parts.ownedList()
}

// Run consumes events until ctx ends.
func (a *Analyzer) Run(ctx context.Context) error {
	if a.cfg.BaselinesBucket != "" {
		if err := a.loadBaselines(ctx); err != nil {
			return nil // ctx ended before the baselines could be loaded
		}
		go a.persistLoop(ctx)
		go a.watchControl(ctx)
	}
	if a.profiles != nil {
		go a.profiles.run(ctx, func(digest string, p *Profile) {
			a.mu.Lock()
			a.engine.SetProfile(digest, p)
			a.mu.Unlock()
		}, func() { a.m.Errors.WithLabelValues(metrics.StageAnalyzer, "profile_decode").Inc() })
	}
	var err error
	if a.parts != nil {
		a.parts.run(ctx)
	} else {
		err = a.consume(ctx)
	}
	if a.store != nil {
		fctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		a.persist(fctx)
		cancel()
	}
	return err
}

// consume runs the single durable consumer of an unpartitioned analyzer.
func (a *Analyzer) consume(ctx context.Context) error {
	return bus.Consume(ctx, a.js, bus.ConsumerConfig{
		Stream:        containv1.StreamEvents,
		Durable:       a.cfg.Durable,
		FilterSubject: a.cfg.FilterSubject,
		Stage:         metrics.StageAnalyzer,
		Fetch:         a.cfg.Fetch,
		AckWait:       a.cfg.AckWait,
		Eager:         true, // on the detection path: a lone event goes at once
		// The engine copies what it keeps (TestEngineKeepsNoPayload)
		// and keeps no event past Observe: decoded into reused storage
		// (design 031).
		AliasPayload: true,
		ReuseEvents:  true,
	}, a.handle, a.m, a.log)
}

// handle scores a fetch of batches and publishes the alerts, grouped by
// the host they are about. When publishing fails the alerts are kept and
// the batches redelivered; the engine drops the redelivered duplicates.
func (a *Analyzer) handle(ctx context.Context, batches []*containv1.Batch) error {
	a.handleMu.Lock()
	defer a.handleMu.Unlock()
	if a.profiles != nil {
		if err := a.profiles.ensure(ctx, profileRefs(batches)); err != nil {
			a.m.Errors.WithLabelValues(metrics.StageAnalyzer, "profile_load").Inc()
		}
	}
	a.mu.Lock()
	for _, b := range batches {
		for _, ev := range b.Events {
			if out := a.engine.Observe(ev); len(out) > 0 {
				if len(a.pending) >= maxPending {
					a.m.Dropped.WithLabelValues(metrics.StageAnalyzer, "alerts_pending_full").Add(float64(len(out)))
					continue
				}
				a.pending = append(a.pending, out...)
			}
		}
	}
	pending := a.pending
	a.pending = nil
	a.mu.Unlock()
	if len(pending) == 0 {
		return nil
	}
	byHost := map[string][]*containv1.Event{}
	var order []string
	for _, al := range pending {
		if _, ok := byHost[al.Host]; !ok {
			order = append(order, al.Host)
		}
		byHost[al.Host] = append(byHost[al.Host], al)
	}
	var failed []*containv1.Event
	var firstErr error
	for _, h := range order {
		evs := byHost[h]
		if err := bus.Publish(ctx, a.js, containv1.AlertsSubject(h), a.prod.Batch(evs)); err != nil {
			a.m.Errors.WithLabelValues(metrics.StageAnalyzer, "publish").Inc()
			failed = append(failed, evs...)
			if firstErr == nil {
				firstErr = err
			}
			continue
		}
		a.m.EventsOut.WithLabelValues(metrics.StageAnalyzer).Add(float64(len(evs)))
		for _, al := range evs {
			a.m.Alerts.WithLabelValues(al.GetAlert().GetRule()).Inc()
			if w := al.GetAlert().GetTrigger().GetWallNs(); w > 0 {
				a.m.ExecToAlert.Observe(time.Since(time.Unix(0, w)).Seconds())
			}
			a.log.Info("alert", logfields.ContainerID, al.ContainerId, logfields.Image, al.ImageRef, logfields.Score, al.GetAlert().GetScore(),
				logfields.Rule, al.GetAlert().GetRule(), logfields.Reason, al.GetAlert().GetReasons()[0].GetMessage())
		}
	}
	if firstErr != nil {
		a.mu.Lock()
		a.pending = append(failed, a.pending...)
		a.mu.Unlock()
		return fmt.Errorf("publishing alerts: %w", firstErr)
	}
	if a.afterPublish != nil {
		a.afterPublish()
	}
	return nil
}

// Engine runs fn with the analyzer's engine locked (for the control
// operations of the CLI and tests).
func (a *Analyzer) Engine(fn func(*Engine)) {
	a.mu.Lock()
	defer a.mu.Unlock()
	fn(a.engine)
}

func registerStats(reg *prometheus.Registry, a *Analyzer) {
	stat := func(name, help string, f func(Stats) uint64) {
		c := prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: "contain", Subsystem: "analyzer", Name: name, Help: help},
			func() float64 {
				a.mu.Lock()
				defer a.mu.Unlock()
				return float64(f(a.engine.stats))
			})
		if err := reg.Register(c); err != nil {
			var are prometheus.AlreadyRegisteredError
			if !errors.As(err, &are) {
				a.log.Warn("registering metric", logfields.Name, name, logfields.Err, err)
			}
		}
	}
	stat("events_learned_total", "Events seen while their baseline was learning.", func(s Stats) uint64 { return s.Learned })
	stat("events_scored_total", "Events scored against a converged or locked baseline.", func(s Stats) uint64 { return s.Scored })
	stat("events_late_total", "Events older than their baseline's convergence.", func(s Stats) uint64 { return s.Late })
	stat("events_invalid_total", "Events missing what scoring needs.", func(s Stats) uint64 { return s.Invalid })
	stat("events_duplicate_total", "Deviating events seen twice.", func(s Stats) uint64 { return s.Duplicates })
	stat("deviations_total", "Events with at least one deviation.", func(s Stats) uint64 { return s.Deviations })
	stat("deviations_grouped_total", "Deviations grouped into an earlier alert.", func(s Stats) uint64 { return s.Grouped })
	stat("deviations_absorbed_total", "Deviations learned by a converged baseline.", func(s Stats) uint64 { return s.Absorbed })
	stat("items_full_total", "Items not learned because a baseline set was full.", func(s Stats) uint64 { return s.Full })
	stat("events_exec_session_total", "Events of exec sessions not scored as the container's own (analyzer.exec_sessions).", func(s Stats) uint64 { return s.Sessions })
	stat("alerts_combined_total", "Alerts whose score the incident combination raised.", func(s Stats) uint64 { return s.Combined })
	stat("events_runtime_total", "Events of the container runtime's own setup (runc init), neither learned nor scored.", func(s Stats) uint64 { return s.Runtime })
	stat("syscall_counts_total", "Periodic syscall count events, skipped.", func(s Stats) uint64 { return s.Counts })
	stat("images_refused_total", "Events ignored because max_images was reached.", func(s Stats) uint64 { return s.Images })
}
