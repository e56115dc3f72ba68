package bus

import (
	"context"
	"fmt"
	"log/slog"
	"runtime/debug"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/containsec/contain/internal/logfields"
	"github.com/containsec/contain/internal/metrics"
	"github.com/containsec/contain/schemas/containv1"
)

// DefaultMaxDeliver is how many times a handler may fail on a message
// before Consume dead-letters it, unless configured.
const DefaultMaxDeliver = 5

// maxTracked bounds the per-message maps of a consumer.
const maxTracked = 100000

// consumerState is what one Consume loop remembers about its messages:
// when each first failed, when the handler last succeeded, what it holds
// unacknowledged, and how far it has seen the stream.
type consumerState struct {
	js         jetstream.JetStream
	cfg        ConsumerConfig
	h          Handler
	m          *metrics.Metrics
	log        *slog.Logger
	rep        *Reporter
	maxDeliver int

	firstFail   map[uint64]time.Time
	lastSuccess time.Time
	loggedStack bool

	loggedNoInfo bool

	mu       sync.Mutex
	inflight map[uint64]time.Time // stream seq -> publish time, received and not acked
	hi       uint64               // highest stream sequence seen or counted
	pending  uint64               // num_pending at the last check
	received uint64               // first deliveries since the last check
	expired  uint64               // counted so far, for tests and logs
}

func newConsumerState(js jetstream.JetStream, cfg ConsumerConfig, h Handler, m *metrics.Metrics, log *slog.Logger, rep *Reporter) *consumerState {
	md := cfg.MaxDeliver
	if md <= 0 && rep != nil {
		md = rep.MaxDeliver
	}
	if md <= 0 {
		md = DefaultMaxDeliver
	}
	return &consumerState{js: js, cfg: cfg, h: h, m: m, log: log, rep: rep, maxDeliver: md,
		firstFail: map[uint64]time.Time{}, inflight: map[uint64]time.Time{}}
}

func (s *consumerState) filtered() bool { return s.cfg.FilterSubject != "" }

// received notes messages delivered to the handler; for an unfiltered
// consumer a jump in stream sequences is messages removed before they
// could be delivered (expired).
func (s *consumerState) receive(msgs []jetstream.Msg) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, msg := range msgs {
		md, err := msg.Metadata()
		if err != nil {
			continue
		}
		seq := md.Sequence.Stream
		if len(s.inflight) < maxTracked {
			s.inflight[seq] = md.Timestamp
		}
		if md.NumDelivered == 1 {
			s.received++
		}
		if seq > s.hi {
			if !s.filtered() && s.hi > 0 && seq > s.hi+1 {
				s.countExpiredLocked(seq - s.hi - 1)
			}
			s.hi = seq
		}
	}
}

func (s *consumerState) countExpiredLocked(n uint64) {
	if n == 0 {
		return
	}
	s.expired += n
	s.m.Expired.WithLabelValues(s.cfg.Stream, s.cfg.Durable).Add(float64(n))
	s.log.Warn("messages expired from the stream before this consumer received them (see contain_expired_total)",
		logfields.Stream, s.cfg.Stream, logfields.Durable, s.cfg.Durable, logfields.Messages, n, logfields.Total, s.expired)
}

func (s *consumerState) done(msg jetstream.Msg) {
	md, err := msg.Metadata()
	if err != nil {
		return
	}
	delete(s.firstFail, md.Sequence.Stream)
	s.mu.Lock()
	delete(s.inflight, md.Sequence.Stream)
	s.mu.Unlock()
}

// call runs the handler, turning a panic into an error.
func (s *consumerState) call(ctx context.Context, batches []*containv1.Batch) (err error, panicked bool) {
	defer s.recoverHandler(&err, &panicked)
	return s.h(ctx, batches), false
}

// ack acknowledges msgs after their handler succeeded.
func (s *consumerState) ack(msgs []jetstream.Msg) {
	s.lastSuccess = time.Now()
	for _, msg := range msgs {
		s.done(msg)
		if err := msg.Ack(); err != nil {
			s.m.Errors.WithLabelValues(s.cfg.Stage, "ack").Inc()
			s.log.Warn("ack failed; message may be redelivered", logfields.Err, fmt.Errorf("ack: %w", err))
		}
	}
}

// failed handles a fetch whose handler failed: a lone message is
// retried or dead-lettered; several are retried one by one, so one poison
// batch does not hold back the others. After three failures in a row with
// no success the downstream is taken for down and the rest wait.
// It reports whether any message succeeded or was dead-lettered: then
// nothing waits for a back-off.
func (s *consumerState) failed(ctx context.Context, msgs []jetstream.Msg, spans [][2]int, batches []*containv1.Batch, err error, panicked bool, delay time.Duration, seen *partsSeen) bool {
	if len(msgs) == 1 {
		return s.single(ctx, msgs[0], err, panicked, delay)
	}
	anyOK, inRow := false, 0
	for i, msg := range msgs {
		if !anyOK && inRow >= 3 {
			for _, rest := range msgs[i:] {
				_ = rest.NakWithDelay(delay)
			}
			return false
		}
		one := batches[spans[i][0]:spans[i][1]] // a fleet message's parts together
		if len(one) == 0 {
			s.ack([]jetstream.Msg{msg}) // every part refused or handled before
			continue
		}
		err, panicked := s.call(ctx, one)
		if ctx.Err() != nil {
			return anyOK
		}
		if err == nil {
			s.ack([]jetstream.Msg{msg})
			seen.noteFleet(msgs[i:i+1], spans[i:i+1], batches)
			anyOK, inRow = true, 0
			continue
		}
		inRow++
		s.m.Errors.WithLabelValues(s.cfg.Stage, "handler").Inc()
		s.single(ctx, msg, err, panicked, delay)
	}
	return anyOK
}

// single retries msg after delay, or dead-letters it: at once when its
// handler panicked, and when it failed max_deliver times while the handler
// succeeded on other messages since its first failure (a downstream that
// is down for everything dead-letters nothing). It reports whether it
// dead-lettered msg.
func (s *consumerState) single(ctx context.Context, msg jetstream.Msg, herr error, panicked bool, delay time.Duration) bool {
	md, err := msg.Metadata()
	if err != nil {
		_ = msg.NakWithDelay(delay)
		return false
	}
	seq := md.Sequence.Stream
	first, ok := s.firstFail[seq]
	if !ok {
		if len(s.firstFail) >= maxTracked {
			clear(s.firstFail)
		}
		first = time.Now()
		s.firstFail[seq] = first
	}
	reason := ""
	switch {
	case panicked:
		reason = DLQPanic
	case int(md.NumDelivered) >= s.maxDeliver && s.lastSuccess.After(first):
		reason = DLQHandlerError
	}
	if reason == "" {
		_ = msg.NakWithDelay(delay)
		return false
	}
	if err := deadLetter(ctx, s.js, msg, s.cfg.Stage, s.cfg.Durable, reason, herr, s.rep); err != nil {
		s.m.Errors.WithLabelValues(s.cfg.Stage, "dead_letter").Inc()
		s.log.Error("dead-lettering failed; message kept and redelivered", logfields.Durable, s.cfg.Durable,
			logfields.Subject, msg.Subject(), logfields.Seq, seq, logfields.Err, err)
		_ = msg.NakWithDelay(delay)
		return false
	}
	if err := msg.Term(); err != nil {
		s.m.Errors.WithLabelValues(s.cfg.Stage, "ack").Inc()
	}
	s.done(msg)
	s.m.DeadLettered.WithLabelValues(s.cfg.Stage, reason).Inc()
	s.log.Error("message dead-lettered to "+DLQStream+" (see contain_dead_lettered_total; contain dlq list)",
		logfields.Durable, s.cfg.Durable, logfields.Subject, msg.Subject(), logfields.Seq, seq, logfields.Deliveries, md.NumDelivered,
		logfields.Reason, reason, logfields.Err, herr)
	return true
}

// check measures the consumer: lag, oldest unacknowledged message,
// messages expired before delivery; and reports its health.
func (s *consumerState) check(ctx context.Context, cons jetstream.Consumer) {
	name := "consumer " + s.cfg.Stream + "/" + s.cfg.Durable
	var health *Health
	bounds := DefaultHealthConfig()
	if s.rep != nil {
		health, bounds = s.rep.Health, s.rep.HealthBounds
	}
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	ci, err := cons.Info(cctx)
	if err != nil {
		health.Set(name, fmt.Errorf("consumer info: %w", err))
		return
	}
	// The stream's first sequence shows messages expired while nothing
	// new arrived. A user without stream info permission does without:
	// the gap shows in the sequences of the next messages (receive).
	var first uint64
	if st, err := s.js.Stream(cctx, s.cfg.Stream); err == nil {
		first = st.CachedInfo().State.FirstSeq
	} else if !s.loggedNoInfo {
		s.loggedNoInfo = true
		s.log.Debug("no stream info: expiry seen only in delivered sequences", logfields.Stream, s.cfg.Stream, logfields.Err, err)
	}
	s.mu.Lock()
	next := max(ci.Delivered.Stream, s.hi) + 1
	if ci.Delivered.Consumer == 0 && s.hi == 0 {
		// Never delivered anything: what the stream dropped before this
		// durable existed was never this consumer's to miss.
		s.hi = max(first, 1) - 1
	} else if first > next {
		gap := first - next
		if s.filtered() {
			// The gap holds other subjects' messages too: at most what
			// was pending at the last check and not received since.
			bound := uint64(0)
			if s.pending > s.received {
				bound = s.pending - s.received
			}
			gap = min(gap, bound)
		}
		s.countExpiredLocked(gap)
		s.hi = first - 1
	} else if ci.Delivered.Stream > s.hi {
		s.hi = ci.Delivered.Stream
	}
	s.pending, s.received = ci.NumPending, 0
	var oldest time.Duration
	now := time.Now()
	for _, t := range s.inflight {
		oldest = max(oldest, now.Sub(t))
	}
	s.mu.Unlock()
	s.m.ConsumerLag.WithLabelValues(s.cfg.Stream, s.cfg.Durable).Set(float64(ci.NumPending))
	s.m.ConsumerOldestUnacked.WithLabelValues(s.cfg.Stream, s.cfg.Durable).Set(oldest.Seconds())
	switch {
	case bounds.MaxLag > 0 && ci.NumPending > uint64(bounds.MaxLag):
		health.Set(name, fmt.Errorf("lag %d > nats.health.max_lag %d", ci.NumPending, bounds.MaxLag))
	case bounds.MaxUnackedAge > 0 && oldest > bounds.MaxUnackedAge:
		health.Set(name, fmt.Errorf("oldest unacked message %v old > nats.health.max_unacked_age %v", oldest.Round(time.Second), bounds.MaxUnackedAge))
	default:
		health.Set(name, nil)
	}
}

// monitor runs check every interval until ctx ends.
func (s *consumerState) monitor(ctx context.Context, cons jetstream.Consumer) {
	every := 5 * time.Second
	if s.rep != nil && s.rep.HealthBounds.CheckInterval > 0 {
		every = s.rep.HealthBounds.CheckInterval
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			s.check(ctx, cons)
		}
	}
}

// recoverHandler, deferred around a handler's call, turns its panic into
// an error: counted, and logged with the stack once per consumer.
func (s *consumerState) recoverHandler(err *error, panicked *bool) {
	r := recover()
	if r == nil {
		return
	}
	*err, *panicked = fmt.Errorf("handler panicked: %v", r), true
	s.m.Errors.WithLabelValues(s.cfg.Stage, "panic").Inc()
	if !s.loggedStack {
		s.loggedStack = true
		s.log.Error("handler panicked; batch dead-lettered, consumer goes on (stack logged once per consumer)",
			logfields.Durable, s.cfg.Durable, logfields.Panic, fmt.Sprint(r), logfields.Stack, string(debug.Stack()))
	}
}
