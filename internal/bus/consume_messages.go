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

// ConsumeMessages is Consume for a handler that decodes a fetch item by
// item (Messages.Batch) and keeps something smaller than the decoded
// batch (the store's column buffers), so a fetch is never held decoded at
// once. An item is a message, or a part of a fleet message (design 036),
// read as if it had arrived alone on its host's subject. The guarantees
// are Consume's: a message is acknowledged only after the handler
// returned nil for a fetch holding it; a failed fetch is retried message
// by message (a fleet message's parts together) and dead-lettered as
// Consume does; a message that does not decode or is not bound to its
// subject's host is counted, logged once, terminated and never given to
// the handler again. A part refused so is counted and logged alike, and
// its message acknowledged with its other parts. The Reporter's Trace
// sees TraceReceived when an item is first decoded; no TraceHandled (the
// batches are not kept past the handler's use).
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
		f := &Messages{msgs: msgs, chk: chk, rh: rh}
		f.splitFleet()
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

// msgState is what a fetch knows about one of its items.
type msgState uint8

const (
	msgNew     msgState = iota
	msgDecoded          // decoded and checked at least once (counted)
	msgRefused          // malformed or not bound to its host (a whole message: terminated)
)

// Messages is one fetch's items, decoded on demand: its messages, each
// fleet message (IsFleet, on a fleet subject) split into its parts.
type Messages struct {
	msgs  []jetstream.Msg
	items []fetchItem // nil when no message is a fleet message: item i is message i
	state []msgState  // per item
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

// Len is the number of items: messages, a fleet message counting as its
// parts.
func (f *Messages) Len() int { return len(f.state) }

// Data is item i's bytes, as received: its message's payload, or the
// part's bytes (aliasing the fleet message's payload).
func (f *Messages) Data(i int) []byte {
	data, _, _ := f.item(i)
	return data
}

// Refused reports whether item i was found malformed or not bound to its
// subject's host (a whole message: and terminated).
func (f *Messages) Refused(i int) bool { return f.state[i] == msgRefused }

// Batch decodes item i and checks it as Consume does; calls for
// different i may run concurrently. An item that does not decode, or is
// not bound to its subject's host, is counted, logged once and gives nil,
// now and on every later call; a whole message refused so is terminated,
// a part is not (its fleet message's other parts are read). A batch is
// counted in contain_events_in_total once per delivery, however often it
// is decoded. The caller owns the result; Messages keeps nothing of it.
// With ConsumerConfig.AliasPayload its strings and bytes point into the
// message's payload (DecodeAliased).
func (f *Messages) Batch(i int) *containv1.Batch {
	if f.state[i] == msgRefused {
		return nil
	}
	data, subject, isPart := f.item(i)
	b, subject, ok := f.chk.check(data, subject, isPart)
	if !ok {
		f.refuse(i, isPart)
		return nil
	}
	if isPart {
		f.items[i].subject = subject
	}
	if f.state[i] == msgNew {
		f.state[i] = msgDecoded
		f.chk.counted(b)
	}
	return b
}

// Subject is item i's subject: its message's, or for a part of a fleet
// message the subject the part would have had alone
// (containv1.FleetPartSubject of the part's host), which it is checked
// against.
func (f *Messages) Subject(i int) string {
	data, subject, isPart := f.item(i)
	if !isPart {
		return subject
	}
	if s := f.items[i].subject; s != "" {
		return s
	}
	return containv1.FleetPartSubject(subject, FleetPartHost(data))
}

// Wire scans item i into wb (ScanBatch) without decoding its events,
// for a handler that relays events on the wire (the enricher). true: the
// batch is one Batch would decode, bound to its subject's host (counted
// as Batch counts it); wb's strings and Raw point into the message's
// payload. false: the caller calls Batch(i), which decodes it, or refuses
// it and gives nil, exactly as for any item.
func (f *Messages) Wire(i int, wb *WireBatch) bool {
	if f.state[i] == msgRefused {
		return false
	}
	data, subject, isPart := f.item(i)
	if !ScanBatch(data, wb) {
		return false
	}
	if isPart {
		subject = containv1.FleetPartSubject(subject, wb.Host)
	}
	if !wb.BoundTo(subject) {
		return false
	}
	if isPart {
		f.items[i].subject = subject
	}
	if f.state[i] == msgNew {
		f.state[i] = msgDecoded
		f.chk.countedWire(data, len(wb.Events))
	}
	return true
}

// sub is the fetch of message k alone, whose items are [lo, hi) (sharing
// their state).
func (f *Messages) sub(k, lo, hi int) *Messages {
	s := &Messages{msgs: f.msgs[k : k+1], state: f.state[lo:hi], chk: f.chk, rh: f.rh}
	if f.items != nil {
		s.items = append([]fetchItem(nil), f.items[lo:hi]...)
		for j := range s.items {
			s.items[j].msg = 0
		}
	}
	return s
}

// good is the messages to acknowledge after the handler returned nil:
// every message not terminated. A fleet message is, even when some or all
// of its parts were refused: those were counted, and it holds no more.
func (f *Messages) good() []jetstream.Msg {
	out := make([]jetstream.Msg, 0, len(f.msgs))
	if f.items == nil {
		for i, msg := range f.msgs {
			if f.state[i] != msgRefused {
				out = append(out, msg)
			}
		}
		return out
	}
	last := -1
	for i, it := range f.items {
		if it.msg == last || (!it.isPart && f.state[i] == msgRefused) {
			continue
		}
		out = append(out, f.msgs[it.msg])
		last = it.msg
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

// check decodes data, an item that arrived on subject, and checks it
// against subject, or for a part of a fleet message against the subject
// the part would have had alone (CheckFleetPart), which it returns. A
// refusal is counted and logged (once per kind); the caller terminates a
// whole message.
func (c *msgChecker) check(data []byte, subject string, isPart bool) (*containv1.Batch, string, bool) {
	b, err := decode(data, c.cfg.AliasPayload)
	if err != nil {
		if isPart {
			err = fmt.Errorf("fleet part: %w", err)
		}
		c.malformed(subject, len(data), err)
		return nil, subject, false
	}
	if isPart {
		subject, err = CheckFleetPart(subject, b)
	} else {
		err = CheckHost(subject, b)
	}
	if err != nil {
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
		return nil, subject, false
	}
	return b, subject, true
}

// malformed counts and logs (once) a message or part that arrived on
// subject and does not decode; the caller terminates a whole message.
func (c *msgChecker) malformed(subject string, size int, err error) {
	c.m.Malformed.WithLabelValues(c.cfg.Stage).Inc()
	if !c.loggedMalformed.Swap(true) {
		c.log.Error("skipping malformed message (logged once; see contain_malformed_messages_total)",
			logfields.Subject, subject, logfields.Bytes, size, logfields.Err, err)
	}
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
// terminated is retried alone, a fleet message with all its parts (never
// acknowledged after only some of them were handled). A fleet message
// all of whose parts were refused holds nothing to retry: it is
// acknowledged.
func (s *consumerState) failedMessages(ctx context.Context, h MessageHandler, f *Messages, err error, panicked bool, delay time.Duration) bool {
	spans := f.spans()
	var idx []int
	anyOK := false
	for k, sp := range spans {
		switch {
		case f.wholeRefused(sp[0], sp[1]):
			// terminated
		case f.allRefused(sp[0], sp[1]):
			s.ack(f.msgs[k : k+1])
			anyOK = true
		default:
			idx = append(idx, k)
		}
	}
	if len(idx) == 0 {
		return true // all refused (terminated or acknowledged): nothing to retry
	}
	if len(idx) == 1 {
		return s.single(ctx, f.msgs[idx[0]], err, panicked, delay) || anyOK
	}
	inRow := 0
	for j, k := range idx {
		if !anyOK && inRow >= 3 {
			for _, rest := range idx[j:] {
				_ = f.msgs[rest].NakWithDelay(delay)
			}
			return false
		}
		lo, hi := spans[k][0], spans[k][1]
		one := f.sub(k, lo, hi)
		err, panicked := s.callMessages(ctx, h, one)
		if ctx.Err() != nil {
			return anyOK
		}
		if f.wholeRefused(lo, hi) {
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
		s.single(ctx, f.msgs[k], err, panicked, delay)
	}
	return anyOK
}
