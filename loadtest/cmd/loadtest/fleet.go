package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/containsec/contain/loadtest"
)

// fleetFlags are the fleet mode's own flags (--nats-cluster turns it on).
type fleetFlags struct {
	natsNodes, analyzers, partitions, responderHosts *int
	containersPerHost                                *int
	killAnalyzerAt, ackWait                          *time.Duration
	dir, containBin, profileDir, stageEnv            *string
	gcPercent, maxProcs                              *int
	maxCPU                                           *float64
}

func addFleetFlags() fleetFlags {
	d := loadtest.DefaultFleetConfig()
	return fleetFlags{
		natsNodes:         flag.Int("nats-cluster", 0, "fleet mode: run each stage as a process on a cluster of this many nats-server processes (docs/scaling.md)"),
		analyzers:         flag.Int("analyzers", d.Analyzers, "fleet: analyzer processes"),
		partitions:        flag.Int("partitions", d.Partitions, "fleet: analyzer.partitions (1: the analyzers share one durable)"),
		responderHosts:    flag.Int("responder-hosts", d.ResponderHosts, "fleet: hosts (the first ones) with a dry-run responder, on which actions are timed"),
		containersPerHost: flag.Int("containers-per-host", 0, "containers per host (same as --containers)"),
		killAnalyzerAt:    flag.Duration("kill-analyzer-at", 0, "fleet: SIGKILL the first analyzer this long after the generator started (0: none)"),
		ackWait:           flag.Duration("analyzer-ack-wait", d.AnalyzerAckWait, "fleet: analyzer.ack_wait (how long a killed analyzer's batches wait for redelivery)"),
		dir:               flag.String("fleet-dir", "", "fleet: directory for the binary, NATS stores and logs (default: temporary)"),
		profileDir:        flag.String("stage-cpuprofile-dir", "", "fleet: write each stage process's CPU profile to <dir>/<name>.cpu.prof"),
		containBin:        flag.String("contain-bin", "", "fleet: a built cmd/contain (default: built into the run's directory)"),
		gcPercent:         flag.Int("stage-gc-percent", d.GCPercent, "fleet: each stage process's memory.gc_percent (0: contain's default, 100; -1: collect only at the soft limit)"),
		maxProcs:          flag.Int("stage-max-procs", d.MaxProcs, "fleet: each stage process's runtime.max_procs (GOMAXPROCS; 0: Go's default, the machine's cores)"),
		maxCPU:            flag.Float64("max-cpu-us-per-event", 0, "fleet: exit 1 when enricher + analyzers + store cost more µs of CPU per event (issue 15: 5; 0: not checked)"),
		stageEnv:          flag.String("stage-env", "", "fleet: KEY=VALUE,… added to every stage process's environment (e.g. CONTAIN_ANALYZER_FETCH=64)"),
	}
}

// fleetConfig is the fleet run of the flags: the fleet defaults, but for
// the generator flags given.
func (ff fleetFlags) config(g loadtest.GeneratorConfig, set map[string]bool, clickhouse []string, database string, keep bool,
	learning, drain time.Duration, memLimitMB int) loadtest.FleetConfig {
	c := loadtest.DefaultFleetConfig()
	fg := &c.Generator
	for name, apply := range map[string]func(){
		"hosts": func() { fg.Hosts = g.Hosts }, "containers": func() { fg.ContainersPerHost = g.ContainersPerHost },
		"images": func() { fg.Images = g.Images }, "rate": func() { fg.Rate = g.Rate },
		"events": func() { fg.MaxEvents = g.MaxEvents }, "duration": func() { fg.Duration = g.Duration },
		"batch": func() { fg.BatchMaxEvents = g.BatchMaxEvents }, "flush": func() { fg.FlushInterval = g.FlushInterval },
		"max-flush": func() { fg.MaxFlushInterval = g.MaxFlushInterval }, "batch-rate": func() { fg.TargetBatchRate = g.TargetBatchRate },
		"deviations":           func() { fg.DeviationFraction = g.DeviationFraction },
		"container-dictionary": func() { fg.ContainerDictionary = g.ContainerDictionary },
	} {
		if set[name] {
			apply()
		}
	}
	if *ff.containersPerHost > 0 {
		fg.ContainersPerHost = *ff.containersPerHost
	}
	if set["learning"] {
		c.LearningWindow = learning
	}
	fg.DeviateAfter = c.LearningWindow + 2*time.Second
	if set["database"] {
		c.Database = database
	}
	if set["drain-timeout"] {
		c.DrainTimeout = drain
	}
	if memLimitMB > 0 {
		c.MemoryLimitMB = memLimitMB
	}
	c.NATSNodes, c.Analyzers, c.Partitions, c.ResponderHosts = *ff.natsNodes, *ff.analyzers, *ff.partitions, *ff.responderHosts
	c.KillAnalyzerAt, c.AnalyzerAckWait = *ff.killAnalyzerAt, *ff.ackWait
	c.ClickHouse, c.KeepDatabase, c.Dir, c.ContainBin = clickhouse, keep, *ff.dir, *ff.containBin
	c.ProfileDir = *ff.profileDir
	c.GCPercent, c.MaxProcs, c.MaxStageCPUPerEvent = *ff.gcPercent, *ff.maxProcs, *ff.maxCPU
	if *ff.stageEnv != "" {
		c.StageEnv = strings.Split(*ff.stageEnv, ",")
	}
	return c
}

// runFleet runs a fleet run and prints its details and its line; it
// returns the exit status: 0 clean, 1 an attack missed or anything
// dropped, 2 the run could not be made.
func runFleet(cfg loadtest.FleetConfig, logLevel string) int {
	var level slog.Level
	if err := level.UnmarshalText([]byte(logLevel)); err != nil {
		fmt.Fprintf(os.Stderr, "--log-level: %v\n", err)
		return 2
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	res, err := loadtest.RunFleet(ctx, cfg, log)
	if res != nil {
		res.Print(os.Stdout)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "loadtest: fleet: %v\n", err)
		return 2
	}
	if err := res.Check(); err != nil {
		fmt.Fprintf(os.Stderr, "FAIL: %v\n", err)
		return 1
	}
	return 0
}
