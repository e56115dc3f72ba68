package bus_test

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/containsec/contain/internal/bus"
	"github.com/containsec/contain/internal/metrics"
	"github.com/containsec/contain/internal/testenv"
	"github.com/containsec/contain/schemas/containv1"
)

// relayOut is the output a relaying handler publishes for input msg i of
// a fetch: one message on the events stream whose Nats-Msg-Id names the
// input's stream sequence.
func relayOut(t *testing.T, f *bus.Messages, i int) *nats.Msg {
	b := f.Batch(i)
	if b == nil {
		t.Errorf("input %d refused", i)
		return nil
	}
	msg, err := bus.NewMsg(containv1.EventsSubject("h1"), b)
	if err != nil {
		t.Error(err)
		return nil
	}
	msg.Header.Set(jetstream.MsgIDHeader, fmt.Sprintf("out-%d-%d", b.Seq, len(b.Events)))
	return msg
}

// TestRelayAcknowledges: a handler that republishes each input through
// Messages.PublishAll (the relay: stream acks on one inbox, the fetch's
// acknowledgements deferred to the next publish or idle fetch), failing
// once on one input, and a consumer stopped right after its last fetch.
// Every output is stored once, and every input is acknowledged: a new
// consumer of the durable, after AckWait, is given none of them again.
// Without the write of the deferred acknowledgements when a fetch
// comes back empty (idle, or the consumer ending) and when the consumer
// ends, the last fetch's inputs are redelivered.
func TestRelayAcknowledges(t *testing.T) {
	_, _, js := testenv.NATS(t)
	ctx := context.Background()
	if err := bus.EnsureStreams(ctx, js, bus.StreamsConfig{}); err != nil {
		t.Fatal(err)
	}
	const inputs = 12
	prod := bus.NewProducer("h1", "collector")
	ids := containv1.NewIDGen()
	publish := func(k int) {
		if err := bus.Publish(ctx, js, containv1.RawSubject("h1"), prod.Batch([]*containv1.Event{execEvent(ids, "c", fmt.Sprintf("/bin/%d", k))})); err != nil {
			t.Fatal(err)
		}
	}
	cfg := bus.ConsumerConfig{Stream: containv1.StreamRaw, Durable: "relay", Stage: "test", Eager: true, Fetch: 4,
		FetchWait: 5 * time.Second, AckWait: 2 * time.Second, RetryDelay: 20 * time.Millisecond}
	var handled atomic.Int64
	var failed atomic.Bool
	cctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- bus.ConsumeMessages(cctx, js, cfg, func(ctx context.Context, f *bus.Messages) error {
			var outs []*nats.Msg
			for i := range f.Len() {
				if b := f.Batch(i); b != nil && b.Seq == 5 && !failed.Swap(true) {
					return errors.New("failing once")
				}
				if m := relayOut(t, f, i); m != nil {
					outs = append(outs, m)
				}
			}
			if err := f.PublishAll(ctx, js, outs, "test"); err != nil {
				return err
			}
			handled.Add(int64(f.Len()))
			return nil
		}, metrics.New(), testenv.Logger(t))
	}()
	for k := range inputs {
		publish(k)
		if k%3 == 0 {
			time.Sleep(20 * time.Millisecond) // some fetches of one, some of more
		}
	}
	testenv.WaitFor(t, 20*time.Second, "every input handled", func() bool { return handled.Load() >= inputs })
	// Stopped well within FetchWait: the last fetch's acknowledgements
	// are still deferred, and must be written as the consumer ends.
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if !failed.Load() {
		t.Fatal("the handler never failed")
	}
	st, err := js.Stream(ctx, containv1.StreamEvents)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != inputs {
		t.Errorf("%d outputs stored, want %d (each once)", info.State.Msgs, inputs)
	}
	time.Sleep(cfg.AckWait + time.Second)
	var again atomic.Int64
	cctx, cancel = context.WithCancel(ctx)
	defer cancel()
	go func() {
		done <- bus.ConsumeMessages(cctx, js, cfg, func(_ context.Context, f *bus.Messages) error {
			again.Add(int64(f.Len()))
			return nil
		}, metrics.New(), testenv.Logger(t))
	}()
	cons, err := js.Consumer(ctx, containv1.StreamRaw, cfg.Durable)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second)
	ci, err := cons.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if n := again.Load(); n > 0 || ci.AckFloor.Stream != inputs || ci.NumAckPending != 0 {
		t.Errorf("after AckWait: %d inputs redelivered, ack floor %d of %d, %d ack pending", n, ci.AckFloor.Stream, inputs, ci.NumAckPending)
	}
	cancel()
	<-done
}

// TestRelayRefusals: a publish through the relay that the stream refuses
// (a stream ack carrying an error: here an expected last sequence that
// is not the stream's), or that no stream captures (a "no responders"
// status), is not taken for stored: the handler gets the error, counted
// as a permanent failure, and the input is not acknowledged.
func TestRelayRefusals(t *testing.T) {
	_, _, js := testenv.NATS(t)
	ctx := context.Background()
	if err := bus.EnsureStreams(ctx, js, bus.StreamsConfig{}); err != nil {
		t.Fatal(err)
	}
	m := metrics.New()
	ctx = bus.WithReporter(ctx, &bus.Reporter{M: m, Log: testenv.Logger(t)})
	prod := bus.NewProducer("h1", "collector")
	if err := bus.Publish(ctx, js, containv1.RawSubject("h1"), prod.Batch([]*containv1.Event{execEvent(containv1.NewIDGen(), "c", "/bin/x")})); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, reason string
		out          func(*nats.Msg)
		want         error
	}{
		{"stream refusal", bus.KindStreamRefused, func(m *nats.Msg) { m.Header.Set(jetstream.ExpectedLastSeqHeader, "12345") }, nil},
		{"no stream", bus.KindNoStream, func(m *nats.Msg) { m.Subject = "contain.v1.nowhere.h1" }, bus.ErrNoStream},
	} {
		t.Run(tc.name, func(t *testing.T) {
			errs := make(chan error, 1)
			cctx, cancel := context.WithCancel(ctx)
			defer cancel()
			cfg := bus.ConsumerConfig{Stream: containv1.StreamRaw, Durable: "refusal" + tc.reason, Stage: "test", Eager: true, FetchWait: time.Second,
				AckWait: time.Minute, RetryDelay: time.Hour}
			done := make(chan error, 1)
			go func() {
				done <- bus.ConsumeMessages(cctx, js, cfg, func(ctx context.Context, f *bus.Messages) error {
					out := relayOut(t, f, 0)
					tc.out(out)
					err := f.PublishAll(ctx, js, []*nats.Msg{out}, "test")
					select {
					case errs <- err:
					default:
					}
					return err
				}, metrics.New(), testenv.Logger(t))
			}()
			var err error
			select {
			case err = <-errs:
			case <-time.After(20 * time.Second):
				t.Fatal("no publish")
			}
			if err == nil || (tc.want != nil && !errors.Is(err, tc.want)) {
				t.Fatalf("PublishAll: %v, want a refusal (%v)", err, tc.want)
			}
			if n := testutil.ToFloat64(m.PublishFailed.WithLabelValues("test", tc.reason)); n < 1 {
				t.Errorf("contain_publish_failed_total{reason=%q} = %v", tc.reason, n)
			}
			cons, err := js.Consumer(ctx, containv1.StreamRaw, cfg.Durable)
			if err != nil {
				t.Fatal(err)
			}
			ci, err := cons.Info(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if ci.AckFloor.Stream != 0 {
				t.Errorf("the input was acknowledged (ack floor %d)", ci.AckFloor.Stream)
			}
			cancel()
			<-done
		})
	}
}

// TestRelayLargeCall: one PublishAll of many more messages than the
// relay's PubAck channel holds (here 16; a fetch of container
// announcements in production) stores every message and returns without
// waiting for the attempt timeout (1 min here): the relay keeps at most
// half the channel in flight, so that no PubAck is dropped by the client
// as a slow consumer's. Without that it waits for the timeout.
func TestRelayLargeCall(t *testing.T) {
	_, _, js := testenv.NATS(t)
	ctx := context.Background()
	if err := bus.EnsureStreams(ctx, js, bus.StreamsConfig{}); err != nil {
		t.Fatal(err)
	}
	ctx = bus.WithReporter(ctx, &bus.Reporter{M: metrics.New(), Log: testenv.Logger(t), AttemptTimeout: time.Minute})
	if err := bus.Publish(ctx, js, containv1.RawSubject("h1"), bus.NewProducer("h1", "collector").Batch([]*containv1.Event{execEvent(containv1.NewIDGen(), "c", "/bin/x")})); err != nil {
		t.Fatal(err)
	}
	const n = 2_000
	errs := make(chan error, 1)
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	cfg := bus.WithRelayRoom(bus.ConsumerConfig{Stream: containv1.StreamRaw, Durable: "large", Stage: "test", Eager: true, AckWait: time.Minute}, 16)
	done := make(chan error, 1)
	go func() {
		done <- bus.ConsumeMessages(cctx, js, cfg, func(ctx context.Context, f *bus.Messages) error {
			out := relayOut(t, f, 0)
			msgs := make([]*nats.Msg, n)
			for i := range msgs {
				m := *out
				m.Header = nats.Header{jetstream.MsgIDHeader: []string{fmt.Sprintf("large-%d", i)}}
				msgs[i] = &m
			}
			err := f.PublishAll(ctx, js, msgs, "test")
			errs <- err
			return err
		}, metrics.New(), testenv.Logger(t))
	}()
	select {
	case err := <-errs:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("PublishAll still waiting after 30 s")
	}
	st, err := js.Stream(ctx, containv1.StreamEvents)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != n {
		t.Errorf("%d stored, want %d", info.State.Msgs, n)
	}
	cancel()
	<-done
}
