// Command loadtest runs contain's stages in-process against an embedded
// NATS and a real ClickHouse, feeds them generated collector batches and
// prints what it measured. It exits 1 when an event was lost or dropped,
// 2 when the run could not be made.
//
//	go run ./loadtest/cmd/loadtest --rate 20000 --duration 30s
//
// With --chaos it runs the stages as separate `contain` processes on a
// nats-server process and injects faults on a schedule
// (docs/design/012-chaos.md); it prints one summary line and exits 1 when
// an event was lost, a row duplicated or a stage's RSS over the bound:
//
//	go run ./loadtest/cmd/loadtest --chaos --duration 10m --rate 5000
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"runtime/pprof"
	"strings"
	"syscall"
	"time"

	"github.com/containsec/contain/loadtest"
)

func main() {
	cfg := loadtest.DefaultConfig()
	g := &cfg.Generator
	var (
		clickhouse = flag.String("clickhouse", envOr("CONTAIN_TEST_CLICKHOUSE", "127.0.0.1:19000"), "ClickHouse native address(es), comma separated (env CONTAIN_TEST_CLICKHOUSE)")
		logLevel   = flag.String("log-level", "warn", "stage log level: debug|info|warn|error")
		memProfile = flag.String("memprofile", "", "write the heap profile nearest the run's peak heap to this file")
		memTrace   = flag.String("memtrace", "", "write RSS, live heap and the runtime's memory classes once a second to this file")
		cpuProfile = flag.String("cpuprofile", "", "write a CPU profile of the whole run (stages, NATS, generator) to this file")
		memLimitMB = flag.Int("memory-limit-mb", 256, "memory bound in MiB, applied as contain run applies memory.limit_mb (Go soft limit at 80%); 0: none")
		maxRSSMB   = flag.Int("max-rss-mb", 0, "fail the run (exit 1) when this process's peak RSS passes this many MiB; 0: no check")
	)
	flag.IntVar(&g.Hosts, "hosts", g.Hosts, "simulated hosts (one collector each)")
	flag.IntVar(&g.ContainersPerHost, "containers", g.ContainersPerHost, "containers per host")
	flag.IntVar(&g.Images, "images", g.Images, "distinct images")
	flag.Float64Var(&g.Rate, "rate", g.Rate, "target events/s over all hosts; 0 = as fast as possible")
	flag.Int64Var(&g.MaxEvents, "events", g.MaxEvents, "stop after this many events (0: --duration only)")
	flag.DurationVar(&g.Duration, "duration", g.Duration, "stop publishing after this long (0: --events only)")
	flag.IntVar(&g.BatchMaxEvents, "batch", g.BatchMaxEvents, "max events per batch (collector.batch_max_events)")
	flag.DurationVar(&g.FlushInterval, "flush", g.FlushInterval, "batch flush interval (collector.flush_interval)")
	flag.DurationVar(&g.MaxFlushInterval, "max-flush", g.MaxFlushInterval, "longest flush interval while a host's events come faster than --batch-rate (collector.max_flush_interval; 0: always --flush; fleet default 1s)")
	flag.BoolVar(&g.ContainerDictionary, "container-dictionary", g.ContainerDictionary, "raw batches with a container dictionary when smaller (collector.container_dictionary)")
	flag.Float64Var(&g.TargetBatchRate, "batch-rate", g.TargetBatchRate, "batches per second per host the flush interval stretches to (collector.target_batch_rate; fleet default 1)")
	flag.Float64Var(&g.DeviationFraction, "deviations", g.DeviationFraction, "fraction of events after learning that deviate")
	flag.DurationVar(&cfg.Analyzer.LearningWindow, "learning", cfg.Analyzer.LearningWindow, "analyzer learning window (deviations start 2s after it)")
	flag.StringVar(&cfg.Store.Database, "database", cfg.Store.Database, "ClickHouse database (created; dropped unless --keep)")
	flag.BoolVar(&cfg.KeepDatabase, "keep", false, "keep the ClickHouse database")
	flag.IntVar(&cfg.Store.FetchMessages, "store-fetch", cfg.Store.FetchMessages, "store.fetch_messages")
	flag.DurationVar(&cfg.Store.InsertMaxAge, "store-insert-max-age", cfg.Store.InsertMaxAge, "store.insert_max_age")
	flag.DurationVar(&cfg.Store.AlertsInsertMaxAge, "store-alerts-insert-max-age", cfg.Store.AlertsInsertMaxAge, "store.alerts_insert_max_age")
	flag.IntVar(&cfg.Store.InsertMaxBytes, "store-insert-max-bytes", cfg.Store.InsertMaxBytes, "store.insert_max_bytes")
	flag.IntVar(&cfg.Enricher.Fetch, "enricher-fetch", cfg.Enricher.Fetch, "enricher.fetch")
	flag.IntVar(&cfg.Analyzer.Fetch, "analyzer-fetch", cfg.Analyzer.Fetch, "analyzer.fetch")
	flag.DurationVar(&cfg.DrainTimeout, "drain-timeout", cfg.DrainTimeout, "max wait for the stages to catch up after publishing")
	flag.Int64Var(&cfg.Streams.MaxBytes, "stream-max-bytes", cfg.Streams.MaxBytes, "nats.streams.max_bytes of every stream (0: unbounded)")
	var (
		chaos        = flag.Bool("chaos", false, "run the stages as processes and inject faults (docs/design/012-chaos.md)")
		faultEvery   = flag.Duration("fault-every", 20*time.Second, "chaos: period of the faults")
		faults       = flag.String("faults", strings.Join(loadtest.AllFaults, ","), "chaos: fault kinds, taken in turn")
		chDown       = flag.Duration("clickhouse-down", 2*time.Minute, "chaos: how long a clickhouse-down fault lasts")
		chaosDir     = flag.String("chaos-dir", "", "chaos: directory for binaries, credentials, logs and JetStream (default: temporary, kept on failure)")
		chaosVerbose = flag.Bool("v", false, "chaos: print the faults, counters and CPU per process before the summary")
	)
	ff := addFleetFlags()
	flag.Parse()
	set := map[string]bool{}
	flag.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if *ff.natsNodes > 0 {
		os.Exit(runFleet(ff.config(*g, set, strings.Split(*clickhouse, ","), cfg.Store.Database, cfg.KeepDatabase,
			cfg.Analyzer.LearningWindow, cfg.DrainTimeout, *memLimitMB), *logLevel))
	}
	if *ff.containersPerHost > 0 {
		g.ContainersPerHost = *ff.containersPerHost
	}
	if *chaos {
		ccfg := loadtest.DefaultChaosConfig()
		// The chaos run's own defaults, but for the generator flags given.
		if set["rate"] {
			ccfg.Generator.Rate = g.Rate
		}
		if set["duration"] {
			ccfg.Generator.Duration = g.Duration
		}
		if set["hosts"] {
			ccfg.Generator.Hosts = g.Hosts
		}
		ccfg.ClickHouse = strings.Split(*clickhouse, ",")
		ccfg.FaultEvery, ccfg.ClickHouseDown, ccfg.Dir = *faultEvery, *chDown, *chaosDir
		ccfg.Faults = strings.Split(*faults, ",")
		ccfg.KeepDatabase = cfg.KeepDatabase
		if *memLimitMB > 0 {
			ccfg.MemoryLimitMB = *memLimitMB
		}
		os.Exit(runChaos(ccfg, *logLevel, *chaosVerbose))
	}
	if *memLimitMB > 0 {
		debug.SetMemoryLimit(int64(*memLimitMB) << 20 * 8 / 10)
	}
	cfg.MaxRSS = uint64(max(*maxRSSMB, 0)) << 20
	g.DeviateAfter = cfg.Analyzer.LearningWindow + 2*time.Second
	cfg.Store.Addr = strings.Split(*clickhouse, ",")

	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		fmt.Fprintf(os.Stderr, "--log-level: %v\n", err)
		os.Exit(2)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if *memProfile != "" {
		go profilePeakHeap(ctx, *memProfile)
	}
	if *memTrace != "" {
		go traceMemory(ctx, *memTrace)
	}
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			fmt.Fprintf(os.Stderr, "--cpuprofile: %v\n", err)
			os.Exit(2)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			fmt.Fprintf(os.Stderr, "--cpuprofile: %v\n", err)
			os.Exit(2)
		}
		defer f.Close()
	}
	res, err := loadtest.Run(ctx, cfg, log)
	if *cpuProfile != "" {
		pprof.StopCPUProfile()
	}
	if res != nil {
		res.Print(os.Stdout)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "loadtest: %v\n", err)
		os.Exit(2)
	}
	if res.Check() != nil {
		os.Exit(1)
	}
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}
