package loadtest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/containsec/contain/analyzer"
	"github.com/containsec/contain/enricher"
	"github.com/containsec/contain/internal/bus"
	"github.com/containsec/contain/internal/logfields"
	"github.com/containsec/contain/internal/metrics"
	"github.com/containsec/contain/responder"
	"github.com/containsec/contain/schemas/containv1"
	"github.com/containsec/contain/store"
)

// Config configures one load-test run: the generator and the stages of one
// `contain run` (enricher, analyzer, store, one dry-run responder per
// simulated host) on an embedded NATS.
type Config struct {
	Generator GeneratorConfig
	Enricher  enricher.Config
	Analyzer  analyzer.Config
	Store     store.Config
	Responder responder.Config
	Streams   bus.StreamsConfig
	// NATS, when its Control URL is set, runs on an external NATS (e.g. a
	// cluster) instead of the embedded server, each party connected
	// through its own URL.
	NATS NATSURLs
	// StoreDir is the embedded JetStream directory; empty: a temporary
	// directory removed at the end.
	StoreDir string
	// KeepDatabase keeps the ClickHouse database (Store.Database) after
	// the run; it is dropped otherwise.
	KeepDatabase bool
	// DrainTimeout bounds the wait, after the generator stopped, for every
	// consumer to catch up and every event to be in ClickHouse.
	DrainTimeout time.Duration
	// SampleEvery is the period of the metrics, pending and memory samples.
	SampleEvery time.Duration
	// ProbePoll is the period of the ClickHouse queries that time probes
	// (the resolution of the event→row lag).
	ProbePoll time.Duration
	// MaxRSS, when > 0, is the bound on this process's peak RSS (bytes):
	// Result.Check fails a run that went over it.
	MaxRSS uint64
}

// NATSURLs are the servers each party of a run connects through; an
// empty URL takes Control.
type NATSURLs struct {
	// Control creates the streams, subscribes to alerts and actions and
	// samples the consumers.
	Control   string
	Generator string
	Enricher  string
	Analyzer  string
	Store     string
	Responder string
}

// url is u, or Control when u is empty.
func (n NATSURLs) url(u string) string {
	if u == "" {
		return n.Control
	}
	return u
}

// DefaultConfig is a run of the default generator against ClickHouse at
// 127.0.0.1:19000, in a fresh database contain_load_<unix time>, with the
// stages' defaults except: no image resolution (the generated images are
// in no registry), a 3 s learning window, and the responder in dry run.
func DefaultConfig() Config {
	g := DefaultGeneratorConfig()
	en := enricher.DefaultConfig()
	en.Workers = 0
	en.Registry.Enabled = false
	an := analyzer.DefaultConfig()
	an.LearningWindow = 3 * time.Second
	g.DeviateAfter = an.LearningWindow + 2*time.Second
	st := store.DefaultConfig()
	st.Database = fmt.Sprintf("contain_load_%d", time.Now().Unix())
	rs := responder.DefaultConfig()
	rs.DryRun = true
	rs.Snapshot = false
	return Config{
		Generator:    g,
		Enricher:     en,
		Analyzer:     an,
		Store:        st,
		Responder:    rs,
		Streams:      bus.StreamsConfig{EventsMaxAge: 24 * time.Hour, AlertsMaxAge: 24 * time.Hour, Replicas: 1, MaxBytes: bus.DefaultStreamMaxBytes},
		DrainTimeout: 2 * time.Minute,
		SampleEvery:  time.Second,
		// Each poll is a query ClickHouse pays for: at 100 ms, with a
		// probe per host every 100 ms, they cost it 3.2–6.9 µs per event
		// at 20,000 events/s (docs/benchmarks.md), a third of what the
		// run measures as ClickHouse's own cost.
		ProbePoll: 250 * time.Millisecond,
	}
}

// Validate reports the first invalid field.
func (c Config) Validate() error {
	if err := c.Generator.Validate(); err != nil {
		return err
	}
	if err := c.Enricher.Validate(); err != nil {
		return err
	}
	an := c.Analyzer
	an.Host = "x"
	if err := an.Validate(); err != nil {
		return err
	}
	if err := c.Store.Validate(); err != nil {
		return err
	}
	rs := c.Responder
	rs.Host = c.Generator.HostName(0)
	if err := rs.Validate(); err != nil {
		return err
	}
	if !rs.DryRun {
		return errors.New("responder.dry_run: the load test only runs the responder in dry run (it must freeze nothing)")
	}
	switch {
	case c.DrainTimeout <= 0:
		return errors.New("loadtest.drain_timeout: must be > 0")
	case c.SampleEvery <= 0:
		return errors.New("loadtest.sample_every: must be > 0")
	case c.ProbePoll <= 0:
		return errors.New("loadtest.probe_poll: must be > 0")
	}
	return c.Streams.Validate()
}

// ErrClickHouseUnavailable is returned when the ClickHouse server at
// Store.Addr cannot be reached.
var ErrClickHouseUnavailable = errors.New("loadtest: clickhouse unavailable")

// Run runs the stages, feeds them from the generator, waits for them to
// drain and measures. The Result says whether anything was lost (Check);
// an error means the run itself could not be made.
func Run(ctx context.Context, cfg Config, log *slog.Logger) (*Result, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	urls := cfg.NATS
	if urls.Control == "" {
		dir := cfg.StoreDir
		if dir == "" {
			tmp, err := os.MkdirTemp("", "contain-loadtest-")
			if err != nil {
				return nil, fmt.Errorf("loadtest: %w", err)
			}
			defer os.RemoveAll(tmp)
			dir = tmp
		}
		srv, err := bus.StartEmbedded(bus.EmbeddedConfig{Host: "127.0.0.1", Port: -1, StoreDir: dir})
		if err != nil {
			return nil, err
		}
		defer func() { srv.Shutdown(); srv.WaitForShutdown() }()
		urls = NATSURLs{Control: srv.ClientURL()}
	}
	// connect dials a party's URL; on the embedded server every party
	// shares the control connection, as in one `contain run`.
	nc, js, err := bus.Connect(urls.Control, "contain-loadtest", log)
	if err != nil {
		return nil, err
	}
	defer nc.Close()
	connect := func(u, name string) (*nats.Conn, jetstream.JetStream, error) {
		if cfg.NATS.Control == "" {
			return nc, js, nil
		}
		c, j, err := bus.Connect(urls.url(u), "contain-loadtest-"+name, log.With(logfields.Stage, name))
		if err != nil {
			return nil, nil, err
		}
		return c, j, nil
	}
	var conns []*nats.Conn
	defer func() {
		for _, c := range conns {
			if c != nc {
				c.Close()
			}
		}
	}()
	stageJS := map[string]jetstream.JetStream{}
	var rspNC *nats.Conn
	for _, s := range []string{"generator", metrics.StageEnricher, metrics.StageAnalyzer, metrics.StageStore, metrics.StageResponder} {
		u := map[string]string{"generator": urls.Generator, metrics.StageEnricher: urls.Enricher, metrics.StageAnalyzer: urls.Analyzer,
			metrics.StageStore: urls.Store, metrics.StageResponder: urls.Responder}[s]
		c, j, err := connect(u, s)
		if err != nil {
			return nil, err
		}
		conns = append(conns, c)
		stageJS[s] = j
		if s == metrics.StageResponder {
			rspNC = c
		}
	}
	if err := bus.EnsureStreams(ctx, js, cfg.Streams); err != nil {
		return nil, err
	}

	st, err := store.Open(ctx, cfg.Store, log.With(logfields.Stage, metrics.StageStore))
	if err != nil {
		return nil, err
	}
	defer st.Close()
	if !st.Ready() {
		return nil, fmt.Errorf("%w at %s", ErrClickHouseUnavailable, strings.Join(cfg.Store.Addr, ","))
	}
	if !cfg.KeepDatabase {
		defer func() {
			dctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if err := st.Conn().Exec(dctx, "DROP DATABASE IF EXISTS "+cfg.Store.Database); err != nil {
				log.Warn("dropping the load-test database", logfields.Database, cfg.Store.Database, logfields.Err, err)
			}
		}()
	}

	r := newRun(cfg, js, st.Conn(), log)
	r.genJS = stageJS["generator"]
	alertSub, err := nc.Subscribe(containv1.SubjectPrefix+".alerts.>", r.onAlerts)
	if err != nil {
		return nil, fmt.Errorf("loadtest: subscribing to alerts: %w", err)
	}
	defer alertSub.Unsubscribe()
	actionSub, err := nc.Subscribe(containv1.SubjectPrefix+".actions.>", r.onActions)
	if err != nil {
		return nil, fmt.Errorf("loadtest: subscribing to actions: %w", err)
	}
	defer actionSub.Unsubscribe()

	// The stages, as cmd/contain's runStages wires them.
	m := metrics.New()
	r.m = m
	sctx, stop := context.WithCancel(ctx)
	defer stop()
	var (
		wg       sync.WaitGroup
		stageMu  sync.Mutex
		stageErr []error
	)
	start := func(name string, run func(context.Context) error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := run(sctx); err != nil && sctx.Err() == nil {
				stageMu.Lock()
				stageErr = append(stageErr, fmt.Errorf("%s: %w", name, err))
				stageMu.Unlock()
			}
		}()
	}
	start(metrics.StageStore, func(ctx context.Context) error { return st.Run(ctx, stageJS[metrics.StageStore], m) })
	en, err := enricher.New(cfg.Enricher, stageJS[metrics.StageEnricher], m, log.With(logfields.Stage, metrics.StageEnricher))
	if err != nil {
		return nil, fmt.Errorf("enricher: %w", err)
	}
	en.SetRouter(analyzer.NewRouter(cfg.Analyzer))
	start(metrics.StageEnricher, en.Run)
	anCfg := cfg.Analyzer
	if anCfg.Host == "" {
		anCfg.Host = "loadtest"
	}
	an, err := analyzer.New(anCfg, stageJS[metrics.StageAnalyzer], m, log.With(logfields.Stage, metrics.StageAnalyzer))
	if err != nil {
		return nil, fmt.Errorf("analyzer: %w", err)
	}
	start(metrics.StageAnalyzer, an.Run)
	for i := range cfg.Generator.Hosts {
		rc := cfg.Responder
		rc.Host = cfg.Generator.HostName(i)
		rsp, err := responder.New(rc, rspNC, stageJS[metrics.StageResponder], m, log.With(logfields.Stage, metrics.StageResponder))
		if err != nil {
			return nil, fmt.Errorf("responder: %w", err)
		}
		start(metrics.StageResponder, rsp.Run)
	}

	res, err := r.drive(ctx)
	stop()
	wg.Wait()
	if err != nil {
		return res, err
	}
	res.StageErrors = stageErr
	return res, nil
}

// storeDuplicates is the contain_dropped_total series (labels reason,
// stage) of the rows the store skipped because it already held them.
const storeDuplicates = "duplicate/" + metrics.StageStore

// run holds the state of one load-test run.
type run struct {
	cfg Config
	js  jetstream.JetStream
	// genJS is the generator's connection (js on the embedded server).
	genJS jetstream.JetStream
	ch    driver.Conn // the probe and counter queries' connection
	log   *slog.Logger
	m     *metrics.Metrics

	mu         sync.Mutex
	probes     map[string]probeEvent // pending probe id -> where and when
	probeLag   []time.Duration
	alertLag   []time.Duration
	actionLag  []time.Duration
	alertWall  map[string]int64 // alert id -> trigger wall ns
	alerts     int64
	actions    int64
	actionKind map[string]int64
	badMsgs    int64
	// alertSeen counts each alert id received (more than once: a
	// duplicate); triggered is each trigger event id's first alert's
	// arrival (ns), by its canonical text.
	alertSeen map[string]int
	triggered map[string]int64
	// triggerAlerts is each trigger event's distinct alert ids: alert ids
	// are derived from the trigger, so two for one trigger is a duplicate
	// alert, while one id received twice is an at-least-once redelivery
	// (after an analyzer handover) that the store and responder dedup.
	triggerAlerts map[string]map[string]bool
}

func newRun(cfg Config, js jetstream.JetStream, ch driver.Conn, log *slog.Logger) *run {
	return &run{
		cfg: cfg, js: js, ch: ch, log: log,
		probes:     map[string]probeEvent{},
		alertWall:  map[string]int64{},
		actionKind: map[string]int64{},
		alertSeen:  map[string]int{},
		triggered:  map[string]int64{},

		triggerAlerts: map[string]map[string]bool{},
	}
}

type probeEvent struct {
	container string
	wallNs    int64
}

func (r *run) probe(id, container string, wallNs int64) {
	r.mu.Lock()
	r.probes[id] = probeEvent{container, wallNs}
	r.mu.Unlock()
}

// onAlerts times each alert from its trigger event's wall time.
func (r *run) onAlerts(msg *nats.Msg) {
	r.eachEvent(msg, func(ev *containv1.Event, now int64) {
		a := ev.GetAlert()
		if a == nil {
			return
		}
		r.alerts++
		r.alertSeen[string(ev.Id)]++
		if id := a.GetTrigger().GetId(); len(id) > 0 {
			k := containv1.FormatID(id)
			if r.triggered[k] == 0 {
				r.triggered[k] = now
			}
			if r.triggerAlerts[k] == nil {
				r.triggerAlerts[k] = map[string]bool{}
			}
			r.triggerAlerts[k][string(ev.Id)] = true
		}
		if w := a.GetTrigger().GetWallNs(); w > 0 {
			r.alertLag = append(r.alertLag, time.Duration(now-w))
			r.alertWall[string(ev.Id)] = w
		}
	})
}

// onActions times each action from its alert's trigger wall time.
func (r *run) onActions(msg *nats.Msg) {
	r.eachEvent(msg, func(ev *containv1.Event, now int64) {
		a := ev.GetAction()
		if a == nil {
			return
		}
		r.actions++
		r.actionKind[strings.ToLower(strings.TrimPrefix(a.Result.String(), "RESULT_"))]++
		if w, ok := r.alertWall[string(a.AlertId)]; ok {
			r.actionLag = append(r.actionLag, time.Duration(now-w))
		}
	})
}

// eachEvent decodes a batch and calls f for each event under r.mu, with
// the receive time; a batch that does not decode is counted.
func (r *run) eachEvent(msg *nats.Msg, f func(ev *containv1.Event, now int64)) {
	now := time.Now().UnixNano()
	bs, err := bus.DecodeParts(msg.Data) // a fleet batch's parts too
	r.mu.Lock()
	defer r.mu.Unlock()
	if err != nil {
		r.badMsgs++
	}
	for _, b := range bs {
		for _, ev := range b.Events {
			f(ev, now)
		}
	}
}

// pollProbes looks the pending probes up in ClickHouse every ProbePoll
// until ctx ends.
func (r *run) pollProbes(ctx context.Context) {
	t := time.NewTicker(r.cfg.ProbePoll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		r.mu.Lock()
		ids := make([]string, 0, len(r.probes))
		ctrs := map[string]bool{}
		var oldest int64
		for id, p := range r.probes {
			ids = append(ids, id)
			ctrs[p.container] = true
			if oldest == 0 || p.wallNs < oldest {
				oldest = p.wallNs
			}
			if len(ids) == 500 {
				break
			}
		}
		r.mu.Unlock()
		if len(ids) == 0 {
			continue
		}
		found, err := r.findIDs(ctx, ids, ctrs, oldest)
		if err != nil {
			if ctx.Err() == nil {
				r.log.Warn("probe query", logfields.Err, err)
			}
			continue
		}
		now := time.Now().UnixNano()
		r.mu.Lock()
		for _, id := range found {
			if p, ok := r.probes[id]; ok {
				r.probeLag = append(r.probeLag, time.Duration(now-p.wallNs))
				delete(r.probes, id)
			}
		}
		r.mu.Unlock()
	}
}

// findIDs returns which of ids are in the events table. The query names
// the containers and the oldest second, so that ClickHouse reads only the
// granules of the sort key (container_id, ts) that can hold them rather than
// scanning the table 10 times a second while it is being measured.
func (r *run) findIDs(ctx context.Context, ids []string, ctrs map[string]bool, oldestNs int64) ([]string, error) {
	var sb strings.Builder
	sb.WriteString("SELECT toString(event_id) FROM ")
	sb.WriteString(r.cfg.Store.Database)
	sb.WriteString(".events WHERE container_id IN (")
	first := true
	for c := range ctrs {
		if !first {
			sb.WriteByte(',')
		}
		first = false
		sb.WriteString("'")
		sb.WriteString(c) // hex made by the generator
		sb.WriteString("'")
	}
	fmt.Fprintf(&sb, ") AND ts >= toDateTime(%d) AND event_id IN (", oldestNs/1e9-1)
	for i, id := range ids {
		if i > 0 {
			sb.WriteByte(',')
		}
		sb.WriteString("toUUID('")
		sb.WriteString(id) // canonical UUID text made by FormatID: hex and dashes only
		sb.WriteString("')")
	}
	sb.WriteString(")")
	qctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	rows, err := r.ch.Query(qctx, sb.String())
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, rows.Err()
}

func (r *run) pendingProbes() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.probes)
}

// drive runs the generator, samples while it runs and while the stages
// drain, then counts the rows.
func (r *run) drive(ctx context.Context) (*Result, error) {
	gen, err := NewGenerator(r.cfg.Generator, r.genJS, r.probe)
	if err != nil {
		return nil, err
	}
	res := &Result{Config: r.cfg, Database: r.cfg.Store.Database}
	pctx, stopProbes := context.WithCancel(ctx)
	defer stopProbes()
	go r.pollProbes(pctx)

	smp := newSampler(r.m, r.js)
	sctx, stopSampling := context.WithCancel(ctx)
	samplerDone := make(chan struct{})
	go func() { smp.run(sctx, r.cfg.SampleEvery); close(samplerDone) }()

	res.CHBefore = r.chEvents(ctx)
	res.Before = readUsageFor(r.cfg.Store.Addr)
	res.LoadBefore = loadavg()
	stats, genErr := gen.Run(ctx)
	res.Gen = stats
	res.GenEnd = readUsageFor(r.cfg.Store.Addr)
	smp.mark()
	if genErr != nil {
		stopSampling()
		<-samplerDone
		return res, fmt.Errorf("loadtest: generator: %w", genErr)
	}

	// Drain: every consumer caught up and every event stored.
	drainStart := time.Now()
	deadline := drainStart.Add(r.cfg.DrainTimeout)
	for {
		pend, err := smp.pending(ctx)
		if err == nil && pend.total() == 0 && smp.counter("contain_events_in_total", metrics.StageEnricher) >= float64(stats.Events) {
			break
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			res.DrainTimedOut = true
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	res.Drain = time.Since(drainStart)
	// The last probes' rows may land a poll later than the acks.
	for r.pendingProbes() > 0 && time.Now().Before(deadline) && ctx.Err() == nil {
		time.Sleep(r.cfg.ProbePoll)
	}
	res.End = readUsageFor(r.cfg.Store.Addr)
	res.CHAfter = r.chEvents(ctx)
	res.LoadAfter = loadavg()
	res.CHDataFS = clickhouseDataFS(listeningPIDs(r.cfg.Store.Addr))
	stopSampling()
	<-samplerDone
	stopProbes()

	res.Samples = smp.samples
	res.GenEndSample = smp.markIdx
	res.Dropped = smp.labelled("contain_dropped_total")
	res.SkippedDuplicates = res.Dropped[storeDuplicates]
	delete(res.Dropped, storeDuplicates)
	res.Malformed = smp.labelled("contain_malformed_messages_total")
	res.Errors = smp.labelled("contain_errors_total")
	res.StageIn, res.StageOut = map[string]float64{}, map[string]float64{}
	for _, s := range []string{metrics.StageEnricher, metrics.StageAnalyzer, metrics.StageStore, metrics.StageResponder} {
		res.StageIn[s] = smp.counter("contain_events_in_total", s)
		res.StageOut[s] = smp.counter("contain_events_out_total", s)
	}

	r.mu.Lock()
	res.ProbeLag = summarize(r.probeLag)
	res.ProbesLost = len(r.probes)
	res.AlertLag = summarize(r.alertLag)
	res.ActionLag = summarize(r.actionLag)
	res.Alerts = r.alerts
	res.Actions = r.actions
	res.ActionResults = r.actionKind
	res.BadMessages = r.badMsgs
	r.mu.Unlock()
	if err := r.count(res); err != nil {
		return res, err
	}
	return res, nil
}

// chEvents reads ClickHouse's server-wide InsertQuery, InsertedRows and
// MergedRows counters (other clients of the server count too).
func (r *run) chEvents(ctx context.Context) map[string]uint64 {
	out := map[string]uint64{}
	qctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	rows, err := r.ch.Query(qctx, "SELECT event, value FROM system.events WHERE event IN ('InsertQuery', 'InsertedRows', 'MergedRows')")
	if err != nil {
		return out
	}
	defer rows.Close()
	for rows.Next() {
		var k string
		var v uint64
		if rows.Scan(&k, &v) == nil {
			out[k] = v
		}
	}
	return out
}

// count counts the rows in a session of its own, with a generous read
// timeout (the store's is its insert timeout) and a few attempts: right
// after a heavy run ClickHouse may still be merging parts.
func (r *run) count(res *Result) error {
	conn, err := clickhouse.Open(&clickhouse.Options{
		Addr:        r.cfg.Store.Addr,
		Auth:        clickhouse.Auth{Database: r.cfg.Store.Database, Username: r.cfg.Store.Username, Password: r.cfg.Store.Password},
		DialTimeout: r.cfg.Store.DialTimeout,
		ReadTimeout: 2 * time.Minute,
		Settings:    clickhouse.Settings{"allow_experimental_low_cardinality_type": 1},
	})
	if err != nil {
		return fmt.Errorf("loadtest: counting rows: %w", err)
	}
	defer conn.Close()
	db := r.cfg.Store.Database
	for attempt := 1; ; attempt++ {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		err = conn.QueryRow(ctx, "SELECT "+distinctIDs+", count() FROM "+db+".events").Scan(&res.RowsDistinct, &res.Rows)
		if err == nil {
			err = conn.QueryRow(ctx, "SELECT count() FROM "+db+".alerts").Scan(&res.AlertRows)
		}
		cancel()
		if err == nil || attempt == 3 {
			break
		}
		r.log.Warn("counting rows, retrying", logfields.Attempt, attempt, logfields.Err, err)
		time.Sleep(2 * time.Second)
	}
	if err != nil {
		return fmt.Errorf("loadtest: counting rows: %w", err)
	}
	return nil
}
