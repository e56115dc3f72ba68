package bus_test

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/containsec/contain/internal/bus"
	"github.com/containsec/contain/internal/metrics"
	"github.com/containsec/contain/internal/testenv"
	"github.com/containsec/contain/schemas/containv1"
)

// TestFilledFetchOnClusterGetsEveryDelivery consumes an R3 stream of a
// real 3-node cluster with filled fetches bounded by bytes (the store's
// consumers): every fetch ends on the byte bound, where the server sends
// its "409 Message Size Exceeds MaxBytes" before the deliveries it still
// holds for its raft group. Every message must reach the handler at its
// first delivery — none left unacknowledged until AckWait (60 s here),
// none counted as expired — and every fetch but the last must be close
// to full.
func TestFilledFetchOnClusterGetsEveryDelivery(t *testing.T) {
	cl := testenv.StartNATSCluster(t, 3)
	log := testenv.Logger(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	pnc, pjs, err := bus.Connect(cl.Nodes[0].URL, "publisher", log)
	if err != nil {
		t.Fatal(err)
	}
	defer pnc.Close()
	if err := bus.EnsureStreams(ctx, pjs, bus.StreamsConfig{EventsMaxAge: time.Hour, AlertsMaxAge: time.Hour, Replicas: 3}); err != nil {
		t.Fatal(err)
	}
	// ~33 KB batches of 40 events; 1 MiB fetches hold ~30 of them.
	const batches, perBatch, maxBytes = 400, 40, 1 << 20
	p := bus.NewProducer("h1", "test")
	ids := containv1.NewIDGen()
	pad := strings.Repeat("x", 400)
	for range batches {
		evs := make([]*containv1.Event, perBatch)
		for j := range evs {
			evs[j] = execEvent(ids, "c1", "/bin/"+pad)
		}
		if err := bus.Publish(ctx, pjs, containv1.EventsSubject("h1"), p.Batch(evs)); err != nil {
			t.Fatal(err)
		}
	}

	cnc, cjs, err := bus.Connect(cl.Nodes[1].URL, "consumer", log)
	if err != nil {
		t.Fatal(err)
	}
	defer cnc.Close()
	m := metrics.New()
	var (
		mu    sync.Mutex
		sizes []int
		got   int
	)
	cctx, stop := context.WithCancel(ctx)
	defer stop()
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = bus.Consume(cctx, cjs, bus.ConsumerConfig{
			Stream: containv1.StreamEvents, Durable: "sink", Stage: "test",
			Fetch: 4096, FetchWait: time.Second, FetchFill: true, FetchMaxBytes: maxBytes,
			AckWait: time.Minute,
		}, func(_ context.Context, bs []*containv1.Batch) error {
			mu.Lock()
			defer mu.Unlock()
			sizes = append(sizes, len(bs))
			got += len(bs)
			return nil
		}, m, log)
	}()
	testenv.WaitFor(t, 20*time.Second, "every batch at its first delivery", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return got >= batches
	})
	stop()
	<-done
	mu.Lock()
	defer mu.Unlock()
	if got != batches {
		t.Fatalf("handler got %d batches, want %d", got, batches)
	}
	if v := testutil.ToFloat64(m.Expired.WithLabelValues(containv1.StreamEvents, "sink")); v != 0 {
		t.Fatalf("%v messages counted as expired: deliveries lost to a fetch that had ended", v)
	}
	// 1 MiB of ~33 KB messages: at least 25 each but for the last.
	for i, n := range sizes[:len(sizes)-1] {
		if n < 25 {
			t.Fatalf("fetch %d of %d held %d messages (sizes %v): not filled to its byte bound", i, len(sizes), n, sizes)
		}
	}
	t.Logf("%d fetches: %v", len(sizes), sizes)
}
