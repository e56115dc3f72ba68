package main

import (
	"os"
	"path/filepath"
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
