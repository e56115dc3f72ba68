package loadtest_test

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/containsec/contain/internal/testenv"
	"github.com/containsec/contain/loadtest"
)

// TestFleetMode runs the fleet mode small: three nats-server processes,
// the enricher, two analyzers and the store as `contain` processes, a few
// hosts at a low rate with attacks injected, and the first analyzer
// killed mid-run. Every attack must raise an alert (alerts go on after the
// kill, none twice) and nothing may be dropped or lost.
// CONTAIN_TEST_FLEET_DURATION (e.g. 60s) runs longer than the default 5 s.
func TestFleetMode(t *testing.T) {
	chAddr := testenv.ClickHouseAddr(t)
	cfg := loadtest.DefaultFleetConfig()
	g := &cfg.Generator
	g.Hosts, g.ContainersPerHost, g.Images = 6, 4, 3
	g.Rate, g.Duration = 1500, 5*time.Second
	if v := os.Getenv("CONTAIN_TEST_FLEET_DURATION"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatalf("CONTAIN_TEST_FLEET_DURATION: %v", err)
		}
		g.Duration = d
	}
	g.DeviationFraction = 0.01
	cfg.NATSNodes, cfg.Analyzers, cfg.ResponderHosts = 3, 2, 2
	cfg.LearningWindow = time.Second
	cfg.LeaseTTL = 3 * time.Second
	g.DeviateAfter = cfg.LearningWindow + 2*time.Second
	cfg.KillAnalyzerAt = g.Duration * 2 / 3
	cfg.ClickHouse = []string{chAddr}
	cfg.Database = fmt.Sprintf("contain_fleet_test_%d", time.Now().UnixNano())
	cfg.Dir = t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	res, err := loadtest.RunFleet(ctx, cfg, testenv.Discard())
	if res != nil {
		t.Log(res.Line())
	}
	if err != nil {
		t.Fatal(err)
	}
	if res.Attacks == 0 || res.Gen.Events == 0 {
		t.Fatalf("no attacks (%d) or no events (%d) injected: the test tests nothing", res.Attacks, res.Gen.Events)
	}
	if err := res.Check(); err != nil {
		for _, m := range res.Missed {
			t.Log("missed attack", m)
		}
		t.Fatal(err)
	}
}
