package loadtest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/containsec/contain/internal/bus"
	"github.com/containsec/contain/internal/logfields"
	"github.com/containsec/contain/internal/metrics"
	"github.com/containsec/contain/internal/testenv"
	"github.com/containsec/contain/responder"
	"github.com/containsec/contain/schemas/containv1"
)

// FleetConfig configures a fleet-scale run: a NATS cluster of real
// nats-server processes, each stage a `contain` process of its own
// (one enricher, Analyzers analyzers, one store), the generator and the
// dry-run responders of ResponderHosts hosts in this process.
type FleetConfig struct {
	Generator GeneratorConfig
	// NATSNodes is the size of the NATS cluster (streams and buckets are
	// R3 from 3 nodes on, else R1).
	NATSNodes int
	// Analyzers is the number of analyzer processes.
	Analyzers int
	// Partitions is analyzer.partitions: with more than 1 the enricher
	// routes each baseline group to a partition and the analyzers lease
	// the partitions (docs/design/022-analyzer-partitions.md); with 1
	// the analyzers share one durable (each batch to one of them, each
	// learning a partial baseline).
	Partitions int
	// LeaseTTL is analyzer.lease_ttl: how long a killed analyzer's
	// partitions wait before another takes them.
	LeaseTTL time.Duration
	// PersistInterval is analyzer.persist_interval: a partition's new
	// owner scores with the baselines its previous owner last wrote, so
	// a kill loses at most this much learning.
	PersistInterval time.Duration
	// ResponderHosts is how many hosts (the first ones) run a dry-run
	// responder; actions are timed on those.
	ResponderHosts int
	// KillAnalyzerAt kills the first analyzer (SIGKILL) this long after
	// the generator started; 0: no kill.
	KillAnalyzerAt time.Duration
	// AnalyzerAckWait is the analyzers' analyzer.ack_wait: how long the
	// batches a killed analyzer held wait before they are redelivered.
	AnalyzerAckWait time.Duration
	LearningWindow  time.Duration
	ClickHouse      []string
	Database        string
	KeepDatabase    bool
	DrainTimeout    time.Duration
	// MemoryLimitMB is each stage process's memory.limit_mb.
	MemoryLimitMB int
	// GCPercent is each stage process's memory.gc_percent (0: contain's
	// default, 100). A fleet's stage processes have a memory budget of
	// their own, so the default run spends it on fewer collections: 400
	// (docs/scaling.md).
	GCPercent int
	// MaxProcs is each stage process's runtime.max_procs (0: Go's
	// default). A scaled-out stage instance runs on one thread: 1
	// (docs/scaling.md, "One thread per stage instance").
	MaxProcs int
	// MaxStageCPUPerEvent, when > 0, makes Check fail when enricher +
	// analyzers + store cost more CPU per event than this many µs
	// (issue 15's bound is 5).
	MaxStageCPUPerEvent float64
	// ContainBin is a built cmd/contain; empty: built into the run's
	// directory.
	ContainBin string
	// ProfileDir, when set, receives a CPU profile of each stage process
	// (<name>.cpu.prof, written when it stops: CONTAIN_CPU_PROFILE).
	ProfileDir string
	// Dir keeps the run's files (logs, NATS stores); empty: a temporary
	// directory removed at the end.
	Dir string
	// StageEnv is added to every stage process's environment (KEY=VALUE,
	// e.g. CONTAIN_ANALYZER_FETCH=64): configuration experiments.
	StageEnv []string
}

// DefaultFleetConfig is 3 NATS nodes, 3 analyzers, 200 hosts × 50
// containers at 20,000 events/s for 30 s, one analyzer killed 60% into
// the run. Each host's batches are paced as a fleet's collectors would
// be configured (collector.flush_interval 20ms, max_flush_interval 1s,
// target_batch_rate 1): a host at more than 1 event/s publishes one batch
// a second, not one per 20 ms (--flush alone fixes the interval when it
// is at least --max-flush). Against 2 a second at 50,000 events/s (20 s
// runs, load ~20): 237 vs 135 events per raw batch, NATS 24.6 vs 27.4
// µs/event, drained in 32 vs 50 s, stages' CPU the same within noise. One event per host and
// 10 s is a probe (20 a second from 200 hosts): each pending probe is
// looked up in ClickHouse until found, and that querying is booked to
// ClickHouse's CPU (at one per host and second it took more ClickHouse
// time than the store's inserts).
func DefaultFleetConfig() FleetConfig {
	g := DefaultGeneratorConfig()
	g.Hosts, g.ContainersPerHost, g.Images = 200, 50, 50
	g.Rate, g.Duration = 20_000, 30*time.Second
	g.FlushInterval, g.MaxFlushInterval, g.TargetBatchRate = 20*time.Millisecond, time.Second, 1
	g.ProbeEvery = 10 * time.Second
	learning := 3 * time.Second
	g.DeviateAfter = learning + 2*time.Second
	return FleetConfig{
		Generator:       g,
		NATSNodes:       3,
		Analyzers:       3,
		Partitions:      12,
		LeaseTTL:        5 * time.Second,
		PersistInterval: time.Second,
		ResponderHosts:  4,
		AnalyzerAckWait: 5 * time.Second,
		LearningWindow:  learning,
		ClickHouse:      []string{"127.0.0.1:19000"},
		Database:        fmt.Sprintf("contain_fleet_%d", time.Now().Unix()),
		DrainTimeout:    2 * time.Minute,
		MemoryLimitMB:   256,
		GCPercent:       400,
		MaxProcs:        1,
	}
}

// Validate reports the first invalid field.
func (c FleetConfig) Validate() error {
	if err := c.Generator.Validate(); err != nil {
		return err
	}
	switch {
	case c.NATSNodes < 1:
		return errors.New("fleet: --nats-cluster must be >= 1")
	case c.Analyzers < 1:
		return errors.New("fleet: --analyzers must be >= 1")
	case c.Partitions < 1:
		return errors.New("fleet: --partitions must be >= 1")
	case c.ResponderHosts < 0 || c.ResponderHosts > c.Generator.Hosts:
		return errors.New("fleet: --responder-hosts must be in [0, hosts]")
	case c.KillAnalyzerAt > 0 && c.Analyzers < 2:
		return errors.New("fleet: --kill-analyzer-at needs --analyzers >= 2")
	case c.Database == "" || len(c.ClickHouse) == 0:
		return errors.New("fleet: a ClickHouse address and database are required")
	case c.DrainTimeout <= 0:
		return errors.New("fleet: --drain-timeout must be > 0")
	case c.GCPercent < -1:
		return errors.New("fleet: --stage-gc-percent must be -1, 0 (contain's default) or more")
	case c.MaxProcs < 0:
		return errors.New("fleet: --stage-max-procs must be 0 (Go's default) or more")
	case c.MaxStageCPUPerEvent < 0:
		return errors.New("fleet: --max-cpu-us-per-event must be >= 0")
	}
	return nil
}

// FleetResult is what a fleet run measured.
type FleetResult struct {
	Gen GeneratorStats
	// EventsPerSec is the events published per second of the generator.
	EventsPerSec float64
	// Dropped is every event lost or dropped: failed publishes, events
	// missing from ClickHouse, and the stages' dropped, expired,
	// dead-lettered and failed-publish counts (the store's duplicate
	// skips are no loss). DropDetail names them.
	Dropped    int64
	DropDetail map[string]float64
	Rows       uint64
	AlertLag   LagSummary
	ActionLag  LagSummary
	// ProbeLag is event → its row found in ClickHouse.
	ProbeLag LagSummary
	// Attacks injected, and those with no alert on their event.
	Attacks, MissedAttacks int
	// Missed names some missed attacks (event id, time from the start).
	Missed []string
	Alerts int64
	// DuplicateAlerts is trigger events alerted under more than one alert
	// id; RedeliveredAlerts is alert ids received more than once (an
	// at-least-once redelivery across a handover: same id, deduplicated by
	// the store and the responder).
	DuplicateAlerts, RedeliveredAlerts int
	// AlertsAfterKill is alerts on attacks made after the analyzer kill.
	AlertsAfterKill int
	Killed          bool
	KilledAt        time.Duration // from the generator's start
	// Rebalances is partitions acquired beyond the first assignment
	// (contain_analyzer_partition_changes_total{change="acquired"} of
	// every analyzer, minus Partitions): hand-overs as instances join
	// and after one dies. 0 with a shared durable.
	Rebalances int
	// Mode is partitions=N or shared_durable.
	Mode string
	// GCPercent is the stages' memory.gc_percent (0: contain's default).
	GCPercent int
	// MaxProcs is the stages' runtime.max_procs (0: Go's default).
	MaxProcs int
	// CPUBound is FleetConfig.MaxStageCPUPerEvent (0: not checked).
	CPUBound float64
	// StreamMsgs is the messages (batches) in CONTAIN_RAW and
	// CONTAIN_EVENTS at the end: the enricher cuts a host's batch into
	// one per partition its events fall in.
	StreamMsgs map[string]uint64
	// CHDataFS: as Result.CHDataFS.
	CHDataFS string
	// CPU over the run (generator start → drained), per process kind.
	CPU map[string]time.Duration
	// GenCPU is the same over the generator's run only: the steady
	// state, without the drain (where a stage that fell behind catches
	// up and the others idle).
	GenCPU     map[string]time.Duration
	PeakRSS    map[string]uint64
	Window     time.Duration
	Drain      time.Duration
	DrainError error
	Dir        string
}

// fleetProbePoll is how often the fleet looks its pending probes up.
const fleetProbePoll = 250 * time.Millisecond

// scrapeInterval is how often the fleet run reads the stages' metrics.
const scrapeInterval = 5 * time.Second

// Stage CPU keys of FleetResult.CPU.
const (
	cpuEnricher   = "enricher"
	cpuAnalyzers  = "analyzers"
	cpuStore      = "store"
	cpuNATS       = "nats"
	cpuClickHouse = "clickhouse"
	cpuDriver     = "driver" // this process: generator, responders, probes
)

// StageCPUPerEvent is enricher + analyzers + store CPU per published
// event, in µs.
func (r *FleetResult) StageCPUPerEvent() float64 {
	return r.perEvent(r.CPU[cpuEnricher] + r.CPU[cpuAnalyzers] + r.CPU[cpuStore])
}

func (r *FleetResult) perEvent(d time.Duration) float64 {
	if r.Gen.Events == 0 {
		return 0
	}
	return float64(d.Microseconds()) / float64(r.Gen.Events)
}

// Line is the one-line summary.
func (r *FleetResult) Line() string {
	ms := func(d time.Duration) string { return fmt.Sprintf("%d", d.Milliseconds()) }
	return fmt.Sprintf("events_per_sec=%.0f dropped=%d alert_p99_ms=%s action_p99_ms=%s clickhouse_lag_p99_ms=%s cpu_us_per_event=%.2f analyzer_rebalances=%d missed_attacks=%d"+
		" attacks=%d duplicate_alerts=%d redelivered_alerts=%d alerts_after_kill=%d enricher_us=%.2f analyzer_us=%.2f store_us=%.2f nats_us=%.2f clickhouse_us=%.2f analyzer_mode=%s gc_percent=%d max_procs=%d",
		r.EventsPerSec, r.Dropped, ms(r.AlertLag.P99), ms(r.ActionLag.P99), ms(r.ProbeLag.P99), r.StageCPUPerEvent(), r.Rebalances, r.MissedAttacks,
		r.Attacks, r.DuplicateAlerts, r.RedeliveredAlerts, r.AlertsAfterKill, r.perEvent(r.CPU[cpuEnricher]), r.perEvent(r.CPU[cpuAnalyzers]), r.perEvent(r.CPU[cpuStore]),
		r.perEvent(r.CPU[cpuNATS]), r.perEvent(r.CPU[cpuClickHouse]), r.Mode, r.GCPercent, r.MaxProcs)
}

// Print writes the details, then the line.
func (r *FleetResult) Print(w io.Writer) {
	fmt.Fprintf(w, "fleet: published %d events (%d attacks) in %v, drained in %v; %d distinct rows; %d alerts\n",
		r.Gen.Events, r.Attacks, r.Gen.Elapsed.Round(time.Millisecond), r.Drain.Round(time.Millisecond), r.Rows, r.Alerts)
	keys := make([]string, 0, len(r.CPU))
	for k := range r.CPU {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(w, "  cpu %-10s %8.2fs  %6.2f µs/event (generator run only: %6.2f)  peak RSS %d MB\n",
			k, r.CPU[k].Seconds(), r.perEvent(r.CPU[k]), r.perEvent(r.GenCPU[k]), r.PeakRSS[k]>>20)
	}
	for k, v := range r.DropDetail {
		fmt.Fprintf(w, "  dropped %v: %s\n", v, k)
	}
	if raw, evs := r.StreamMsgs[containv1.StreamRaw], r.StreamMsgs[containv1.StreamEvents]; raw > 0 && evs > 0 {
		fmt.Fprintf(w, "  batches: %d raw (%.1f events each), %d enriched (%.1f events each)\n",
			raw, float64(r.Gen.Events)/float64(raw), evs, float64(r.Gen.Events)/float64(evs))
	}
	for _, m := range r.Missed {
		fmt.Fprintf(w, "  missed attack %s\n", m)
	}
	if r.Killed {
		fmt.Fprintf(w, "  analyzer-0 killed at +%v\n", r.KilledAt.Round(time.Millisecond))
	}
	if r.DrainError != nil {
		fmt.Fprintf(w, "  drain: %v\n", r.DrainError)
	}
	if r.CHDataFS != "" {
		fmt.Fprintln(w, "  "+dataFSNote(r.CHDataFS))
	}
	fmt.Fprintln(w, r.Line())
}

// Check fails when an attack was missed, anything was dropped, an alert
// arrived twice or, with a kill, no alert followed it.
func (r *FleetResult) Check() error {
	var errs []error
	if r.MissedAttacks > 0 {
		errs = append(errs, fmt.Errorf("%d of %d injected attacks raised no alert", r.MissedAttacks, r.Attacks))
	}
	if r.Dropped > 0 {
		errs = append(errs, fmt.Errorf("%d events dropped or lost", r.Dropped))
	}
	if r.DuplicateAlerts > 0 {
		errs = append(errs, fmt.Errorf("%d trigger events alerted under more than one alert id", r.DuplicateAlerts))
	}
	if r.Killed && r.AlertsAfterKill == 0 {
		errs = append(errs, errors.New("no alert on an attack made after the analyzer was killed"))
	}
	if r.DrainError != nil {
		errs = append(errs, r.DrainError)
	}
	if c := r.StageCPUPerEvent(); r.CPUBound > 0 && c > r.CPUBound {
		errs = append(errs, fmt.Errorf("enricher + analyzers + store cost %.2f µs of CPU per event, over the bound of %.2f", c, r.CPUBound))
	}
	return errors.Join(errs...)
}

// fleetRun is one fleet run's state.
type fleetRun struct {
	cfg     FleetConfig
	log     *slog.Logger
	dir     string
	bin     string
	urls    []string
	stages  []*stageProc
	attacks sync.Map // attack event id (raw bytes as string) -> wall ns
	nAttack int64
	mu      sync.Mutex
}

// RunFleet starts the cluster and the stage processes, feeds them, kills
// an analyzer if asked, waits for everything to drain and measures.
func RunFleet(ctx context.Context, cfg FleetConfig, log *slog.Logger) (res *FleetResult, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	f := &fleetRun{cfg: cfg, log: log, dir: cfg.Dir}
	if f.dir == "" {
		tmp, err := os.MkdirTemp("", "contain-fleet-")
		if err != nil {
			return nil, fmt.Errorf("fleet: %w", err)
		}
		defer os.RemoveAll(tmp)
		f.dir = tmp
	}
	f.bin = cfg.ContainBin
	if f.bin == "" {
		if f.bin, err = BuildGo(ctx, "github.com/containsec/contain/cmd/contain", f.dir); err != nil {
			return nil, err
		}
	}
	cluster, stopCluster, err := startNATSCluster(f.dir, cfg.NATSNodes, log)
	if err != nil {
		return nil, err
	}
	defer stopCluster()
	for _, n := range cluster.Nodes {
		f.urls = append(f.urls, n.URL)
	}
	replicas := min(3, cfg.NATSNodes)
	nc, js, err := bus.Connect(f.urls[0], "contain-fleet", log)
	if err != nil {
		return nil, err
	}
	defer nc.Close()
	if err := ensureFleetStreams(ctx, js, bus.StreamsConfig{EventsMaxAge: time.Hour, AlertsMaxAge: time.Hour,
		Replicas: replicas, MaxBytes: bus.DefaultStreamMaxBytes}, log); err != nil {
		return nil, err
	}

	ch, err := clickhouse.Open(&clickhouse.Options{Addr: cfg.ClickHouse, DialTimeout: 5 * time.Second, ReadTimeout: time.Minute})
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrClickHouseUnavailable, err)
	}
	defer ch.Close()
	if err := ch.Ping(ctx); err != nil {
		return nil, fmt.Errorf("%w at %s: %v", ErrClickHouseUnavailable, strings.Join(cfg.ClickHouse, ","), err)
	}
	if !cfg.KeepDatabase {
		defer func() { _ = ch.Exec(context.Background(), "DROP DATABASE IF EXISTS "+cfg.Database) }()
	}
	if err := f.startStages(replicas); err != nil {
		return nil, err
	}
	defer func() {
		var wg sync.WaitGroup
		for _, s := range f.stages {
			wg.Go(func() { s.Stop(5 * time.Second) })
		}
		wg.Wait()
	}()
	if err := waitFor(ctx, 2*time.Minute, "the store's tables", func() error {
		var n uint64
		if err := ch.QueryRow(ctx, "SELECT count() FROM system.tables WHERE database = ? AND name = 'events'", cfg.Database).Scan(&n); err != nil {
			return err
		}
		if n == 0 {
			return errors.New("no events table yet")
		}
		return f.stagesRunning()
	}); err != nil {
		return nil, err
	}

	sctx, stopResponders := context.WithCancel(ctx)
	var rwg sync.WaitGroup
	defer func() { stopResponders(); rwg.Wait() }()
	if err := f.startResponders(sctx, &rwg, log); err != nil {
		return nil, err
	}
	// Every consumer exists before the first event: a responder's
	// durable starts at the stream's end.
	want := map[string]int{containv1.StreamRaw: 1, containv1.StreamEvents: 1 + cfg.Partitions, containv1.StreamAlerts: cfg.ResponderHosts}
	if err := waitFor(ctx, 2*time.Minute, "the stages' consumers", func() error {
		for stream, n := range want {
			st, err := js.Stream(ctx, stream)
			if err != nil {
				return err
			}
			got := 0
			for range st.ListConsumers(ctx).Info() {
				got++
			}
			if got < n {
				return fmt.Errorf("%s: %d consumers of %d", stream, got, n)
			}
		}
		return f.stagesRunning()
	}); err != nil {
		return nil, err
	}

	// The measuring side: alerts, actions and probes as in Run.
	rc := DefaultConfig()
	rc.Generator = cfg.Generator
	rc.ProbePoll = fleetProbePoll
	rc.Store.Addr, rc.Store.Database = cfg.ClickHouse, cfg.Database
	r := newRun(rc, js, ch, log)
	alertSub, err := nc.Subscribe(containv1.SubjectPrefix+".alerts.>", r.onAlerts)
	if err != nil {
		return nil, fmt.Errorf("fleet: subscribing to alerts: %w", err)
	}
	defer alertSub.Unsubscribe()
	actionSub, err := nc.Subscribe(containv1.SubjectPrefix+".actions.>", r.onActions)
	if err != nil {
		return nil, fmt.Errorf("fleet: subscribing to actions: %w", err)
	}
	defer actionSub.Unsubscribe()

	// The generator: host i publishes through node i mod n.
	gen, err := NewGenerator(cfg.Generator, js, r.probe)
	if err != nil {
		return nil, err
	}
	for i := range cfg.Generator.Hosts {
		if k := i % len(f.urls); k > 0 {
			c, j, err := f.conn(k, "generator")
			if err != nil {
				return nil, err
			}
			defer c.Close()
			gen.PublishAs(i, j)
		}
	}
	gen.WatchDeviations(func(id string, wall int64) {
		f.attacks.Store(id, wall)
		f.mu.Lock()
		f.nAttack++
		f.mu.Unlock()
	})
	pctx, stopProbes := context.WithCancel(ctx)
	defer stopProbes()
	go r.pollProbes(pctx)

	res = &FleetResult{Dir: f.dir, CPU: map[string]time.Duration{}, PeakRSS: map[string]uint64{},
		GCPercent: cfg.GCPercent, MaxProcs: cfg.MaxProcs, CPUBound: cfg.MaxStageCPUPerEvent}
	before := f.cpu(cluster.Nodes)
	start := time.Now()
	var killAt time.Time
	kctx, stopKill := context.WithCancel(ctx)
	killed := make(chan time.Time, 1)
	if cfg.KillAnalyzerAt > 0 {
		go func() {
			select {
			case <-kctx.Done():
				killed <- time.Time{}
				return
			case <-time.After(cfg.KillAnalyzerAt):
			}
			a := f.stage("analyzer-0")
			_ = a.scrape(kctx) // its counters up to the kill
			log.Warn("killing an analyzer", logfields.Name, a.Name())
			a.Kill()
			killed <- time.Now()
		}()
	} else {
		killed <- time.Time{}
	}
	scrapeCtx, stopScraping := context.WithCancel(ctx)
	defer stopScraping()
	go func() {
		// As a Prometheus would, if more often (its default is a minute):
		// a scrape costs each stage its process and Go collectors' work
		// (~2% of an analyzer's CPU at one a second). The killed
		// analyzer is scraped just before the kill; every running stage
		// once more at the end.
		t := time.NewTicker(scrapeInterval)
		defer t.Stop()
		for {
			select {
			case <-scrapeCtx.Done():
				return
			case <-t.C:
			}
			for _, s := range f.stages {
				if s.Running() {
					_ = s.scrape(scrapeCtx)
				}
			}
		}
	}()
	stats, genErr := gen.Run(ctx)
	genEnd := f.cpu(cluster.Nodes)
	stopKill()
	killAt = <-killed
	res.Gen = stats
	if genErr != nil {
		return res, fmt.Errorf("fleet: generator: %w", genErr)
	}
	res.EventsPerSec = float64(stats.Events) / stats.Elapsed.Seconds()

	drainStart := time.Now()
	res.DrainError = f.drain(ctx, js, ch, stats.Events)
	res.Drain = time.Since(drainStart)
	for r.pendingProbes() > 0 && time.Since(drainStart) < cfg.DrainTimeout && ctx.Err() == nil {
		time.Sleep(r.cfg.ProbePoll)
	}
	stopProbes()
	// An alert is published before its batch is acknowledged: give the
	// last ones time to arrive.
	time.Sleep(time.Second)
	after := f.cpu(cluster.Nodes)
	res.Window = time.Since(start)
	res.CHDataFS = clickhouseDataFS(listeningPIDs(f.cfg.ClickHouse))
	res.GenCPU = map[string]time.Duration{}
	for k, v := range after {
		res.CPU[k] = v - before[k]
		res.GenCPU[k] = genEnd[k] - before[k]
	}
	for _, s := range f.stages {
		_, rss := s.Totals()
		k := s.stage
		if k == "analyzer" {
			k = cpuAnalyzers
		}
		res.PeakRSS[k] = max(res.PeakRSS[k], rss)
	}

	// Messages per stream: how the events were cut into batches.
	res.StreamMsgs = map[string]uint64{}
	for _, name := range []string{containv1.StreamRaw, containv1.StreamEvents} {
		if st, err := js.Stream(ctx, name); err == nil {
			if info, err := st.Info(ctx); err == nil {
				res.StreamMsgs[name] = info.State.Msgs
			}
		}
	}

	// Loss and drops, from ClickHouse and the stages' own counters.
	var tr Result
	if err := r.count(&tr); err != nil {
		return res, err
	}
	res.Rows = tr.RowsDistinct
	res.DropDetail = map[string]float64{}
	for _, s := range f.stages {
		if s.Running() {
			if err := s.scrape(ctx); err != nil {
				log.Warn("scraping a stage's metrics", logfields.Name, s.Name(), logfields.Err, err)
			}
		}
		for k, v := range s.counters() {
			if v == 0 || (strings.HasPrefix(k, "contain_dropped_total") && seriesLabel(k, "reason") == "duplicate") {
				continue
			}
			if strings.HasPrefix(k, "contain_analyzer_partition_changes_total") {
				if seriesLabel(k, "change") == "acquired" {
					res.Rebalances += int(v)
				}
				continue
			}
			if s.stage == metrics.StageAnalyzer && cfg.Analyzers > 1 && cfg.Partitions == 1 && strings.HasPrefix(k, "contain_expired_total") {
				// Instances sharing a durable each see the stream's
				// sequence with gaps (the others' batches), which a
				// consumer counts as expired; loss shows in the rows.
				continue
			}
			res.DropDetail[s.Name()+" "+k] += v
		}
	}
	if stats.Failed > 0 {
		res.DropDetail["generator: failed publishes"] = float64(stats.Failed)
	}
	if lost := stats.Events - int64(tr.RowsDistinct); lost != 0 {
		res.DropDetail["clickhouse: published - distinct rows"] = float64(lost)
	}
	res.Mode = "shared_durable"
	if cfg.Partitions > 1 {
		res.Mode = fmt.Sprintf("partitions=%d", cfg.Partitions)
		res.Rebalances = max(0, res.Rebalances-cfg.Partitions)
	}
	for _, v := range res.DropDetail {
		res.Dropped += int64(v)
	}

	r.mu.Lock()
	res.AlertLag, res.ActionLag, res.ProbeLag = summarize(r.alertLag), summarize(r.actionLag), summarize(r.probeLag)
	res.Alerts = r.alerts
	for _, n := range r.alertSeen {
		if n > 1 {
			res.RedeliveredAlerts++
		}
	}
	for _, ids := range r.triggerAlerts {
		if len(ids) > 1 {
			res.DuplicateAlerts++
		}
	}
	f.attacks.Range(func(k, v any) bool {
		res.Attacks++
		if _, got := r.triggered[k.(string)]; !got {
			res.MissedAttacks++
			if len(res.Missed) < 10 {
				res.Missed = append(res.Missed, fmt.Sprintf("%s at +%v", k, time.Duration(v.(int64)-start.UnixNano()).Round(time.Millisecond)))
			}
		} else if !killAt.IsZero() && v.(int64) > killAt.UnixNano() {
			res.AlertsAfterKill++
		}
		return true
	})
	r.mu.Unlock()
	res.Killed = !killAt.IsZero()
	if res.Killed {
		res.KilledAt = killAt.Sub(start)
	}
	return res, nil
}

// conn dials node k's URL.
func (f *fleetRun) conn(k int, name string) (*nats.Conn, jetstream.JetStream, error) {
	return bus.Connect(f.urls[k%len(f.urls)], "contain-fleet-"+name, f.log)
}

// startStages starts the enricher, the analyzers and the store, each a
// `contain` process connected through its own node.
func (f *fleetRun) startStages(replicas int) error {
	empty := filepath.Join(f.dir, "empty.yaml")
	if err := os.WriteFile(empty, []byte("{}\n"), 0o644); err != nil {
		return fmt.Errorf("fleet: %w", err)
	}
	type spec struct {
		stage, name, cmd string
		env              []string
	}
	specs := []spec{
		{metrics.StageEnricher, "enricher", "enrich", []string{"CONTAIN_ENRICHER_REGISTRY_ENABLED=false", "CONTAIN_ENRICHER_WORKERS=0",
			fmt.Sprintf("CONTAIN_ANALYZER_PARTITIONS=%d", f.cfg.Partitions)}},
		{metrics.StageStore, "store", "store", []string{"CONTAIN_STORE_ADDR=" + strings.Join(f.cfg.ClickHouse, ","), "CONTAIN_STORE_DATABASE=" + f.cfg.Database}},
	}
	for i := range f.cfg.Analyzers {
		env := []string{
			fmt.Sprintf("CONTAIN_ANALYZER_PARTITIONS=%d", f.cfg.Partitions),
			fmt.Sprintf("CONTAIN_ANALYZER_INSTANCE_ID=analyzer-%d", i),
			"CONTAIN_ANALYZER_LEASE_TTL=" + f.cfg.LeaseTTL.String(),
			"CONTAIN_ANALYZER_PERSIST_INTERVAL=" + f.cfg.PersistInterval.String(),
			"CONTAIN_ANALYZER_LEARNING_WINDOW=" + f.cfg.LearningWindow.String(),
			"CONTAIN_ANALYZER_ACK_WAIT=" + f.cfg.AnalyzerAckWait.String(),
			// Each attack raises its own alert: no grouping of a
			// container's identical deviations (analyzer.group_window),
			// which would count a second attack into the next alert.
			"CONTAIN_ANALYZER_GROUP_WINDOW=0s"}
		if f.cfg.Analyzers > 1 && f.cfg.Partitions == 1 {
			// Sharing a durable, each instance logs every gap in the
			// sequences it receives as expired messages (the others'
			// batches): a log line per batch, which would be measured.
			env = append(env, "CONTAIN_LOG_LEVEL=error")
		}
		specs = append(specs, spec{metrics.StageAnalyzer, fmt.Sprintf("analyzer-%d", i), "analyze", env})
	}
	for i, s := range specs {
		env := append([]string{
			"CONTAIN_CONFIG=" + empty,
			"CONTAIN_HOST=fleet-" + s.name,
			"CONTAIN_LOG_LEVEL=warn",
			"CONTAIN_NATS_URL=" + f.urls[i%len(f.urls)],
			"CONTAIN_NATS_MANAGE_STREAMS=false",
			fmt.Sprintf("CONTAIN_NATS_STREAMS_REPLICAS=%d", replicas),
			fmt.Sprintf("CONTAIN_MEMORY_LIMIT_MB=%d", f.cfg.MemoryLimitMB),
		}, s.env...)
		if f.cfg.GCPercent != 0 {
			env = append(env, fmt.Sprintf("CONTAIN_MEMORY_GC_PERCENT=%d", f.cfg.GCPercent))
		}
		if f.cfg.MaxProcs != 0 {
			env = append(env, fmt.Sprintf("CONTAIN_RUNTIME_MAX_PROCS=%d", f.cfg.MaxProcs))
		}
		env = append(env, f.cfg.StageEnv...)
		if f.cfg.ProfileDir != "" {
			env = append(env, "CONTAIN_CPU_PROFILE="+filepath.Join(f.cfg.ProfileDir, s.name+".cpu.prof"))
		}
		p, err := startStage(f.bin, f.dir, s.stage, s.name, s.cmd, env)
		if err != nil {
			return err
		}
		f.stages = append(f.stages, p)
	}
	return nil
}

// stagesRunning fails when a stage process exited.
func (f *fleetRun) stagesRunning() error {
	for _, s := range f.stages {
		if !s.Running() {
			return fmt.Errorf("stage %s exited (%v); log: %s", s.Name(), s.ExitErr(), filepath.Join(f.dir, s.Name()+".log"))
		}
	}
	return nil
}

func (f *fleetRun) stage(name string) *stageProc { return stageNamed(f.stages, name) }

// startResponders runs a dry-run responder for each of the first
// ResponderHosts hosts in this process, through the last node.
func (f *fleetRun) startResponders(ctx context.Context, wg *sync.WaitGroup, log *slog.Logger) error {
	if f.cfg.ResponderHosts == 0 {
		return nil
	}
	nc, js, err := f.conn(len(f.urls)-1, "responder")
	if err != nil {
		return err
	}
	m := metrics.New()
	for i := range f.cfg.ResponderHosts {
		rc := responder.DefaultConfig()
		rc.DryRun, rc.Snapshot = true, false
		rc.Host = f.cfg.Generator.HostName(i)
		rsp, err := responder.New(rc, nc, js, m, log.With(logfields.Stage, metrics.StageResponder))
		if err != nil {
			nc.Close()
			return fmt.Errorf("responder: %w", err)
		}
		wg.Add(1)
		go func() { defer wg.Done(); _ = rsp.Run(ctx) }()
	}
	go func() { <-ctx.Done(); wg.Wait(); nc.Close() }()
	return nil
}

// cpu samples the CPU time so far of each kind of process.
func (f *fleetRun) cpu(nodes []*testenv.NATSNode) map[string]time.Duration {
	out := map[string]time.Duration{}
	for _, s := range f.stages {
		_, _ = s.Sample()
		c, _ := s.Totals()
		k := s.stage
		if k == metrics.StageAnalyzer {
			k = cpuAnalyzers
		}
		out[k] += c
	}
	for _, n := range nodes {
		if u, err := ReadProcUsage(n.Pid()); err == nil {
			out[cpuNATS] += u.CPU
		}
	}
	out[cpuClickHouse] = clickhouseCPU(listeningPIDs(f.cfg.ClickHouse))
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) == nil {
		out[cpuDriver] = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	return out
}

// drain waits until no consumer has anything pending and every published
// event is a row.
func (f *fleetRun) drain(ctx context.Context, js jetstream.JetStream, ch clickhouse.Conn, published int64) error {
	smp := newSampler(nil, js)
	var last string
	deadline := time.Now().Add(f.cfg.DrainTimeout)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		pend, err := smp.pending(ctx)
		var rows uint64
		if err == nil && pend.total() == 0 {
			err = ch.QueryRow(ctx, "SELECT "+distinctIDs+" FROM "+f.cfg.Database+".events").Scan(&rows)
			if err == nil && int64(rows) >= published {
				return nil
			}
		}
		last = fmt.Sprintf("pending %d, rows %d of %d (%v)", pend.total(), rows, published, err)
		time.Sleep(250 * time.Millisecond)
	}
	return fmt.Errorf("fleet: not drained after %v: %s", f.cfg.DrainTimeout, last)
}
