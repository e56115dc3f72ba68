package store

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/containsec/contain/internal/bus"
	"github.com/containsec/contain/internal/metrics"
	"github.com/containsec/contain/schemas/containv1"
)

// TestLookupOfFetchFromManyContainers inserts a fetch whose events come
// from 5,000 containers (a fleet's store: every fetch spans its hosts'
// containers), then the same fetch again. Named one by one (before the
// containers went as an external table), 5,000
// 64-character container ids are a query longer than ClickHouse's
// max_query_size (256 KiB), which failed the lookup, and so the fetch
// (the fleet load test's store then retried message by message and fell
// behind); the second delivery must add no row.
func TestLookupOfFetchFromManyContainers(t *testing.T) {
	cfg := testConfig(t)
	s := openStore(t, cfg)
	ctx := context.Background()
	m := metrics.New()
	ids := containv1.NewIDGen()
	base := time.Now().Add(-time.Minute)
	const containers = 5000
	evs := make([]*containv1.Event, containers)
	for i := range evs {
		evs[i] = &containv1.Event{Id: ids.Next(), Host: "host-a", ContainerId: fmt.Sprintf("%064x", i+1), Kind: containv1.Kind_KIND_EXEC,
			SchemaVersion: containv1.SchemaVersion, WallNs: base.Add(time.Duration(i) * time.Millisecond).UnixNano(),
			Body: &containv1.Event_Exec{Exec: &containv1.Exec{Filename: "/bin/sh"}}}
	}
	b := bus.NewProducer("host-a", "test").Batch(evs)
	for i := range 2 {
		if err := s.handle(ctx, s.bufs(), decoded([]*containv1.Batch{b}), m); err != nil {
			t.Fatalf("delivery %d: %v", i+1, err)
		}
	}
	if got := queryUint(t, s, "SELECT count() FROM events"); got != containers {
		t.Fatalf("events has %d rows, want %d", got, containers)
	}
	if v := testutil.ToFloat64(m.Dropped.WithLabelValues(metrics.StageStore, reasonDuplicate)); v != containers {
		t.Fatalf("duplicates skipped = %v, want %d", v, containers)
	}
}
