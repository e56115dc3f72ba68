package bus_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/protobuf/proto"

	"github.com/containsec/contain/internal/bus"
	"github.com/containsec/contain/internal/metrics"
	"github.com/containsec/contain/internal/testenv"
	"github.com/containsec/contain/schemas/containv1"
)

// fleetItem is what the handler of TestConsumeMessagesFleet saw of one
// item.
type fleetItem struct {
	subject string
	data    []byte
	batch   *containv1.Batch // nil: refused
	wire    bool
	wb      bus.WireBatch
}

// TestConsumeMessagesFleet: ConsumeMessages hands a fleet message over
// as its parts, each read as if alone on its host's subject, beside
// ordinary messages. A part not bound to its host is refused (counted)
// while its message's other parts are handled and the message acked; a
// fleet message that does not split is malformed and terminated; after a
// handler error a fleet message is retried whole, and acked once.
func TestConsumeMessagesFleet(t *testing.T) {
	_, _, js := testenv.NATS(t)
	m := metrics.New()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var traceMu sync.Mutex
	traced := map[string]int{} // host -> TraceReceived
	ctx = bus.WithReporter(ctx, &bus.Reporter{M: m, Log: testenv.Logger(t), Trace: func(point, _ string, b *containv1.Batch) {
		if point == bus.TraceReceived {
			traceMu.Lock()
			traced[b.GetHost()]++
			traceMu.Unlock()
		}
	}})

	// Fleet message A (partition 0): three hosts' parts, h2's with a
	// container dictionary. Fleet message B (partition 1): h4's part whose
	// event is about h5 (refused), and h6's. C: a fleet batch that does
	// not split. D: an ordinary message of h7. E: a fleet message of one
	// part, refused: acknowledged all the same (nothing in it to retry).
	a := [][]byte{hostBatch(t, "h1", false, "/bin/a1", "/bin/a2"), hostBatch(t, "h2", true, "/bin/b1"), hostBatch(t, "h3", false, "/bin/c1")}
	ids := containv1.NewIDGen()
	liar := bus.NewProducer("h4", "enricher").Batch([]*containv1.Event{execEvent(ids, "c", "/bin/liar")})
	liar.Events[0].Host = "h5"
	liarData, err := bus.Encode(liar)
	if err != nil {
		t.Fatal(err)
	}
	b := [][]byte{liarData, hostBatch(t, "h6", false, "/bin/f1")}
	d := bus.NewProducer("h7", "enricher").Batch([]*containv1.Event{execEvent(ids, "c", "/bin/g1")})
	d.Events[0].Host = "h7"
	for _, p := range []struct {
		subject string
		data    []byte
	}{
		{containv1.FleetSubject(0), fleetOf(a...)},
		{containv1.FleetSubject(1), fleetOf(b...)},
		{containv1.FleetSubject(0), append(fleetOf(a[0]), 0x32, 0x00)}, // events in a fleet batch
		{containv1.FleetSubject(1), fleetOf(liarData)},
	} {
		if _, err := js.Publish(ctx, p.subject, p.data); err != nil {
			t.Fatal(err)
		}
	}
	if err := bus.Publish(ctx, js, containv1.EventsPartitionSubject("h7", 1), d); err != nil {
		t.Fatal(err)
	}
	want := map[string][]byte{} // subject -> data of each good item
	for _, p := range a {
		want[containv1.EventsPartitionSubject(bus.FleetPartHost(p), 0)] = p
	}
	want[containv1.EventsPartitionSubject("h6", 1)] = b[1]
	dData, _ := bus.Encode(d)
	want[containv1.EventsPartitionSubject("h7", 1)] = dData

	var (
		mu      sync.Mutex
		calls   [][]fleetItem // every call's items
		okCalls [][]fleetItem // calls that returned nil
		failed  bool
	)
	cfg := bus.ConsumerConfig{Stream: containv1.StreamEvents, Durable: "fleet", Stage: "test", Fetch: 10,
		AckWait: time.Second, RetryDelay: 20 * time.Millisecond}
	done := make(chan error, 1)
	go func() {
		done <- bus.ConsumeMessages(ctx, js, cfg, func(_ context.Context, f *bus.Messages) error {
			var items []fleetItem
			var err error
			for i := range f.Len() {
				it := fleetItem{data: f.Data(i)}
				it.wire = f.Wire(i, &it.wb)
				it.batch = f.Batch(i)
				it.subject = f.Subject(i)
				if it.batch == nil && !f.Refused(i) {
					t.Errorf("item %d: nil batch, not refused", i)
				}
				items = append(items, it)
				if it.batch.GetHost() == "h1" && f.Len() > 3 {
					// The whole fetch fails once: A is retried alone.
					mu.Lock()
					if !failed {
						failed, err = true, errors.New("downstream unavailable")
					}
					mu.Unlock()
				}
			}
			mu.Lock()
			defer mu.Unlock()
			calls = append(calls, items)
			if err == nil {
				okCalls = append(okCalls, items)
			}
			return err
		}, m, testenv.Logger(t))
	}()

	// handled: the good items handled by calls that returned nil, by
	// subject.
	handled := func() map[string][]fleetItem {
		mu.Lock()
		defer mu.Unlock()
		out := map[string][]fleetItem{}
		for _, c := range okCalls {
			for _, it := range c {
				if it.batch != nil {
					out[it.subject] = append(out[it.subject], it)
				}
			}
		}
		return out
	}
	testenv.WaitFor(t, 20*time.Second, "every good item handled", func() bool { return len(handled()) == len(want) })
	// Nothing comes again once AckWait has passed: every message was
	// acknowledged or terminated.
	time.Sleep(cfg.AckWait + 500*time.Millisecond)

	got := handled()
	for subject, data := range want {
		its := got[subject]
		if len(its) != 1 {
			t.Errorf("%s handled %d times, want once", subject, len(its))
			continue
		}
		it := its[0]
		if string(it.data) != string(data) {
			t.Errorf("%s: Data is not the part's bytes", subject)
		}
		orig, err := bus.Decode(data)
		if err != nil {
			t.Fatal(err)
		}
		if !proto.Equal(it.batch, orig) {
			t.Errorf("%s: Batch\n%v\nwant\n%v", subject, it.batch, orig)
		}
		if !it.wire || it.wb.Host != orig.Host || it.wb.Seq != orig.Seq || len(it.wb.Events) != len(orig.Events) {
			t.Errorf("%s: Wire %v: host %q seq %d, %d events; want %q %d %d", subject, it.wire, it.wb.Host, it.wb.Seq, len(it.wb.Events), orig.Host, orig.Seq, len(orig.Events))
			continue
		}
		for j, we := range it.wb.Events {
			ev := orig.Events[j]
			if we.Host != ev.Host || we.ContainerID != ev.ContainerId || we.ImageRef != ev.ImageRef {
				t.Errorf("%s event %d: Wire host %q container %q image %q, want %q %q %q", subject, j, we.Host, we.ContainerID, we.ImageRef, ev.Host, ev.ContainerId, ev.ImageRef)
			}
		}
	}
	for _, h := range []string{"h1", "h2", "h3", "h6", "h7"} {
		traceMu.Lock()
		n := traced[h]
		traceMu.Unlock()
		if n == 0 {
			t.Errorf("no TraceReceived for %s's item", h)
		}
	}

	mu.Lock()
	if !failed {
		t.Error("the handler never failed")
	}
	refusedSeen := 0
	for _, c := range calls {
		hosts := map[string]bool{}
		for _, it := range c {
			hosts[it.batch.GetHost()] = true
			if it.batch == nil && it.subject == containv1.EventsPartitionSubject("h4", 1) {
				refusedSeen++
			}
		}
		if hosts["h1"] != hosts["h2"] || hosts["h1"] != hosts["h3"] {
			t.Errorf("a call saw only some of A's parts: %v", hosts)
		}
	}
	mu.Unlock()
	if refusedSeen == 0 {
		t.Error("the handler never saw h4's part as a refused item on h4's subject")
	}
	if n := testutil.ToFloat64(m.Refused.WithLabelValues("test", bus.ReasonEventHost)); n != 2 {
		t.Errorf("refused for event host %v times, want 2 (B's part and E's, once each: acknowledged)", n)
	}
	if n := testutil.ToFloat64(m.Malformed.WithLabelValues("test")); n != 1 {
		t.Errorf("malformed %v, want 1 (C, once: terminated)", n)
	}
	if n := testutil.ToFloat64(m.DeadLettered.WithLabelValues("test", bus.DLQHandlerError)); n != 0 {
		t.Errorf("dead-lettered %v", n)
	}
	cons, err := js.Consumer(ctx, containv1.StreamEvents, "fleet")
	if err != nil {
		t.Fatal(err)
	}
	info, err := cons.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.NumAckPending != 0 || info.NumPending != 0 || info.AckFloor.Stream != 5 {
		t.Errorf("consumer: %d ack pending, %d pending, ack floor %d; want 0, 0, 5", info.NumAckPending, info.NumPending, info.AckFloor.Stream)
	}

	// A fetch that does not fail: a fleet message all of whose parts are
	// refused is acknowledged with the others (good), not redelivered.
	for _, data := range [][]byte{fleetOf(liarData), fleetOf(hostBatch(t, "h8", true, "/bin/h1"))} {
		if _, err := js.Publish(ctx, containv1.FleetSubject(2), data); err != nil {
			t.Fatal(err)
		}
	}
	h8 := containv1.EventsPartitionSubject("h8", 2)
	testenv.WaitFor(t, 10*time.Second, "h8's part handled", func() bool { return len(handled()[h8]) == 1 })
	time.Sleep(cfg.AckWait + 500*time.Millisecond)
	if n := len(handled()[h8]); n != 1 {
		t.Errorf("h8's part handled %d times, want once", n)
	}
	if n := testutil.ToFloat64(m.Refused.WithLabelValues("test", bus.ReasonEventHost)); n != 3 {
		t.Errorf("refused for event host %v times, want 3 (each refused part once: acknowledged)", n)
	}
	if info, err = cons.Info(ctx); err != nil {
		t.Fatal(err)
	}
	if info.NumAckPending != 0 || info.AckFloor.Stream != 7 {
		t.Errorf("consumer: %d ack pending, ack floor %d; want 0, 7", info.NumAckPending, info.AckFloor.Stream)
	}
	select {
	case err := <-done:
		t.Fatalf("ConsumeMessages returned: %v", err)
	default:
	}
}
