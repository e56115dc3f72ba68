package main

import (
	"context"
	"fmt"
	"os"
	"runtime/pprof"
	"sync"
)

// cpuProfileEnv names a file that receives a CPU profile of the process,
// from start to its stop signal (SIGTERM, interrupt): a diagnostic for the
// fleet load test's stage processes (docs/scaling.md), not a setting. The
// profile is written when the signal comes, before the graceful shutdown:
// a stage killed after its grace period (the store still flushing) still
// leaves a whole profile.
const cpuProfileEnv = "CONTAIN_CPU_PROFILE"

// startCPUProfile starts the profile cpuProfileEnv asks for, stopped when
// ctx ends (the stop signal) or the returned func is called, whichever
// comes first.
func startCPUProfile(ctx context.Context) func() {
	path := os.Getenv(cpuProfileEnv)
	if path == "" {
		return func() {}
	}
	f, err := os.Create(path)
	if err != nil {
		fmt.Fprintf(os.Stderr, "contain: %s: %v\n", cpuProfileEnv, err)
		return func() {}
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		fmt.Fprintf(os.Stderr, "contain: %s: %v\n", cpuProfileEnv, err)
		f.Close()
		return func() {}
	}
	var once sync.Once
	stop := func() { once.Do(func() { pprof.StopCPUProfile(); f.Close() }) }
	go func() { <-ctx.Done(); stop() }()
	return stop
}
