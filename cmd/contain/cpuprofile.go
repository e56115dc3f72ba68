package main

import (
	"fmt"
	"os"
	"runtime/pprof"
)

// cpuProfileEnv names a file that receives a CPU profile of the whole
// process, from start to exit (SIGTERM included): a diagnostic for the
// fleet load test's stage processes (docs/scaling.md), not a setting.
const cpuProfileEnv = "CONTAIN_CPU_PROFILE"

// startCPUProfile starts the profile cpuProfileEnv asks for; the returned
// func stops it.
func startCPUProfile() func() {
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
	return func() { pprof.StopCPUProfile(); f.Close() }
}
