package bus

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/containsec/contain/internal/logfields"
	"github.com/containsec/contain/internal/metrics"
	"github.com/containsec/contain/schemas/containv1"
)

// ConsumeMessages is Consume for a handler that decodes a fetch message by
// message (Messages.Batch) and keeps something smaller than the decoded
// batch (the store's column buffers), so a fetch is never held decoded at
// once. The guarantees are Consume's: a message is acknowledged only after
// the handler returned nil for a fetch holding it; a failed fetch is
// retried message by message and dead-lettered as Consume does; a message
// that does not decode or is not bound to its subject's host is counted,
// logged once, terminated and never given to the handler again. The
// Reporter's Trace sees TraceReceived when a batch is first decoded; no
// TraceHandled (the batches are not kept past the handler's use).
func ConsumeMessages(ctx context.Context, js jetstream.JetStream, cfg ConsumerConfig, h MessageHandler, m *metrics.Metrics, log *slog.Logger) error {
	cfg.defaults()
	if cfg.Stream == "" || cfg.Durable == "" {
		return fmt.Errorf("consumer: stream and durable must be set")
	}
	cons, st, stop := startConsumer(ctx, js, cfg, nil, m, log)
	if cons == nil {
		return nil
	}
	defer stop()
	rep := st.rep
	chk := &msgChecker{cfg: &cfg, m: m, log: log, rep: rep, loggedRefused: map[string]bool{}}
	fe := newFetcher(js.Conn(), cons, &cfg, log)
	defer fe.release()
	// The relay (relay.go) is made when a handler first publishes
	// through it; its deferred acknowledgements are written before the
	// long pull is released (deferred calls run last first).
	rh := &relayHolder{js: js, st: st}
	defer rh.close()
	backoff := cfg.RetryDelay
	for ctx.Err() == nil && !stopped(cfg.Stop) {
		holdBack(ctx, &cfg, m)
		msgs, err := fe.fetch(ctx)
		if err != nil {
			rh.flushAcks()
			if ctx.Err() != nil {
				return nil
			}
			m.Errors.WithLabelValues(cfg.Stage, "fetch").Inc()
			log.Warn("fetch failed", logfields.Durable, cfg.Durable, logfields.Err, err)
			time.Sleep(200 * time.Millisecond)
			continue
		}
		if len(msgs) == 0 {
			rh.flushAcks() // idle: nothing to write them with
			continue
		}
		f := &Messages{msgs: msgs, state: make([]msgState, len(msgs)), chk: chk, rh: rh}
		st.receive(msgs)
		rh.start()
		err, panicked := st.callMessages(ctx, h, f)
		if err == nil {
			backoff = cfg.RetryDelay
			rh.ack(f.good())
			continue
		}
		rh.flushAcks()
		if ctx.Err() != nil {
			return nil // shutting down: the unacked messages are redelivered
		}
		m.Errors.WithLabelValues(cfg.Stage, "handler").Inc()
		if st.failedMessages(ctx, h, f, err, panicked, backoff) {
			backoff = cfg.RetryDelay
			continue
		}
		fe.release() // what is buffered would age towards AckWait meanwhile
		var ok bool
		if backoff, ok = retryAfter(ctx, &cfg, log, len(msgs), backoff, err); !ok {
			return nil
		}
	}
	return nil
}

// MessageHandler processes one fetch, decoding its messages itself
// (Messages.Batch). Its error and panic semantics are Handler's.
type MessageHandler func(ctx context.Context, f *Messages) error

// msgState is what a fetch knows about one of its messages.
type msgState uint8

const (
	msgNew     msgState = iota
	msgDecoded          // decoded and checked at least once (counted)
	msgRefused          // malformed or not bound to its host: terminated
)

// Messages is one fetch's messages, decoded on demand.
type Messages struct {
	msgs  []jetstream.Msg
	state []msgState
	chk   *msgChecker
	rh    *relayHolder // nil: PublishAll publishes as the package's PublishAll
}

// PublishAll publishes msgs as the package's PublishAll does (in order,
// each stored once, a failed one published again with its Nats-Msg-Id)
// through the consumer's relay (docs/design/035-relay.md): stream acks
// read from one inbox by the calling goroutine, and the acknowledgements
// of this fetch's messages, once the handler returned nil, deferred to
// the write of the next fetch's publishes. Call it from the handler's
// goroutine, once or more per fetch; js is used when the Messages come
// from no consumer (tests).
func (f *Messages) PublishAll(ctx context.Context, js jetstream.JetStream, msgs []*nats.Msg, stage string) error {
	if f.rh == nil {
		return PublishAll(ctx, js, msgs, stage)
	}
	r, err := f.rh.get()
	if err != nil {
		return PublishAll(ctx, js, msgs, stage)
	}
	return r.publishAll(ctx, msgs, stage)
}

// Len is the number of messages.
func (f *Messages) Len() int { return len(f.msgs) }

// Data is message i's payload, as received.
func (f *Messages) Data(i int) []byte { return f.msgs[i].Data() }

// Refused reports whether message i was found malformed or not bound to
// its subject's host (and terminated).
func (f *Messages) Refused(i int) bool { return f.state[i] == msgRefused }

// Batch decodes message i and checks it as Consume does; calls for
// different i may run concurrently. A message that
// does not decode, or is not bound to its subject's host, is counted,
// logged once, terminated and gives nil, now and on every later call. A
// batch is counted in contain_events_in_total once per delivery, however
// often it is decoded. The caller owns the result; Messages keeps nothing
// of it. With ConsumerConfig.AliasPayload its strings and bytes point into
// the message's payload (DecodeAliased).
func (f *Messages) Batch(i int) *containv1.Batch {
	if f.state[i] == msgRefused {
		return nil
	}
	b, ok := f.chk.check(f.msgs[i])
	if !ok {
		f.state[i] = msgRefused
		return nil
	}
	if f.state[i] == msgNew {
		f.state[i] = msgDecoded
		f.chk.counted(b)
	}
	return b
}

// Subject is message i's subject.
func (f *Messages) Subject(i int) string { return f.msgs[i].Subject() }

// Wire scans message i into wb (ScanBatch) without decoding its events,
// for a handler that relays events on the wire (the enricher). true: the
// batch is one Batch would decode, bound to its subject's host (counted
// as Batch counts it); wb's strings and Raw point into the message's
// payload. false: the caller calls Batch(i), which decodes it, or refuses
// it and gives nil, exactly as for any message.
func (f *Messages) Wire(i int, wb *WireBatch) bool {
	if f.state[i] == msgRefused {
		return false
	}
	msg := f.msgs[i]
	if !ScanBatch(msg.Data(), wb) || !wb.BoundTo(msg.Subject()) {
		return false
	}
	if f.state[i] == msgNew {
		f.state[i] = msgDecoded
		f.chk.countedWire(msg.Data(), len(wb.Events))
	}
	return true
}

// sub is the fetch of message i alone (sharing its state).
func (f *Messages) sub(i int) *Messages {
	return &Messages{msgs: f.msgs[i : i+1], state: f.state[i : i+1], chk: f.chk, rh: f.rh}
}

// good is the messages not refused.
func (f *Messages) good() []jetstream.Msg {
	out := make([]jetstream.Msg, 0, len(f.msgs))
	for i, msg := range f.msgs {
		if f.state[i] != msgRefused {
			out = append(out, msg)
		}
	}
	return out
}

// msgChecker decodes and checks messages for one consumer, logging each
// kind of refusal once, as Consume does.
type msgChecker struct {
	cfg             *ConsumerConfig
	m               *metrics.Metrics
	log             *slog.Logger
	rep             *Reporter
	loggedMalformed atomic.Bool
	mu              sync.Mutex // a handler may decode from several goroutines
	loggedRefused   map[string]bool
}

func (c *msgChecker) check(msg jetstream.Msg) (*containv1.Batch, bool) {
	b, err := decode(msg.Data(), c.cfg.AliasPayload)
	if err != nil {
		c.m.Malformed.WithLabelValues(c.cfg.Stage).Inc()
		if !c.loggedMalformed.Swap(true) {
			c.log.Error("skipping malformed message (logged once; see contain_malformed_messages_total)",
				logfields.Subject, msg.Subject(), logfields.Bytes, len(msg.Data()), logfields.Err, err)
		}
		_ = msg.Term()
		return nil, false
	}
	if err := CheckHost(msg.Subject(), b); err != nil {
		reason := err.(*HostError).Reason
		c.m.Refused.WithLabelValues(c.cfg.Stage, reason).Inc()
		c.mu.Lock()
		first := !c.loggedRefused[reason]
		c.loggedRefused[reason] = true
		c.mu.Unlock()
		if first {
			c.log.Error("refusing batch not bound to its subject's host (logged once per reason; see contain_refused_total)",
				logfields.Reason, reason, logfields.BatchHost, b.GetHost(), logfields.BatchStage, b.GetStage(), logfields.Err, err)
		}
		_ = msg.Term()
		return nil, false
	}
	return b, true
}

func (c *msgChecker) counted(b *containv1.Batch) {
	c.rep.trace(TraceReceived, c.cfg.Stage, b)
	c.countEvents(len(b.Events))
}

// countedWire is counted for a scanned batch: decoded only for a Trace.
func (c *msgChecker) countedWire(data []byte, events int) {
	if c.rep != nil && c.rep.Trace != nil {
		if b, err := Decode(data); err == nil {
			c.rep.trace(TraceReceived, c.cfg.Stage, b)
		}
	}
	c.countEvents(events)
}

func (c *msgChecker) countEvents(events int) {
	n := float64(events)
	c.m.EventsIn.WithLabelValues(c.cfg.Stage).Add(n)
	c.m.BatchEvents.WithLabelValues(c.cfg.Stage).Observe(n)
}

// callMessages runs h, turning a panic into an error.
func (s *consumerState) callMessages(ctx context.Context, h MessageHandler, f *Messages) (err error, panicked bool) {
	defer s.recoverHandler(&err, &panicked)
	return h(ctx, f), false
}

// failedMessages is failed for a lazily decoded fetch: each message not
// refused is retried alone.
func (s *consumerState) failedMessages(ctx context.Context, h MessageHandler, f *Messages, err error, panicked bool, delay time.Duration) bool {
	var idx []int
	for i := range f.msgs {
		if f.state[i] != msgRefused {
			idx = append(idx, i)
		}
	}
	if len(idx) == 0 {
		return true // all refused (terminated): nothing to retry
	}
	if len(idx) == 1 {
		return s.single(ctx, f.msgs[idx[0]], err, panicked, delay)
	}
	anyOK, inRow := false, 0
	for k, i := range idx {
		if !anyOK && inRow >= 3 {
			for _, rest := range idx[k:] {
				_ = f.msgs[rest].NakWithDelay(delay)
			}
			return false
		}
		one := f.sub(i)
		err, panicked := s.callMessages(ctx, h, one)
		if ctx.Err() != nil {
			return anyOK
		}
		if f.state[i] == msgRefused {
			anyOK, inRow = true, 0 // terminated while retried
			continue
		}
		if err == nil {
			s.ack(one.msgs)
			anyOK, inRow = true, 0
			continue
		}
		inRow++
		s.m.Errors.WithLabelValues(s.cfg.Stage, "handler").Inc()
		s.single(ctx, f.msgs[i], err, panicked, delay)
	}
	return anyOK
}
