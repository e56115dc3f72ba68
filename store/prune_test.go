package store

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/containsec/contain/internal/bus"
	"github.com/containsec/contain/internal/metrics"
	"github.com/containsec/contain/schemas/containv1"
)

func TestPrune(t *testing.T) {
	s := openStore(t, testConfig(t))
	ctx := context.Background()
	ids := containv1.NewIDGen()
	now := time.Now().UTC()
	var evs []*containv1.Event
	for _, age := range []time.Duration{40 * 24 * time.Hour, 10 * 24 * time.Hour, 0} {
		evs = append(evs, sampleEvents(ids, "c-prune", now.Add(-age))[:2]...)
	}
	if err := s.handle(ctx, s.bufs(), decoded([]*containv1.Batch{bus.NewProducer("h", "t").Batch(evs)}), metrics.New()); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Prune(ctx, time.Hour); err == nil {
		t.Error("Prune accepted older-than of one hour")
	}
	dropped, err := s.Prune(ctx, 30*24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	old := now.Add(-40 * 24 * time.Hour).Format("20060102")
	if !slices.Equal(dropped, []string{"events/" + old, "events_per_minute/" + old}) {
		t.Errorf("dropped %v, want events and events_per_minute of %s", dropped, old)
	}
	if n := queryUint(t, s, "SELECT count() FROM events WHERE container_id = 'c-prune'"); n != 4 {
		t.Errorf("%d events left, want the 4 younger than 30 days", n)
	}
	if n := queryUint(t, s, "SELECT count() FROM events WHERE ts < now() - INTERVAL 30 DAY"); n != 0 {
		t.Errorf("%d events older than 30 days left", n)
	}
	again, err := s.Prune(ctx, 30*24*time.Hour)
	if err != nil || len(again) != 0 {
		t.Errorf("second prune: %v, %v; want nothing", again, err)
	}
}
