package bus_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/protobuf/proto"

	"github.com/containsec/contain/internal/bus"
	"github.com/containsec/contain/internal/metrics"
	"github.com/containsec/contain/internal/testenv"
	"github.com/containsec/contain/schemas/containv1"
)

// fleetMsg is a fleet batch of parts on subject, under id.
func fleetMsg(t *testing.T, subject, id string, parts ...*containv1.Batch) *nats.Msg {
	t.Helper()
	buf := bus.AppendFleetHeader(nil, "enricher", id, 0)
	for _, p := range parts {
		data, err := bus.Encode(p)
		if err != nil {
			t.Fatal(err)
		}
		buf = bus.AppendFleetPart(buf, data)
	}
	msg, err := bus.NewEncodedMsg(subject, "enricher", id, 0, containv1.SchemaVersionFleet, buf)
	if err != nil {
		t.Fatal(err)
	}
	return msg
}

// execHostBatch is producer's batch seq of n exec events about host.
func execHostBatch(ids *containv1.IDGen, host, producer string, seq uint64, n int) *containv1.Batch {
	b := &containv1.Batch{SchemaVersion: containv1.SchemaVersion, Host: host, Stage: "enricher", Seq: seq, ProducerId: producer}
	for range n {
		ev := execEvent(ids, host+"-c", "/bin/"+producer)
		ev.Host = host
		b.Events = append(b.Events, ev)
	}
	return b
}

// TestConsumeFleet: Consume (the analyzers' consumer) reads a fleet batch
// as its parts, each bound to its own host: a part about another host
// than it says is refused and counted while the other parts are handled;
// a part handled before (the enricher published its fetch again,
// regrouped with other parts) is skipped and counted as a duplicate; a
// malformed fleet batch is counted and never handled; a handler failure
// retries the fleet message whole, nothing lost or doubled. With the
// arena (the analyzers' fast path) and without.
func TestConsumeFleet(t *testing.T) {
	for _, tc := range []struct {
		reuse bool
		fetch int
		// The bad part's refusals (once per delivery: with a fetch of
		// one, the failed call's message is delivered again; with more,
		// each message is retried alone at once) and the batches of the
		// first handler call.
		refused, first int
	}{{false, 1, 2, 2}, {true, 1, 2, 2}, {false, 10, 1, 3}, {true, 10, 1, 3}} {
		reuse := tc.reuse
		t.Run(fmt.Sprintf("arena=%v/fetch=%d", tc.reuse, tc.fetch), func(t *testing.T) {
			_, nc, js := testenv.NATS(t)
			m := metrics.New()
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			ids := containv1.NewIDGen()
			subject := containv1.FleetSubject(2)

			a := execHostBatch(ids, "h1", "p-a", 1, 3)
			b := execHostBatch(ids, "h2", "p-b", 1, 2)
			bad := execHostBatch(ids, "h3", "p-bad", 1, 2)
			bad.Events[1].Host = "h4" // about another host than the part's
			c := execHostBatch(ids, "h1", "p-c", 2, 4)
			publish := func(msg *nats.Msg) {
				t.Helper()
				if _, err := js.PublishMsg(ctx, msg); err != nil {
					t.Fatal(err)
				}
			}
			publish(fleetMsg(t, subject, "f1", a, b, bad))
			if err := nc.Publish(subject, append(bus.AppendFleetHeader(nil, "enricher", "f2", 0), 0x32, 0x00)); err != nil { // events in a fleet batch
				t.Fatal(err)
			}
			// The same parts a and b regrouped with c: only c is new.
			publish(fleetMsg(t, subject, "f3", b, c, a))

			var got collected
			var calls []int // batches per handler call
			fails := 1      // the first call fails: the fetch is retried
			h := got.handler(func(int) bool { f := fails > 0; fails--; return f })
			go func() {
				_ = bus.Consume(ctx, js, bus.ConsumerConfig{
					Stream: containv1.StreamEvents, Durable: "t", Stage: "test", ReuseEvents: reuse,
					RetryDelay: 20 * time.Millisecond, Fetch: tc.fetch, FetchWait: 500 * time.Millisecond,
				}, func(ctx context.Context, bs []*containv1.Batch) error {
					calls = append(calls, len(bs))
					// The arena's batches live until the next fetch: kept
					// as copies.
					kept := make([]*containv1.Batch, len(bs))
					for i, b := range bs {
						kept[i] = proto.Clone(b).(*containv1.Batch)
					}
					return h(ctx, kept)
				}, m, testenv.Logger(t))
			}()
			want := len(a.Events) + len(b.Events) + len(c.Events)
			testenv.WaitFor(t, 10*time.Second, "the parts' events handled", func() bool { return got.len() >= want })
			testenv.WaitFor(t, 5*time.Second, "the duplicates counted", func() bool {
				return testutil.ToFloat64(m.Dropped.WithLabelValues("test", "duplicate")) == float64(len(a.Events)+len(b.Events))
			})
			time.Sleep(200 * time.Millisecond) // nothing more comes
			got.mu.Lock()
			var hosts []string
			seen := map[string]bool{}
			for _, ev := range got.events {
				if seen[string(ev.Id)] {
					t.Errorf("event %x handled twice", ev.Id)
				}
				seen[string(ev.Id)] = true
				hosts = append(hosts, ev.Host)
			}
			got.mu.Unlock()
			if len(seen) != want {
				t.Fatalf("handled %d distinct events, want %d (parts a, b, c)", len(seen), want)
			}
			for _, ev := range slices.Concat(a.Events, b.Events, c.Events) {
				if !seen[string(ev.Id)] {
					t.Errorf("event %x of host %s not handled", ev.Id, ev.Host)
				}
			}
			// The bad part, counted on each delivery of its message (the
			// first handler call failed: the message came again).
			if v := testutil.ToFloat64(m.Refused.WithLabelValues("test", bus.ReasonEventHost)); v != float64(tc.refused) {
				t.Errorf("refused event_host_mismatch = %v, want %d (the bad part, on each delivery of its message)", v, tc.refused)
			}
			if v := testutil.ToFloat64(m.Malformed.WithLabelValues("test")); v != 1 {
				t.Errorf("malformed = %v, want 1 (the fleet batch holding events)", v)
			}
			if calls[0] != tc.first {
				t.Errorf("first handler call got %d batches, want %d (a and b, and c when fetched with them; the bad part refused, the regrouped a and b skipped)", calls[0], tc.first)
			}
			info, err := js.Consumer(ctx, containv1.StreamEvents, "t")
			if err != nil {
				t.Fatal(err)
			}
			testenv.WaitFor(t, 5*time.Second, "every message acknowledged or terminated", func() bool {
				ci, err := info.Info(ctx)
				return err == nil && ci.NumAckPending == 0 && ci.NumPending == 0
			})
		})
	}
}
