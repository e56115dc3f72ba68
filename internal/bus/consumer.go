package bus

import (
	"context"
	"errors"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/containsec/contain/internal/logfields"
	"github.com/containsec/contain/internal/memgate"
	"github.com/containsec/contain/internal/metrics"
	"github.com/containsec/contain/schemas/containv1"
)

// ConsumerConfig configures a durable pull consumer.
type ConsumerConfig struct {
	Stream  string
	Durable string
	// FilterSubject narrows the stream, e.g. to one host.
	FilterSubject string
	// Stage labels metrics.
	Stage string
	// Fetch is how many messages one handler call receives at most.
	Fetch int
	// FetchWait bounds how long a fetch waits for messages.
	FetchWait time.Duration
	// FetchFill makes a fetch wait up to FetchWait to fill up (Fetch
	// messages or FetchMaxBytes) instead of returning with whatever is
	// pending: fewer, bigger handler calls (a sink's bigger inserts) for
	// up to FetchWait of latency.
	FetchFill bool
	// FetchMaxBytes bounds the bytes of one filled fetch's messages (0:
	// no bound), and so the memory a handler call holds; at least the
	// largest message (MaxPayload), or that message is never delivered.
	// Only with FetchFill.
	FetchMaxBytes int
	// AckWait is how long a delivered message may stay unacknowledged.
	AckWait time.Duration
	// RetryDelay is the back-off before a failed message is redelivered.
	RetryDelay time.Duration
	// DeliverNew starts a new durable at the stream's end instead of its
	// beginning.
	DeliverNew bool
	// MaxDeliver is how many times the handler may fail on a message
	// before it is dead-lettered; 0: the Reporter's, else
	// DefaultMaxDeliver.
	MaxDeliver int
	// Eager hands the message that ends an idle wait to the handler at
	// once (the detection path: enricher, analyzer), with what is
	// already buffered. It fetches from a long pull (design 032): one
	// subscription and pull requests kept open for two fetches'
	// messages, so a message costs a delivery and an ack, no round trip;
	// what is buffered is Nak'd when the consumer stops or backs off. A
	// sink that gains from large batches (the store) leaves it off.
	Eager bool
	// Linger makes a busy Eager consumer wait up to Linger after a fetch's
	// first message for more (up to Fetch), so that a handler that merges
	// a fetch's messages (the enricher's fleet batches, design 036) merges
	// more of them. Busy: over the last half second, messages came at a rate
	// that brings at least two more within Linger. A quiet consumer hands
	// its first message over at once, as Eager does: a lone host's events
	// keep their latency.
	Linger time.Duration
	// AliasPayload decodes with DecodeAliased: the handler's batches
	// point into the messages' payloads (each message owns its buffer:
	// nats.go copies it out of the read buffer) instead of copying every
	// string, so the handler must clone what it keeps past its call.
	AliasPayload bool
	// ReuseEvents decodes into storage reused from fetch to fetch (Arena,
	// design 031): as AliasPayload, and the handler must also keep no
	// event, body, process or slice of one past its call. Only Consume.
	ReuseEvents bool
	// NoMemoryWait exempts a consumer from memgate's hold-back at the
	// memory bound: one whose messages are few and small and whose delay
	// would be a missed response (the responder's alerts). Bulk consumers
	// wait, so the backlog stays in JetStream instead of the heap.
	NoMemoryWait bool
	// Stop, when closed, ends Consume after the fetch in hand is handled
	// and acknowledged: a graceful hand-over (an analyzer releasing a
	// partition), where cancelling ctx would leave it unacknowledged until
	// AckWait.
	Stop <-chan struct{}

	// requestPerFetch makes an Eager consumer fetch with a pull request
	// per fetch (jetstream's Fetch) instead of a long pull: the path
	// before design 032, kept for benchmarks.
	requestPerFetch bool
	// relayRoom replaces relayAckBuffer (tests).
	relayRoom int
}

// memoryWait is the longest a consumer holds its next fetch back while
// the process is at its memory bound (memgate): the backlog stays in
// JetStream meanwhile instead of in the heap.
const memoryWait = 500 * time.Millisecond

// startConsumer creates the durable and starts watching it (lag, expiry,
// health); stop ends the watch and removes its health check. A nil
// consumer means ctx ended first.
func startConsumer(ctx context.Context, js jetstream.JetStream, cfg ConsumerConfig, h Handler, m *metrics.Metrics, log *slog.Logger) (jetstream.Consumer, *consumerState, func()) {
	cons := createConsumer(ctx, js, cfg, log)
	if cons == nil {
		return nil, nil, nil
	}
	st := newConsumerState(js, cfg, h, m, log, reporterFrom(ctx))
	st.check(ctx, cons)
	mctx, stopMonitor := context.WithCancel(ctx)
	go st.monitor(mctx, cons)
	return cons, st, func() {
		stopMonitor()
		if st.rep != nil {
			st.rep.Health.Remove("consumer " + cfg.Stream + "/" + cfg.Durable)
		}
	}
}

// retryAfter logs a failed fetch that will be redelivered, waits backoff
// (or until ctx ends or cfg.Stop closes: ok false) and returns the next,
// doubled up to 30 s.
func retryAfter(ctx context.Context, cfg *ConsumerConfig, log *slog.Logger, n int, backoff time.Duration, err error) (next time.Duration, ok bool) {
	log.Warn("handler failed; messages will be redelivered", logfields.Durable, cfg.Durable, logfields.Messages, n, logfields.RetryIn, backoff, logfields.Err, err)
	select {
	case <-ctx.Done():
		return backoff, false
	case <-cfg.Stop:
		return backoff, false
	case <-time.After(backoff):
	}
	return min(2*backoff, 30*time.Second), true
}

// holdBack waits while the process is at its memory bound (memgate),
// unless cfg is exempt, and counts the wait.
func holdBack(ctx context.Context, cfg *ConsumerConfig, m *metrics.Metrics) {
	if cfg.NoMemoryWait {
		return
	}
	if w := memgate.Wait(ctx, memoryWait); w > 0 {
		m.MemoryWait.WithLabelValues(cfg.Stage).Add(w.Seconds())
	}
}

// stopped reports whether c is closed (never for nil).
func stopped(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

func (c *ConsumerConfig) defaults() {
	if c.Fetch <= 0 {
		c.Fetch = 64
	}
	if c.FetchWait <= 0 {
		c.FetchWait = 200 * time.Millisecond
	}
	if c.AckWait <= 0 {
		c.AckWait = 30 * time.Second
	}
	if c.RetryDelay <= 0 {
		c.RetryDelay = time.Second
	}
}

// Handler processes the decoded batches of one fetch. Returning an error
// makes the fetch's messages be retried one by one; each the handler
// keeps failing on is redelivered after a back-off and dead-lettered
// after MaxDeliver deliveries. A panic is recovered and dead-letters the
// batch it panicked on.
type Handler func(ctx context.Context, batches []*containv1.Batch) error

// Consume runs a durable pull consumer until ctx ends.
func Consume(ctx context.Context, js jetstream.JetStream, cfg ConsumerConfig, h Handler, m *metrics.Metrics, log *slog.Logger) error {
	cfg.defaults()
	if cfg.Stream == "" || cfg.Durable == "" {
		return errors.New("consumer: stream and durable must be set")
	}
	cons, st, stop := startConsumer(ctx, js, cfg, h, m, log)
	if cons == nil {
		return nil
	}
	defer stop()
	rep := st.rep
	eventsIn, batchEvents := m.EventsIn.WithLabelValues(cfg.Stage), m.BatchEvents.WithLabelValues(cfg.Stage)
	var loggedMalformed atomic.Bool
	loggedRefused := map[string]bool{}
	var arena *Arena
	if cfg.ReuseEvents {
		arena = &Arena{}
	}
	fe := newFetcher(js.Conn(), cons, &cfg, log)
	defer fe.release()
	var (
		parts [][]byte
		seen  = newPartsSeen(partsRemembered)
	)
	backoff := cfg.RetryDelay
	for ctx.Err() == nil && !stopped(cfg.Stop) {
		holdBack(ctx, &cfg, m)
		msgs, err := fe.fetch(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			m.Errors.WithLabelValues(cfg.Stage, "fetch").Inc()
			log.Warn("fetch failed", logfields.Durable, cfg.Durable, logfields.Err, err)
			time.Sleep(200 * time.Millisecond)
			continue
		}
		var (
			good    []jetstream.Msg
			batches []*containv1.Batch
			// spans[k] is the batches of good[k]: one, or a fleet
			// message's parts (none when every part was refused or
			// already handled).
			spans [][2]int
		)
		if arena != nil {
			arena.Reset() // the last fetch is handled
		}
		seen.newFetch()
		dec := func(data []byte) (*containv1.Batch, error) {
			if arena != nil {
				return arena.Decode(data)
			}
			return decode(data, cfg.AliasPayload)
		}
		malformed := func(msg jetstream.Msg, data []byte, err error) {
			m.Malformed.WithLabelValues(cfg.Stage).Inc()
			if !loggedMalformed.Swap(true) {
				log.Error("skipping malformed message (logged once; see contain_malformed_messages_total)",
					logfields.Subject, msg.Subject(), logfields.Bytes, len(data), logfields.Err, err)
			}
		}
		refused := func(b *containv1.Batch, err error) {
			reason := err.(*HostError).Reason
			m.Refused.WithLabelValues(cfg.Stage, reason).Inc()
			if !loggedRefused[reason] {
				loggedRefused[reason] = true
				log.Error("refusing batch not bound to its subject's host (logged once per reason; see contain_refused_total)",
					logfields.Reason, reason, logfields.BatchHost, b.GetHost(), logfields.BatchStage, b.GetStage(), logfields.Err, err)
			}
		}
		accept := func(b *containv1.Batch) {
			rep.trace(TraceReceived, cfg.Stage, b)
			batches = append(batches, b)
			n := float64(len(b.Events))
			eventsIn.Add(n)
			batchEvents.Observe(n)
		}
		for _, msg := range msgs {
			if isFleetMsg(msg.Subject(), msg.Data()) {
				// A fleet batch (design 036): each part read as if it
				// had come alone on its host's subject. A bad part is
				// counted and skipped; the others are handled and the
				// message acknowledged. A part handled before (the
				// enricher published its fetch again, regrouped) is
				// skipped, counted as a duplicate.
				var err error
				if parts, err = FleetParts(msg.Data(), parts[:0]); err != nil {
					malformed(msg, msg.Data(), err)
					_ = msg.Term()
					continue
				}
				lo := len(batches)
				for _, part := range parts {
					b, err := dec(part)
					if err != nil {
						malformed(msg, part, err)
						continue
					}
					if _, err := CheckFleetPart(msg.Subject(), b); err != nil {
						refused(b, err)
						continue
					}
					if !seen.take(MsgID(b)) {
						m.Dropped.WithLabelValues(cfg.Stage, "duplicate").Add(float64(len(b.Events)))
						continue
					}
					accept(b)
				}
				good = append(good, msg)
				spans = append(spans, [2]int{lo, len(batches)})
				continue
			}
			b, err := dec(msg.Data())
			if err != nil {
				malformed(msg, msg.Data(), err)
				_ = msg.Term()
				continue
			}
			if err := CheckHost(msg.Subject(), b); err != nil {
				refused(b, err)
				_ = msg.Term()
				continue
			}
			accept(b)
			good = append(good, msg)
			spans = append(spans, [2]int{len(batches) - 1, len(batches)})
		}
		if len(batches) == 0 {
			if len(good) > 0 {
				st.ack(good) // fleet messages whose every part was refused or handled before
			}
			continue
		}
		st.receive(good)
		err, panicked := st.call(ctx, batches)
		if err == nil {
			backoff = cfg.RetryDelay
			st.ack(good)
			seen.noteFleet(good, spans, batches)
			for _, b := range batches {
				rep.trace(TraceHandled, cfg.Stage, b)
			}
			continue
		}
		if ctx.Err() != nil {
			// Shutting down: the unacked messages are redelivered to
			// the next consumer; nothing failed.
			return nil
		}
		m.Errors.WithLabelValues(cfg.Stage, "handler").Inc()
		if st.failed(ctx, good, spans, batches, err, panicked, backoff, seen) {
			// The downstream works: what failed is the messages'.
			backoff = cfg.RetryDelay
			continue
		}
		fe.release() // what is buffered would age towards AckWait meanwhile
		var ok bool
		if backoff, ok = retryAfter(ctx, &cfg, log, len(good), backoff, err); !ok {
			return nil
		}
	}
	return nil
}

// createConsumer creates or updates cfg's durable, retrying until ctx
// ends (then nil).
func createConsumer(ctx context.Context, js jetstream.JetStream, cfg ConsumerConfig, log *slog.Logger) jetstream.Consumer {
	policy := jetstream.DeliverAllPolicy
	if cfg.DeliverNew {
		policy = jetstream.DeliverNewPolicy
	}
	for {
		cons, err := js.CreateOrUpdateConsumer(ctx, cfg.Stream, jetstream.ConsumerConfig{
			Durable:       cfg.Durable,
			FilterSubject: cfg.FilterSubject,
			AckPolicy:     jetstream.AckExplicitPolicy,
			AckWait:       cfg.AckWait,
			DeliverPolicy: policy,
			MaxAckPending: 4 * cfg.Fetch,
			MaxDeliver:    -1,
		})
		if err == nil {
			return cons
		}
		log.Warn("creating consumer, retrying", logfields.Stream, cfg.Stream, logfields.Durable, cfg.Durable, logfields.Err, err)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(time.Second):
		}
	}
}

// fetcher makes a consumer's fetches: with a long pull for an Eager
// consumer (design 032), else with a pull request per fetch (fetch).
type fetcher struct {
	nc   *nats.Conn
	cons jetstream.Consumer
	cfg  *ConsumerConfig
	log  *slog.Logger
	lp   *longPull // nil until the first fetch, and after release
	// The rate of messages fetched (per second, over windows of at least
	// rateWindow), for Linger.
	count int
	since time.Time
	rate  float64
}

func newFetcher(nc *nats.Conn, cons jetstream.Consumer, cfg *ConsumerConfig, log *slog.Logger) *fetcher {
	return &fetcher{nc: nc, cons: cons, cfg: cfg, log: log}
}

// fetch returns the next fetch's messages (none when ctx ended or
// cfg.Stop closed while it waited).
func (f *fetcher) fetch(ctx context.Context) ([]jetstream.Msg, error) {
	if !f.cfg.Eager || f.cfg.FetchFill || f.cfg.requestPerFetch {
		return fetch(f.nc, f.cons, *f.cfg)
	}
	if f.lp == nil {
		lp, err := newLongPull(f.nc, f.cfg.Stream, f.cfg.Durable, f.cfg.Fetch)
		if err != nil {
			return nil, err
		}
		f.lp = lp
	}
	msgs, err := f.lp.fetch(ctx, f.cfg.Stop, f.cfg.Fetch, f.cfg.FetchWait)
	if err == nil && len(msgs) > 0 && len(msgs) < f.cfg.Fetch && f.busy() {
		msgs = f.linger(ctx, msgs)
	}
	f.note(len(msgs))
	return msgs, err
}

// linger adds to msgs what comes within Linger, up to Fetch. An error
// ends it early: the next fetch meets it again.
func (f *fetcher) linger(ctx context.Context, msgs []jetstream.Msg) []jetstream.Msg {
	deadline := time.Now().Add(f.cfg.Linger)
	for len(msgs) < f.cfg.Fetch && ctx.Err() == nil && !stopped(f.cfg.Stop) {
		left := time.Until(deadline)
		if left <= 0 {
			break
		}
		more, err := f.lp.fetch(ctx, f.cfg.Stop, f.cfg.Fetch-len(msgs), left)
		msgs = append(msgs, more...)
		if err != nil {
			break
		}
	}
	return msgs
}

// rateWindow is the least time over which Linger's rate is measured.
const rateWindow = 500 * time.Millisecond

// busy reports whether messages come at a rate that brings two or more
// within Linger.
func (f *fetcher) busy() bool {
	return f.cfg.Linger > 0 && f.rate*f.cfg.Linger.Seconds() >= 2
}

// note counts n messages fetched towards the rate.
func (f *fetcher) note(n int) {
	if f.cfg.Linger <= 0 {
		return
	}
	now := time.Now()
	if f.since.IsZero() {
		f.since = now
	}
	f.count += n
	if el := now.Sub(f.since); el >= rateWindow {
		f.rate = float64(f.count) / el.Seconds()
		f.count, f.since = 0, now
	}
}

// release ends the long pull, if any, Nak'ing the messages it buffered
// for prompt redelivery: when the consumer stops or backs off. The next
// fetch starts another.
func (f *fetcher) release() {
	if f.lp == nil {
		return
	}
	if n := f.lp.close(); n > 0 {
		f.log.Debug("released buffered messages for redelivery", logfields.Durable, f.cfg.Durable, logfields.Messages, n)
	}
	f.lp = nil
}

// fetch returns at once with what is pending (up to cfg.Fetch), and
// otherwise waits up to cfg.FetchWait for the first message and takes what
// came with it (cfg.Eager: returns the first alone). A plain Fetch(n)
// waits for n messages or the whole wait, which would add the wait to
// every event's latency when traffic is low; with cfg.FetchFill that is
// what is wanted (a full fetch, or the wait: pullFill, which also waits
// for the deliveries a clustered consumer sends after ending the request).
func fetch(nc *nats.Conn, cons jetstream.Consumer, cfg ConsumerConfig) ([]jetstream.Msg, error) {
	n, wait := cfg.Fetch, cfg.FetchWait
	if cfg.FetchFill {
		return pullFill(nc, cfg.Stream, cfg.Durable, n, cfg.FetchMaxBytes, wait)
	}
	out, err := drain(cons.FetchNoWait(n))
	if err != nil || len(out) > 0 {
		return out, err
	}
	first, err := cons.Fetch(1, jetstream.FetchMaxWait(wait))
	if err != nil {
		return nil, err
	}
	if out, err = drain(first, nil); err != nil || len(out) == 0 || n == 1 || cfg.Eager {
		return out, err
	}
	more, err := drain(cons.FetchNoWait(n - 1))
	return append(out, more...), err
}

// drain collects a fetch's messages; running out of messages is no error.
func drain(b jetstream.MessageBatch, err error) ([]jetstream.Msg, error) {
	if err != nil {
		return nil, err
	}
	var out []jetstream.Msg
	for msg := range b.Messages() {
		out = append(out, msg)
	}
	if err := b.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) && !errors.Is(err, nats.ErrTimeout) {
		return out, err
	}
	return out, nil
}
