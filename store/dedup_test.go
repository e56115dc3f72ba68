package store

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/containsec/contain/internal/bus"
	"github.com/containsec/contain/internal/metrics"
	"github.com/containsec/contain/schemas/containv1"
)

// TestDoubleDeliveryAddsNoRows delivers one fetch of events, an alert and
// an action again after a retry (same store), a restart (a new store on
// the same database), and inside one fetch (a replay overlapping the
// live stream), and counts rows without FINAL and before any merge: each
// table holds every row once, and events_per_minute counts each event
// once. A fetch mixing old and new rows inserts only the new ones.
func TestDoubleDeliveryAddsNoRows(t *testing.T) {
	cfg := testConfig(t)
	s := openStore(t, cfg)
	ctx := context.Background()
	m := metrics.New()
	ids := containv1.NewIDGen()
	base := time.Now().Add(-10 * time.Minute)
	evs := sampleEvents(ids, "c-twice", base)
	alert := &containv1.Event{Id: ids.Next(), Host: "host-a", ContainerId: "c-twice", ImageRef: "docker.io/library/nginx:1.27",
		WallNs: base.Add(3 * time.Second).UnixNano(), Body: &containv1.Event_Alert{Alert: &containv1.Alert{Score: 0.9, Rule: "r"}}}
	action := &containv1.Event{Id: ids.Next(), Host: "host-a", ContainerId: "c-twice",
		WallNs: base.Add(4 * time.Second).UnixNano(), Body: &containv1.Event_Action{Action: &containv1.Action{
			Type: containv1.Action_TYPE_PAUSE, Result: containv1.Action_RESULT_OK, AlertId: alert.Id}}}
	p := bus.NewProducer("host-a", "test")
	first := p.Batch(append(append([]*containv1.Event{}, evs...), alert, action))
	want := map[string]uint64{"events": uint64(len(evs)), "alerts": 1, "actions": 1}

	counts := func(when string) {
		t.Helper()
		for table, n := range want {
			if got := queryUint(t, s, "SELECT count() FROM "+table+" WHERE container_id = 'c-twice'"); got != n {
				t.Errorf("%s: %s has %d rows, want %d", when, table, got, n)
			}
		}
		if got := queryUint(t, s, "SELECT sum(events) FROM events_per_minute WHERE container_id = 'c-twice'"); got != want["events"] {
			t.Errorf("%s: events_per_minute counts %d events, want %d", when, got, want["events"])
		}
	}

	if err := s.handle(ctx, s.bufs(), decoded([]*containv1.Batch{first}), m); err != nil {
		t.Fatal(err)
	}
	counts("first delivery")

	// Retry: the same fetch again through the same store.
	if err := s.handle(ctx, s.bufs(), decoded([]*containv1.Batch{first}), m); err != nil {
		t.Fatal(err)
	}
	counts("retry")

	// Restart: a new store process on the same database.
	s2 := openStore(t, cfg)
	if err := s2.handle(ctx, s2.bufs(), decoded([]*containv1.Batch{first}), m); err != nil {
		t.Fatal(err)
	}
	counts("restart")

	// Replay overlapping new data: one fetch holding the old batch twice
	// and a batch with one old and two new events (one of them twice).
	more := sampleEvents(ids, "c-twice", base.Add(time.Minute))[:2]
	mixed := p.Batch([]*containv1.Event{evs[0], more[0], more[1], more[1]})
	if err := s2.handle(ctx, s2.bufs(), decoded([]*containv1.Batch{first, first, mixed}), m); err != nil {
		t.Fatal(err)
	}
	want["events"] += 2
	counts("replay with new events")

	// first: at the retry, the restart and twice in the replay; then
	// evs[0] and the second more[1].
	wantDups := float64(len(first.Events))*4 + 2
	if got := testutil.ToFloat64(m.Dropped.WithLabelValues(metrics.StageStore, reasonDuplicate)); got != wantDups {
		t.Errorf("dropped{reason=duplicate} = %v, want %v", got, wantDups)
	}
}
