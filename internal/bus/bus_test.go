package bus_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/containsec/contain/internal/bus"
	"github.com/containsec/contain/internal/metrics"
	"github.com/containsec/contain/internal/testenv"
	"github.com/containsec/contain/schemas/containv1"
)

func execEvent(ids *containv1.IDGen, container, file string) *containv1.Event {
	return &containv1.Event{
		Id: ids.Next(), Host: "h1", ContainerId: container, Kind: containv1.Kind_KIND_EXEC,
		SchemaVersion: containv1.SchemaVersion, WallNs: time.Now().UnixNano(),
		Body: &containv1.Event_Exec{Exec: &containv1.Exec{Filename: file, Argv: []string{file}}},
	}
}

type collected struct {
	mu     sync.Mutex
	events []*containv1.Event
	calls  int
}

func (c *collected) handler(fail func(call int) bool) bus.Handler {
	return func(ctx context.Context, batches []*containv1.Batch) error {
		c.mu.Lock()
		defer c.mu.Unlock()
		c.calls++
		if fail != nil && fail(c.calls) {
			return errors.New("downstream unavailable")
		}
		for _, b := range batches {
			c.events = append(c.events, b.Events...)
		}
		return nil
	}
}

func (c *collected) len() int { c.mu.Lock(); defer c.mu.Unlock(); return len(c.events) }

func TestBatcherToConsumerKeepsOrderAndSkipsMalformed(t *testing.T) {
	_, nc, js := testenv.NATS(t)
	m := metrics.New()
	log := testenv.Logger(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	b, err := bus.NewBatcher(js, bus.BatcherConfig{
		Subject: containv1.RawSubject("h1"), Stage: metrics.StageCollector, Host: "h1",
		QueueLen: 10000, MaxEvents: 100, MaxBytes: 1 << 20, FlushInterval: 20 * time.Millisecond,
	}, m, log)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = b.Run(ctx); close(done) }()

	// A malformed message in the middle of the stream.
	if err := nc.Publish(containv1.RawSubject("h1"), []byte("\xff\xfe not a batch")); err != nil {
		t.Fatal(err)
	}
	ids := containv1.NewIDGen()
	const n = 1000
	for i := range n {
		if !b.Add(execEvent(ids, "c1", "/bin/x"+string(rune('a'+i%26)))) {
			t.Fatalf("event %d dropped with room in the queue", i)
		}
	}
	var got collected
	go func() {
		_ = bus.Consume(ctx, js, bus.ConsumerConfig{Stream: containv1.StreamRaw, Durable: "t", Stage: "test"}, got.handler(nil), m, log)
	}()
	testenv.WaitFor(t, 10*time.Second, "all events consumed", func() bool { return got.len() == n })
	got.mu.Lock()
	for i, ev := range got.events {
		want := "/bin/x" + string(rune('a'+i%26))
		if ev.GetExec().GetFilename() != want {
			t.Fatalf("event %d: filename %q, want %q (order lost)", i, ev.GetExec().GetFilename(), want)
		}
	}
	got.mu.Unlock()
	testenv.WaitFor(t, 5*time.Second, "malformed counted", func() bool {
		return testutil.ToFloat64(m.Malformed.WithLabelValues("test")) == 1
	})
	// The batcher counts a batch once its publish is acknowledged, which
	// may be after the consumer got it.
	testenv.WaitFor(t, 5*time.Second, "events_out counted", func() bool {
		return testutil.ToFloat64(m.EventsOut.WithLabelValues(metrics.StageCollector)) == n
	})
	cancel()
	<-done
}

func TestConsumerRedeliversAfterHandlerFailure(t *testing.T) {
	_, _, js := testenv.NATS(t)
	m := metrics.New()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	p := bus.NewProducer("h1", "test")
	ids := containv1.NewIDGen()
	for range 5 {
		if err := bus.Publish(ctx, js, containv1.EventsSubject("h1"), p.Batch([]*containv1.Event{execEvent(ids, "c", "/bin/sh")})); err != nil {
			t.Fatal(err)
		}
	}
	var got collected
	// The first three handler calls fail: nothing may be lost.
	go func() {
		_ = bus.Consume(ctx, js, bus.ConsumerConfig{
			Stream: containv1.StreamEvents, Durable: "t", Stage: "test", RetryDelay: 20 * time.Millisecond,
		}, got.handler(func(call int) bool { return call <= 3 }), m, testenv.Logger(t))
	}()
	testenv.WaitFor(t, 10*time.Second, "5 events after failures", func() bool { return got.len() >= 5 })
	if n := got.len(); n != 5 {
		t.Fatalf("got %d events, want exactly 5", n)
	}
	if v := testutil.ToFloat64(m.Errors.WithLabelValues("test", "handler")); v != 3 {
		t.Fatalf("handler errors = %v, want 3", v)
	}
}

func TestPublishDeduplicatesRetriedBatch(t *testing.T) {
	_, _, js := testenv.NATS(t)
	ctx := context.Background()
	p := bus.NewProducer("h1", "test")
	b := p.Batch([]*containv1.Event{execEvent(containv1.NewIDGen(), "c", "/bin/sh")})
	for range 3 {
		if err := bus.Publish(ctx, js, containv1.EventsSubject("h1"), b); err != nil {
			t.Fatal(err)
		}
	}
	s, err := js.Stream(ctx, containv1.StreamEvents)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 1 {
		t.Fatalf("stream holds %d messages, want 1 (Nats-Msg-Id dedupe)", info.State.Msgs)
	}
}

func TestBatcherCountsDropsWhenFull(t *testing.T) {
	m := metrics.New()
	var js jetstream.JetStream // never used: Run is not started
	b, err := bus.NewBatcher(js, bus.BatcherConfig{
		Subject: "x", Stage: "test", QueueLen: 4, MaxEvents: 10, MaxBytes: 1024, FlushInterval: time.Second,
	}, m, testenv.Discard())
	if err != nil {
		t.Fatal(err)
	}
	ids := containv1.NewIDGen()
	taken := 0
	for range 10 {
		if b.Add(execEvent(ids, "c", "/bin/sh")) {
			taken++
		}
	}
	if taken != 4 {
		t.Fatalf("taken = %d, want 4", taken)
	}
	if v := testutil.ToFloat64(m.Dropped.WithLabelValues("test", "queue_full")); v != 6 {
		t.Fatalf("dropped = %v, want 6", v)
	}
}

func TestBatcherConfigValidate(t *testing.T) {
	bad := []bus.BatcherConfig{
		{},
		{Subject: "s", QueueLen: 1, MaxEvents: 1, MaxBytes: 1},
		{Subject: "s", QueueLen: 1, MaxEvents: 1, FlushInterval: 1, MaxBytes: bus.MaxPayload},
	}
	for i, c := range bad {
		if c.Validate() == nil {
			t.Errorf("config %d validated", i)
		}
	}
}

func FuzzDecode(f *testing.F) {
	p := bus.NewProducer("h", "s")
	good, _ := bus.Encode(p.Batch([]*containv1.Event{execEvent(containv1.NewIDGen(), "c", "/bin/sh")}))
	f.Add(good)
	f.Add([]byte{})
	f.Add([]byte{0x08, 0x63})
	f.Add([]byte("\xff\xff\xff"))
	f.Fuzz(func(t *testing.T, data []byte) {
		b, err := bus.Decode(data)
		if err != nil {
			if !errors.Is(err, bus.ErrMalformed) {
				t.Fatalf("error %v is not ErrMalformed", err)
			}
			return
		}
		if b.SchemaVersion == 0 || b.SchemaVersion > containv1.ReadableSchemaVersion {
			t.Fatalf("accepted schema version %d", b.SchemaVersion)
		}
		if _, err := bus.Encode(b); err != nil {
			t.Fatalf("decoded batch does not re-encode: %v", err)
		}
	})
}
