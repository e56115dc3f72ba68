package loadtest

import (
	"strings"
	"testing"
	"time"
)

// --max-cpu-us-per-event fails the run over the bound, and only then.
func TestFleetCheckCPUBound(t *testing.T) {
	r := &FleetResult{Gen: GeneratorStats{Events: 1_000_000}, CPU: map[string]time.Duration{
		cpuEnricher: 2 * time.Second, cpuAnalyzers: 2 * time.Second, cpuStore: 2 * time.Second, cpuNATS: time.Minute}}
	if err := r.Check(); err != nil {
		t.Fatalf("no bound: %v", err)
	}
	r.CPUBound = 6
	if err := r.Check(); err != nil {
		t.Fatalf("6 µs/event against a bound of 6: %v", err)
	}
	r.CPUBound = 5
	if err := r.Check(); err == nil || !strings.Contains(err.Error(), "6.00 µs of CPU per event") {
		t.Fatalf("6 µs/event against a bound of 5: %v", err)
	}
}
