package main

import (
	"log/slog"
	"os"
	"runtime/debug"

	"github.com/containsec/contain/internal/logfields"
)

// applyMemoryLimit sets the Go runtime's soft memory limit to 80% of
// memory.limit_mb (GOMEMLIMIT, when set, wins). The garbage collector then
// works harder as the heap nears it, which returns the embedded
// JetStream's pooled block buffers and the store's spent insert buffers
// instead of letting the heap double first.
func applyMemoryLimit(c MemoryConfig, log *slog.Logger) {
	applyGCPercent(c, log)
	if os.Getenv("GOMEMLIMIT") != "" {
		log.Info("memory limit from GOMEMLIMIT", logfields.Gomemlimit, os.Getenv("GOMEMLIMIT"))
		return
	}
	if c.LimitMB <= 0 {
		return
	}
	soft := int64(c.LimitMB) << 20 * 8 / 10
	debug.SetMemoryLimit(soft)
	log.Info("memory limit", logfields.LimitMb, c.LimitMB, logfields.GoSoftLimitMb, soft>>20)
}

// applyGCPercent sets the collector's target from memory.gc_percent
// unless GOGC is set (which the runtime has already applied).
func applyGCPercent(c MemoryConfig, log *slog.Logger) {
	if v := os.Getenv("GOGC"); v != "" {
		log.Info("gc target from GOGC", logfields.Gogc, v)
		return
	}
	if c.GCPercent == 0 || c.GCPercent == 100 {
		return
	}
	debug.SetGCPercent(c.GCPercent)
	log.Info("gc target", logfields.GCPercent, c.GCPercent)
}
