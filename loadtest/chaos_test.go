package loadtest_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/containsec/contain/internal/testenv"
	"github.com/containsec/contain/loadtest"
)

// TestChaos runs the stages as separate `contain` processes on a
// nats-server process and the real ClickHouse, publishes at 1,000
// events/s and injects every fault kind once (a fault every 5 s): kill -9
// and restart of the enricher, analyzer, store and a responder, a NATS
// kill -9 and restart, the store cut from ClickHouse for 6 s, a full
// JetStream disk, poison messages and an oversize batch. Every published
// event must be one ClickHouse row (lost=0, dup_rows=0) and no stage over
// its memory bound. CONTAIN_CHAOS_DURATION (e.g. 10m) runs longer, with a
// fault every 20 s and ClickHouse down for a minute at a time.
func TestChaos(t *testing.T) {
	testenv.RequireRoot(t) // the JetStream store's tmpfs
	chAddr := testenv.ClickHouseAddr(t)
	cfg := loadtest.DefaultChaosConfig()
	cfg.ClickHouse = []string{chAddr}
	cfg.Database = fmt.Sprintf("contain_chaos_test_%d", time.Now().UnixNano())
	cfg.Generator.Rate = 1000
	cfg.FaultEvery = 5 * time.Second
	cfg.Generator.Duration = time.Duration(len(loadtest.AllFaults))*cfg.FaultEvery + 2*time.Second
	cfg.ClickHouseDown = 6 * time.Second
	cfg.OversizeEvents = 5000
	cfg.StoreTmpfsMB = 384
	cfg.StreamMaxBytes = 64 << 20
	cfg.DrainTimeout = 90 * time.Second
	// What a killed stage had fetched is redelivered after its ack wait:
	// shorter than the defaults (30 s, the store's 60 s) to keep the test
	// short (store: flush + dial + 2 × insert timeouts < ack wait).
	cfg.StageEnv = []string{"CONTAIN_ENRICHER_ACK_WAIT=5s", "CONTAIN_ANALYZER_ACK_WAIT=5s",
		"CONTAIN_STORE_ACK_WAIT=10s", "CONTAIN_STORE_DIAL_TIMEOUT=1s", "CONTAIN_STORE_INSERT_TIMEOUT=3s", "CONTAIN_STORE_INSERT_MAX_AGE=1s", "CONTAIN_STORE_ALERTS_INSERT_MAX_AGE=1s"}
	if v := os.Getenv("CONTAIN_CHAOS_DURATION"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatalf("CONTAIN_CHAOS_DURATION: %v", err)
		}
		cfg.Generator.Duration = d
		cfg.FaultEvery, cfg.ClickHouseDown = 20*time.Second, time.Minute
		cfg.StoreTmpfsMB, cfg.StreamMaxBytes = 1536, 256<<20
		cfg.DrainTimeout = 5 * time.Minute
		cfg.StageEnv = nil
	}
	res, err := loadtest.RunChaos(context.Background(), cfg, testenv.Logger(t))
	if errors.Is(err, loadtest.ErrClickHouseUnavailable) {
		testenv.Unavailable(t, err.Error())
	}
	if res != nil {
		t.Logf("faults:\n%s", strings.Join(res.FaultLog, "\n"))
		t.Logf("counters %v; self exits %v; cpu %v", res.Counters, res.SelfExits, res.StageCPU)
		t.Logf("setup %v, publishing %v, drain %v", res.Setup, res.Publish, res.Drain)
		t.Log(res.Line())
	}
	if err != nil {
		t.Fatal(err)
	}
	if err := res.Check(); err != nil {
		t.Fatalf("%v (logs kept in %s)", err, res.Dir)
	}
	// Every kind was injected and did what it should.
	for _, kind := range loadtest.AllFaults {
		done := false
		for _, l := range res.FaultLog {
			if strings.HasPrefix(l, kind+":") {
				if strings.Contains(l, "FAILED") || strings.Contains(l, "skipped") {
					t.Errorf("fault %s", l)
				}
				done = true
			}
		}
		if !done {
			t.Errorf("fault %s was not injected (%d faults)", kind, res.Faults)
		}
	}
	if res.Published < int64(cfg.Generator.Rate*cfg.Generator.Duration.Seconds()/4) {
		t.Errorf("published only %d events in %v at %v/s", res.Published, cfg.Generator.Duration, cfg.Generator.Rate)
	}
	// The poison was read and counted, not stored and not stuck; the
	// batch over max_payload was refused by the server, not published.
	if got := res.Counters[`contain_malformed_messages_total{stage="enricher"}`]; got < float64(res.Poison) || res.Poison == 0 {
		t.Errorf("enricher counted %v malformed messages for %d poison messages", got, res.Poison)
	}
	if res.Refused == 0 {
		t.Error("no batch over max_payload was refused")
	}
	if res.DrainTimedOut {
		t.Error("the stages did not drain")
	}
}
