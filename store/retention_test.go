package store

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/containsec/contain/internal/bus"
	"github.com/containsec/contain/internal/metrics"
	"github.com/containsec/contain/internal/testenv"
	"github.com/containsec/contain/schemas/containv1"
)

func TestRetentionConfig(t *testing.T) {
	for _, r := range []time.Duration{0, 24 * time.Hour, 30 * 24 * time.Hour} {
		c := DefaultConfig()
		c.Retention = r
		if err := c.Validate(); err != nil {
			t.Errorf("retention %v: %v", r, err)
		}
	}
	for _, r := range []time.Duration{-time.Hour, time.Hour, 23 * time.Hour} {
		c := DefaultConfig()
		c.Retention = r
		if err := c.Validate(); err == nil || !strings.HasPrefix(err.Error(), "store.retention:") {
			t.Errorf("retention %v: got %v, want a store.retention error", r, err)
		}
	}
	if DefaultConfig().Retention != 0 {
		t.Error("retention is on by default: deleting data must be asked for")
	}
}

// insertAged writes two events of container cid, age old.
func insertAged(t *testing.T, s *Store, ids *containv1.IDGen, cid string, age time.Duration) {
	t.Helper()
	evs := sampleEvents(ids, cid, time.Now().UTC().Add(-age))[:2]
	if err := s.handle(context.Background(), s.bufs(), decoded([]*containv1.Batch{bus.NewProducer("h", "t").Batch(evs)}), metrics.New()); err != nil {
		t.Fatal(err)
	}
}

// TestRetentionLoop: with store.retention set, Run prunes at start and
// then again every pruneEvery; younger days stay.
func TestRetentionLoop(t *testing.T) {
	cfg := testConfig(t)
	cfg.Retention = 3 * 24 * time.Hour
	cfg.ImagesBucket, cfg.ProfilesBucket, cfg.BaselinesBucket = "", "", ""
	s := openStore(t, cfg)
	s.pruneEvery = 300 * time.Millisecond
	ids := containv1.NewIDGen()
	insertAged(t, s, ids, "c-old-1", 10*24*time.Hour)
	insertAged(t, s, ids, "c-young", time.Hour)

	m := metrics.New()
	_, _, js := testenv.NATS(t)
	startRun(t, s, m, js)
	count := func(cid string) uint64 {
		return queryUint(t, s, fmt.Sprintf("SELECT count() FROM events WHERE container_id = '%s'", cid))
	}
	testenv.WaitForState(t, 20*time.Second, "the first prune", func() (bool, string) {
		n := count("c-old-1")
		return n == 0 && s.prunes.Load() >= 1, fmt.Sprintf("%d old events, %d prunes", n, s.prunes.Load())
	})
	// A later old day is dropped by a later pass.
	insertAged(t, s, ids, "c-old-2", 5*24*time.Hour)
	before := s.prunes.Load()
	testenv.WaitForState(t, 20*time.Second, "a later prune", func() (bool, string) {
		n := count("c-old-2")
		return n == 0 && s.prunes.Load() > before, fmt.Sprintf("%d old events, %d prunes", n, s.prunes.Load())
	})
	if n := count("c-young"); n != 2 {
		t.Errorf("%d young events left, want 2", n)
	}
	if got := testutil.ToFloat64(m.Errors.WithLabelValues(metrics.StageStore, "prune")); got != 0 {
		t.Errorf("prune errors: %v", got)
	}
}

// TestRetentionOff: with retention 0, Run never prunes.
func TestRetentionOff(t *testing.T) {
	cfg := testConfig(t)
	cfg.ImagesBucket, cfg.ProfilesBucket, cfg.BaselinesBucket = "", "", ""
	s := openStore(t, cfg)
	s.pruneEvery = 10 * time.Millisecond
	ids := containv1.NewIDGen()
	insertAged(t, s, ids, "c-kept", 400*24*time.Hour)
	m := metrics.New()
	_, _, js := testenv.NATS(t)
	startRun(t, s, m, js)
	// An event that goes through Run proves it is running.
	ev := sampleEvents(ids, "c-live", time.Now())[:1]
	if err := bus.Publish(context.Background(), js, containv1.EventsSubject("host-a"), bus.NewProducer("host-a", "t").Batch(ev)); err != nil {
		t.Fatal(err)
	}
	testenv.WaitForState(t, 20*time.Second, "a live event", func() (bool, string) {
		return queryUint(t, s, "SELECT count() FROM events WHERE container_id = 'c-live'") == 1, ""
	})
	if n := queryUint(t, s, "SELECT count() FROM events WHERE container_id = 'c-kept'"); n != 2 || s.prunes.Load() != 0 {
		t.Errorf("retention off: %d of 2 old events left, %d prunes", n, s.prunes.Load())
	}
}
