package main

import (
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strings"
	"testing"

	"github.com/containsec/contain/internal/testenv"
)

// memory.gc_percent reaches the runtime's collector, and GOGC wins over it.
func TestGCPercentApplied(t *testing.T) {
	prev := debug.SetGCPercent(100)
	t.Cleanup(func() { debug.SetGCPercent(prev) })
	t.Setenv("GOGC", "")
	os.Unsetenv("GOGC")
	applyGCPercent(MemoryConfig{LimitMB: 256, GCPercent: 400}, testenv.Discard())
	if got := debug.SetGCPercent(100); got != 400 {
		t.Fatalf("gc_percent 400: the runtime's target is %d", got)
	}
	t.Setenv("GOGC", "150")
	applyGCPercent(MemoryConfig{LimitMB: 256, GCPercent: 400}, testenv.Discard())
	if got := debug.SetGCPercent(100); got != 100 {
		t.Fatalf("with GOGC set, gc_percent changed the target to %d", got)
	}
}

// A gc_percent the runtime would misread is refused, naming the key.
func TestGCPercentValidated(t *testing.T) {
	dir := t.TempDir()
	for body, ok := range map[string]bool{
		"memory:\n  gc_percent: 0\n":                 false,
		"memory:\n  gc_percent: -5\n":                false,
		"memory:\n  gc_percent: -1\n  limit_mb: 0\n": false,
		"memory:\n  gc_percent: -1\n":                true,
		"memory:\n  gc_percent: 400\n":               true,
	} {
		f := filepath.Join(dir, "c.yaml")
		os.WriteFile(f, []byte(body), 0o644)
		_, err := runCLI(t, "check-config", "-c", f)
		if ok && err != nil {
			t.Errorf("%q refused: %v", body, err)
		}
		if !ok && (err == nil || !strings.Contains(err.Error(), "memory.gc_percent")) {
			t.Errorf("%q: error %v, want one naming memory.gc_percent", body, err)
		}
	}
}

// runtime.max_procs reaches the runtime, GOMAXPROCS wins over it, and 0
// leaves Go's default.
func TestMaxProcsApplied(t *testing.T) {
	prev := runtime.GOMAXPROCS(0)
	t.Cleanup(func() { runtime.GOMAXPROCS(prev) })
	os.Unsetenv("GOMAXPROCS")
	want := prev + 1
	applyMaxProcs(RuntimeConfig{MaxProcs: want}, testenv.Discard())
	if got := runtime.GOMAXPROCS(0); got != want {
		t.Fatalf("max_procs %d: GOMAXPROCS is %d", want, got)
	}
	applyMaxProcs(RuntimeConfig{}, testenv.Discard())
	if got := runtime.GOMAXPROCS(0); got != want {
		t.Fatalf("max_procs 0 changed GOMAXPROCS to %d", got)
	}
	t.Setenv("GOMAXPROCS", "3")
	applyMaxProcs(RuntimeConfig{MaxProcs: 1}, testenv.Discard())
	if got := runtime.GOMAXPROCS(0); got != want {
		t.Fatalf("with GOMAXPROCS set, max_procs changed it to %d", got)
	}
}

// A negative max_procs is refused, naming the key; the environment
// reaches it as for every key.
func TestMaxProcsValidated(t *testing.T) {
	f := filepath.Join(t.TempDir(), "c.yaml")
	os.WriteFile(f, []byte("runtime:\n  max_procs: -1\n"), 0o644)
	if _, err := runCLI(t, "check-config", "-c", f); err == nil || !strings.Contains(err.Error(), "runtime.max_procs") {
		t.Fatalf("max_procs -1: error %v, want one naming runtime.max_procs", err)
	}
	os.WriteFile(f, []byte("runtime:\n  max_procs: 1\n"), 0o644)
	if _, err := runCLI(t, "check-config", "-c", f); err != nil {
		t.Fatalf("max_procs 1 refused: %v", err)
	}
	t.Setenv("CONTAIN_RUNTIME_MAX_PROCS", "-2")
	if _, err := runCLI(t, "check-config", "-c", f); err == nil || !strings.Contains(err.Error(), "runtime.max_procs") {
		t.Fatalf("CONTAIN_RUNTIME_MAX_PROCS=-2: error %v, want one naming runtime.max_procs", err)
	}
}
