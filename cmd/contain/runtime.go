package main

import (
	"log/slog"
	"os"
	"runtime"

	"github.com/containsec/contain/internal/logfields"
)

// applyMaxProcs sets GOMAXPROCS from runtime.max_procs unless the
// GOMAXPROCS variable is set (which the runtime has already applied) or
// the key is 0 (Go's default: cores, or the container's CPU limit).
func applyMaxProcs(c RuntimeConfig, log *slog.Logger) {
	if v := os.Getenv("GOMAXPROCS"); v != "" {
		log.Info("threads from GOMAXPROCS", logfields.Gomaxprocs, v)
		return
	}
	if c.MaxProcs <= 0 {
		return
	}
	runtime.GOMAXPROCS(c.MaxProcs)
	log.Info("threads running Go code", logfields.MaxProcs, c.MaxProcs)
}
