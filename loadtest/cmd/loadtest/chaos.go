package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"sort"
	"syscall"

	"github.com/containsec/contain/loadtest"
)

// runChaos runs a chaos run and prints its summary line; it returns the
// exit status: 0 clean, 1 lost, duplicated or over the bound, 2 the run
// could not be made.
func runChaos(cfg loadtest.ChaosConfig, logLevel string, verbose bool) int {
	var level slog.Level
	if err := level.UnmarshalText([]byte(logLevel)); err != nil {
		fmt.Fprintf(os.Stderr, "--log-level: %v\n", err)
		return 2
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	res, err := loadtest.RunChaos(ctx, cfg, log)
	if err != nil {
		fmt.Fprintf(os.Stderr, "loadtest: chaos: %v\n", err)
		if res == nil {
			return 2
		}
	}
	if verbose {
		printChaos(res)
	}
	fmt.Println(res.Line())
	if err := res.Check(); err != nil {
		fmt.Fprintf(os.Stderr, "FAIL: %v (logs in %s)\n", err, res.Dir)
		return 1
	}
	if err != nil {
		return 2
	}
	return 0
}

// printChaos prints the faults, the counters and the processes' CPU.
func printChaos(r *loadtest.ChaosResult) {
	for _, f := range r.FaultLog {
		fmt.Println("fault", f)
	}
	keys := make([]string, 0, len(r.Counters))
	for k := range r.Counters {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Printf("counter %s %.0f\n", k, r.Counters[k])
	}
	for name, cpu := range r.StageCPU {
		fmt.Printf("cpu %s %v\n", name, cpu.Round(1e7))
	}
	fmt.Printf("setup=%v publish=%v drain=%v\n", r.Setup.Round(1e8), r.Publish.Round(1e8), r.Drain.Round(1e8))
	fmt.Printf("rows=%d poison=%d refused_batches=%d self_exits=%v drain_timed_out=%v elapsed=%v max_rss_by=%s\n",
		r.Rows, r.Poison, r.Refused, r.SelfExits, r.DrainTimedOut, r.Elapsed.Round(1e9), r.MaxRSSBy)
}
