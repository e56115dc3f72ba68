package loadtest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/containsec/contain/internal/auth"
	"github.com/containsec/contain/internal/bus"
	"github.com/containsec/contain/internal/logfields"
	"github.com/containsec/contain/schemas/containv1"
)

// ChaosConfig configures a chaos run (docs/design/012-chaos.md): the
// stages as separate `contain` processes on a nats-server process, fed by
// the generator as the hosts' collectors, with faults injected on a
// schedule.
type ChaosConfig struct {
	Generator GeneratorConfig
	// ClickHouse is the real server's native address(es); the store
	// reaches them through a proxy the run can cut.
	ClickHouse []string
	// Database is created by the store and dropped at the end unless
	// KeepDatabase.
	Database     string
	KeepDatabase bool
	// FaultEvery is the period of the faults; Faults their kinds, taken in
	// turn (default AllFaults).
	FaultEvery time.Duration
	Faults     []string
	// ClickHouseDown is how long a clickhouse-down fault keeps the store
	// from ClickHouse (other faults go on meanwhile); DiskFullFor how long
	// the JetStream file system stays full; RestartAfter how long a killed
	// stage stays down.
	ClickHouseDown time.Duration
	DiskFullFor    time.Duration
	RestartAfter   time.Duration
	// OversizeEvents is the size of the oversize fault's accepted batch
	// (a second one, over the server's max_payload, is refused).
	OversizeEvents int
	// StoreTmpfsMB is the size of the tmpfs holding JetStream's store (0:
	// a plain directory, no disk-full fault); StreamMaxBytes bounds each
	// stream (nats.streams.max_bytes).
	StoreTmpfsMB   int
	StreamMaxBytes int64
	// MemoryLimitMB is each stage's memory.limit_mb and the RSS bound the
	// run checks.
	MemoryLimitMB int
	// LearningWindow is the analyzer's.
	LearningWindow time.Duration
	// DrainTimeout bounds the wait, after the generator stopped, for every
	// consumer to catch up and the rows to stop growing.
	DrainTimeout time.Duration
	// StageEnv is added to every stage's environment (CONTAIN_* keys,
	// e.g. shorter ack waits).
	StageEnv []string
	// Dir holds the binaries, credentials, logs and the JetStream store;
	// empty: a temporary directory, removed unless the run failed.
	Dir string
}

// Fault kinds.
const (
	FaultPoison         = "poison"
	FaultKillEnricher   = "kill-enricher"
	FaultClickHouseDown = "clickhouse-down"
	FaultKillStore      = "kill-store"
	FaultRestartNATS    = "restart-nats"
	FaultKillAnalyzer   = "kill-analyzer"
	FaultDiskFull       = "disk-full"
	FaultKillResponder  = "kill-responder"
	FaultOversize       = "oversize"
)

// AllFaults is every fault kind in the order they are taken.
var AllFaults = []string{FaultPoison, FaultKillEnricher, FaultClickHouseDown, FaultKillStore, FaultRestartNATS,
	FaultKillAnalyzer, FaultDiskFull, FaultKillResponder, FaultOversize}

// DefaultChaosConfig is 2 hosts × 10 containers at 5,000 events/s for 10
// minutes, a fault every 20 s, ClickHouse down for 2 minutes at a time.
func DefaultChaosConfig() ChaosConfig {
	g := DefaultGeneratorConfig()
	g.Hosts, g.ContainersPerHost, g.Images = 2, 10, 4
	g.Rate, g.Duration = 5000, 10*time.Minute
	g.HostPrefix = "chaos"
	g.DeviateAfter = 5 * time.Second
	g.DeviationFraction = 0.0002
	g.ProbeEvery = 0
	// A batch must land whatever the fault: the stand-in collector
	// retries it (same Nats-Msg-Id) through NATS restarts and a full disk.
	g.PublishTimeout = 5 * time.Minute
	return ChaosConfig{
		Generator:      g,
		ClickHouse:     []string{"127.0.0.1:19000"},
		Database:       fmt.Sprintf("contain_chaos_%d", time.Now().Unix()),
		FaultEvery:     20 * time.Second,
		Faults:         AllFaults,
		ClickHouseDown: 2 * time.Minute,
		DiskFullFor:    5 * time.Second,
		RestartAfter:   time.Second,
		OversizeEvents: 20_000,
		StoreTmpfsMB:   1536,
		StreamMaxBytes: 256 << 20,
		MemoryLimitMB:  256,
		LearningWindow: 3 * time.Second,
		DrainTimeout:   5 * time.Minute,
	}
}

// Validate reports the first invalid field.
func (c ChaosConfig) Validate() error {
	if err := c.Generator.Validate(); err != nil {
		return err
	}
	switch {
	case len(c.ClickHouse) == 0:
		return errors.New("chaos.clickhouse: must be set")
	case c.Database == "":
		return errors.New("chaos.database: must be set")
	case c.FaultEvery <= 0:
		return errors.New("chaos.fault_every: must be > 0")
	case c.MemoryLimitMB < 64:
		return errors.New("chaos.memory_limit_mb: must be >= 64")
	case c.DrainTimeout <= 0:
		return errors.New("chaos.drain_timeout: must be > 0")
	}
	for _, f := range c.Faults {
		found := false
		for _, k := range AllFaults {
			found = found || f == k
		}
		if !found {
			return fmt.Errorf("chaos.faults: unknown fault %q (have %s)", f, strings.Join(AllFaults, ", "))
		}
	}
	return nil
}

// ChaosResult is what a chaos run counted.
type ChaosResult struct {
	// Published events (acknowledged by JetStream).
	Published int64
	// Stored is the distinct event ids in ClickHouse, Rows all the rows:
	// DupRows = Rows - Stored.
	Stored, Rows, DupRows int64
	// CountedDropped: events the enricher or store dropped and counted
	// (contain_dropped_total, queue_full|publish_failed|oversize).
	CountedDropped int64
	// Expired: messages of CONTAIN_RAW (enricher) and CONTAIN_EVENTS
	// (store) removed before they were read (contain_expired_total).
	Expired int64
	// DeadLettered: events in CONTAIN_DLQ from the enricher or the store
	// and not stored.
	DeadLettered int64
	// Lost = Published - (Stored + CountedDropped + Expired + DeadLettered).
	Lost int64
	// Faults injected, and what each did.
	Faults   int
	FaultLog []string
	// MaxRSSMB is the highest RSS of any stage process, MaxRSSBy names it.
	MaxRSSMB  float64
	MaxRSSBy  string
	RSSBound  float64
	StageCPU  map[string]time.Duration
	SelfExits map[string]int // stage processes that exited by themselves (restarted)
	// Poison messages published; Refused events in batches the server
	// refused (over max_payload): neither counts as published.
	Poison, Refused int64
	// Malformed and DeadLetteredMsgs are the stages' counts of bad
	// messages and dead letters (all stages).
	Counters      map[string]float64
	DrainTimedOut bool
	// Setup (binaries, servers, stages up), Publish and Drain are the
	// phases of Elapsed.
	Setup, Publish, Drain time.Duration
	Elapsed               time.Duration
	Dir                   string
}

// Line is the one-line summary.
func (r *ChaosResult) Line() string {
	return fmt.Sprintf("published=%d stored=%d counted_dropped=%d expired=%d dead_lettered=%d dup_rows=%d lost=%d faults=%d max_rss_mb=%.0f",
		r.Published, r.Stored, r.CountedDropped, r.Expired, r.DeadLettered, r.DupRows, r.Lost, r.Faults, r.MaxRSSMB)
}

// Check fails when an event was lost, a row duplicated or a stage's RSS
// went over the bound.
func (r *ChaosResult) Check() error {
	var errs []error
	if r.Lost > 0 {
		errs = append(errs, fmt.Errorf("%d events lost (published %d, accounted for %d)", r.Lost, r.Published, r.Published-r.Lost))
	}
	if r.DupRows > 0 {
		errs = append(errs, fmt.Errorf("%d duplicate rows", r.DupRows))
	}
	if r.RSSBound > 0 && r.MaxRSSMB > r.RSSBound {
		errs = append(errs, fmt.Errorf("%s RSS %.0f MB over the bound %.0f MB", r.MaxRSSBy, r.MaxRSSMB, r.RSSBound))
	}
	if r.Published == 0 {
		errs = append(errs, errors.New("nothing was published"))
	}
	return errors.Join(errs...)
}

// distinctIDs counts the distinct event ids of a query. Not
// uniqExact(event_id): on ClickHouse 18.16 it did not finish in 30 minutes
// over 1.9M rows of contain's ids (UUID keys of the exact set), while over
// their text it takes 2 s (docs/design/012-chaos.md).
const distinctIDs = "uniqExact(toString(event_id))"

// chaosRun is the state of one run.
type chaosRun struct {
	cfg      ChaosConfig
	log      *slog.Logger
	dir      string
	credsDir string
	bin      string
	nats     *natsProc
	proxy    *tcpProxy
	stages   []*stageProc
	gen      *Generator
	hosts    []string

	mu        sync.Mutex // held while a fault or the supervisor acts on processes
	chDown    sync.WaitGroup
	faultLog  []string
	selfExits map[string]int
	poison    int64
	refused   int64
}

// RunChaos makes the environment, runs the generator with faults, waits
// for the stages to drain and counts. An error means the run could not be
// made; ChaosResult.Check says whether it lost anything.
func RunChaos(ctx context.Context, cfg ChaosConfig, log *slog.Logger) (res *ChaosResult, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	start := time.Now()
	r := &chaosRun{cfg: cfg, log: log, dir: cfg.Dir, selfExits: map[string]int{}}
	if r.dir == "" {
		if r.dir, err = os.MkdirTemp("", "contain-chaos-"); err != nil {
			return nil, fmt.Errorf("chaos: %w", err)
		}
		defer func() {
			if err == nil && res != nil && res.Check() == nil {
				os.RemoveAll(r.dir)
			}
		}()
	}
	r.credsDir = filepath.Join(r.dir, "creds")
	for i := range cfg.Generator.Hosts {
		r.hosts = append(r.hosts, cfg.Generator.HostName(i))
	}
	natsBin, err := natsServerBinary(ctx)
	if err != nil {
		return nil, err
	}
	if r.bin, err = BuildGo(ctx, containPkg, r.dir); err != nil {
		return nil, err
	}
	if r.nats, err = startNATS(ctx, natsBin, r.dir, r.credsDir, r.hosts, cfg.StoreTmpfsMB, log); err != nil {
		return nil, err
	}
	defer r.nats.close()
	adminNC, adminJS, err := r.waitNATS(ctx)
	if err != nil {
		return nil, err
	}
	defer adminNC.Close()
	if err := bus.EnsureStreams(ctx, adminJS, bus.StreamsConfig{EventsMaxAge: 24 * time.Hour, AlertsMaxAge: 24 * time.Hour,
		Replicas: 1, MaxBytes: cfg.StreamMaxBytes}); err != nil {
		return nil, err
	}
	if r.proxy, err = startProxy(cfg.ClickHouse[0]); err != nil {
		return nil, err
	}
	defer r.proxy.Close()
	ch, err := clickhouse.Open(&clickhouse.Options{Addr: cfg.ClickHouse, DialTimeout: 5 * time.Second, ReadTimeout: 2 * time.Minute,
		Settings: clickhouse.Settings{"allow_experimental_low_cardinality_type": 1}})
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
	if err := r.startStages(); err != nil {
		return nil, err
	}
	defer func() { // all at once: each may take its grace
		var wg sync.WaitGroup
		for _, s := range r.stages {
			wg.Add(1)
			go func() { defer wg.Done(); s.Stop(5 * time.Second) }()
		}
		wg.Wait()
	}()
	// The stages are up when the store created its tables.
	if err := waitFor(ctx, 2*time.Minute, "the store's tables", func() error {
		var n uint64
		if err := ch.QueryRow(ctx, "SELECT count() FROM system.tables WHERE database = ? AND name = 'events'", cfg.Database).Scan(&n); err != nil {
			return err
		}
		if n == 0 {
			return errors.New("no events table yet")
		}
		return nil
	}); err != nil {
		return nil, err
	}

	// The generator publishes as each host's collector.
	r.gen, err = NewGenerator(cfg.Generator, adminJS, nil)
	if err != nil {
		return nil, err
	}
	for i, h := range r.hosts {
		_, js, err := connectAs(r.nats.url, r.credsDir, auth.UserName(auth.RoleCollector, h), log)
		if err != nil {
			return nil, err
		}
		r.gen.PublishAs(i, js)
	}
	setup := time.Since(start)
	sctx, stopSupervising := context.WithCancel(ctx)
	defer stopSupervising()
	go r.supervise(sctx)
	fctx, stopFaults := context.WithCancel(ctx)
	faultsDone := make(chan int)
	go func() { faultsDone <- r.faults(fctx) }()
	stats, genErr := r.gen.Run(ctx)
	stopFaults()
	nFaults := <-faultsDone
	r.chDown.Wait()
	if genErr != nil {
		return nil, fmt.Errorf("chaos: generator: %w", genErr)
	}
	res = &ChaosResult{Published: stats.Events, Faults: nFaults, RSSBound: float64(cfg.MemoryLimitMB), Dir: r.dir,
		Setup: setup, Publish: time.Since(start) - setup}
	drainStart := time.Now()
	res.DrainTimedOut = r.drain(ctx, adminJS, ch, stats.Events) != nil
	res.Drain = time.Since(drainStart)
	stopSupervising()
	if err := r.count(ctx, adminJS, ch, res); err != nil {
		return res, err
	}
	res.Elapsed = time.Since(start)
	return res, nil
}

// waitNATS waits until the server answers JetStream requests as admin.
func (r *chaosRun) waitNATS(ctx context.Context) (*nats.Conn, jetstream.JetStream, error) {
	var nc *nats.Conn
	var js jetstream.JetStream
	err := waitFor(ctx, 60*time.Second, "nats-server", func() error {
		c, j, err := connectAs(r.nats.url, r.credsDir, auth.RoleAdmin, r.log)
		if err != nil {
			return err
		}
		if _, err := j.AccountInfo(ctx); err != nil {
			c.Close()
			return err
		}
		nc, js = c, j
		return nil
	})
	return nc, js, err
}

// stageEnv is the environment of a stage process run as user.
func (r *chaosRun) stageEnv(user, host string, extra ...string) []string {
	empty := filepath.Join(r.dir, "empty.yaml")
	_ = os.WriteFile(empty, []byte("{}\n"), 0o644)
	return append([]string{
		"CONTAIN_CONFIG=" + empty,
		"CONTAIN_HOST=" + host,
		"CONTAIN_LOG_LEVEL=warn",
		"CONTAIN_NATS_URL=" + r.nats.url,
		"CONTAIN_NATS_NKEY_SEED=" + auth.SeedPath(r.credsDir, user),
		"CONTAIN_NATS_MANAGE_STREAMS=false",
		"CONTAIN_AUTH_CREDS_DIR=" + r.credsDir,
		fmt.Sprintf("CONTAIN_MEMORY_LIMIT_MB=%d", r.cfg.MemoryLimitMB),
	}, extra...)
}

// startStages starts enrich, analyze, store and one dry-run respond per
// host.
func (r *chaosRun) startStages() error {
	type spec struct {
		stage, name, cmd, user, host string
		env                          []string
	}
	specs := []spec{
		{"enricher", "enricher", "enrich", auth.RoleEnricher, "chaos", []string{
			"CONTAIN_ENRICHER_REGISTRY_ENABLED=false", "CONTAIN_ENRICHER_WORKERS=0"}},
		{"analyzer", "analyzer", "analyze", auth.RoleAnalyzer, "chaos", []string{
			"CONTAIN_ANALYZER_LEARNING_WINDOW=" + r.cfg.LearningWindow.String()}},
		{"store", "store", "store", auth.RoleStore, "chaos", []string{
			"CONTAIN_STORE_ADDR=" + r.proxy.Addr(), "CONTAIN_STORE_DATABASE=" + r.cfg.Database}},
	}
	for _, h := range r.hosts {
		specs = append(specs, spec{"responder", "responder-" + h, "respond", auth.UserName(auth.RoleResponder, h), h, []string{
			"CONTAIN_RESPONDER_DRY_RUN=true", "CONTAIN_RESPONDER_SNAPSHOT=false",
			"CONTAIN_RESPONDER_STATE_DIR=" + filepath.Join(r.dir, "responder-state")}})
	}
	for _, s := range specs {
		p, err := startStage(r.bin, r.dir, s.stage, s.name, s.cmd, r.stageEnv(s.user, s.host, append(s.env, r.cfg.StageEnv...)...))
		if err != nil {
			return err
		}
		r.stages = append(r.stages, p)
	}
	return nil
}

// stage is the first stage process named name.
func (r *chaosRun) stage(name string) *stageProc { return stageNamed(r.stages, name) }

// stageNamed is the first of stages named name, or nil.
func stageNamed(stages []*stageProc, name string) *stageProc {
	for _, s := range stages {
		if s.Name() == name {
			return s
		}
	}
	return nil
}

// supervise samples every process each second, scrapes the stages'
// counters and restarts a stage that exited by itself (as systemd would),
// counting it.
func (r *chaosRun) supervise(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			r.sampleAll(context.Background())
			return
		case <-t.C:
		}
		r.sampleAll(ctx)
		r.mu.Lock()
		for _, s := range r.stages {
			if !s.Running() {
				r.selfExits[s.Name()]++
				r.log.Warn("chaos: stage exited by itself; restarting", logfields.Stage, s.Name(), logfields.Err, s.ExitErr())
				if err := s.Restart(); err != nil {
					r.log.Error("chaos: restarting", logfields.Stage, s.Name(), logfields.Err, err)
				}
			}
		}
		r.mu.Unlock()
	}
}

func (r *chaosRun) sampleAll(ctx context.Context) {
	_, _ = r.nats.Sample()
	for _, s := range r.stages {
		if _, err := s.Sample(); err == nil {
			_ = s.scrape(ctx)
		}
	}
}

// drain waits until no consumer has anything pending and the stored count
// stopped moving (two polls 2 s apart), or DrainTimeout.
func (r *chaosRun) drain(ctx context.Context, js jetstream.JetStream, ch clickhouse.Conn, published int64) error {
	smp := newSampler(nil, js)
	deadline := time.Now().Add(r.cfg.DrainTimeout)
	var last uint64
	stable := 0
	for time.Now().Before(deadline) && ctx.Err() == nil {
		time.Sleep(2 * time.Second)
		pend, err := smp.pending(ctx)
		var n uint64
		qerr := ch.QueryRow(ctx, "SELECT "+distinctIDs+" FROM "+r.cfg.Database+".events").Scan(&n)
		if err != nil || qerr != nil || pend.total() > 0 || n != last {
			stable, last = 0, n
			continue
		}
		if stable++; stable >= 2 || int64(n) >= published {
			return nil
		}
	}
	r.log.Warn("chaos: drain timed out", logfields.Events, last)
	return errors.New("chaos: drain timed out")
}

// count fills res from ClickHouse, the DLQ and the stages' counters.
func (r *chaosRun) count(ctx context.Context, js jetstream.JetStream, ch clickhouse.Conn, res *ChaosResult) error {
	hosts := make([]string, len(r.hosts))
	for i, h := range r.hosts {
		hosts[i] = "'" + h + "'"
	}
	// A few attempts: a loaded ClickHouse may time a first one out.
	var distinct, rows uint64
	for attempt := 1; ; attempt++ {
		err := ch.QueryRow(ctx, fmt.Sprintf("SELECT %s, count() FROM %s.events WHERE host IN (%s)",
			distinctIDs, r.cfg.Database, strings.Join(hosts, ","))).Scan(&distinct, &rows)
		if err == nil {
			break
		}
		if attempt == 3 || ctx.Err() != nil {
			return fmt.Errorf("chaos: counting rows: %w", err)
		}
		r.log.Warn("chaos: counting rows, retrying", logfields.Attempt, attempt, logfields.Err, err)
	}
	res.Stored, res.Rows, res.DupRows = int64(distinct), int64(rows), int64(rows)-int64(distinct)
	dl, err := r.deadLettered(ctx, js, ch)
	if err != nil {
		return err
	}
	res.DeadLettered = dl
	res.Counters = map[string]float64{}
	res.StageCPU = map[string]time.Duration{}
	for _, s := range r.stages {
		cpu, rss := s.Totals()
		res.StageCPU[s.Name()] = cpu
		if mb := float64(rss) / (1 << 20); mb > res.MaxRSSMB {
			res.MaxRSSMB, res.MaxRSSBy = mb, s.Name()
		}
		for k, v := range s.counters() {
			res.Counters[k] += v
			switch {
			case strings.HasPrefix(k, "contain_dropped_total{"):
				st, reason := seriesLabel(k, "stage"), seriesLabel(k, "reason")
				if (st == "enricher" || st == "store") && (reason == "queue_full" || reason == "publish_failed" || reason == "oversize") {
					res.CountedDropped += int64(v)
				}
			case strings.HasPrefix(k, "contain_expired_total{"):
				stream, durable := seriesLabel(k, "stream"), seriesLabel(k, "durable")
				if stream == containv1.StreamRaw || (stream == containv1.StreamEvents && durable == "store-events") {
					res.Expired += int64(v)
				}
			}
		}
	}
	cpu, _ := r.nats.Totals()
	res.StageCPU["nats-server"] = cpu
	res.Lost = res.Published - (res.Stored + res.CountedDropped + res.Expired + res.DeadLettered)
	r.mu.Lock()
	res.FaultLog = append([]string(nil), r.faultLog...)
	res.SelfExits = r.selfExits
	res.Poison, res.Refused = r.poison, r.refused
	r.mu.Unlock()
	return nil
}

// deadLettered counts the events of the enricher's and the store's dead
// letters that are not in ClickHouse (a message that does not decode, the
// poison, holds no event).
func (r *chaosRun) deadLettered(ctx context.Context, js jetstream.JetStream, ch clickhouse.Conn) (int64, error) {
	s, err := js.Stream(ctx, bus.DLQStream)
	if err != nil {
		return 0, fmt.Errorf("chaos: dead letters: %w", err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		return 0, fmt.Errorf("chaos: dead letters: %w", err)
	}
	var ids []string
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		msg, err := s.GetMsg(ctx, seq)
		if err != nil {
			continue // deleted (replayed)
		}
		stage := msg.Header.Get(bus.HeaderDLQStage)
		if stage != "enricher" && stage != "store" {
			continue
		}
		bs, _ := bus.DecodeParts(msg.Data) // a dead-lettered fleet batch: its parts
		for _, b := range bs {
			for _, ev := range b.Events {
				if ev.GetAlert() == nil && ev.GetAction() == nil {
					ids = append(ids, "toUUID('"+containv1.FormatID(ev.Id)+"')")
				}
			}
		}
	}
	if len(ids) == 0 {
		return 0, nil
	}
	var stored uint64
	if err := ch.QueryRow(ctx, fmt.Sprintf("SELECT %s FROM %s.events WHERE event_id IN (%s)",
		distinctIDs, r.cfg.Database, strings.Join(ids, ","))).Scan(&stored); err != nil {
		return 0, fmt.Errorf("chaos: dead letters: %w", err)
	}
	return int64(len(ids)) - int64(stored), nil
}
