package bus

import (
	"context"
	"errors"
	"log/slog"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	"github.com/containsec/contain/internal/logfields"
	"github.com/containsec/contain/internal/metrics"
	"github.com/containsec/contain/schemas/containv1"
)

// BatcherConfig configures a Batcher.
type BatcherConfig struct {
	Subject string
	// Stage labels metrics and batches.
	Stage string
	Host  string
	// QueueLen bounds the events waiting to be batched.
	QueueLen int
	// MaxEvents and MaxBytes close a batch; FlushInterval closes a batch
	// that is not full.
	MaxEvents     int
	MaxBytes      int
	FlushInterval time.Duration
	// MaxFlushInterval and TargetBatchRate size batches to the rate
	// (FlushPacer): once events come faster than TargetBatchRate a
	// second, a batch that is not full closes after 1/TargetBatchRate,
	// at most MaxFlushInterval, instead of FlushInterval. 0 (either):
	// always FlushInterval. Flush still publishes at once.
	MaxFlushInterval time.Duration
	TargetBatchRate  float64
	// ContainerDictionary writes each batch with a container dictionary
	// when that makes it smaller (containv1.Batch.CompactIfSmaller); the
	// batch's events are changed in place as it is published.
	ContainerDictionary bool
}

// Validate reports the first invalid field.
func (c BatcherConfig) Validate() error {
	switch {
	case c.Subject == "":
		return errors.New("batcher: subject must be set")
	case c.QueueLen <= 0:
		return errors.New("batcher: queue_len must be positive")
	case c.MaxEvents <= 0:
		return errors.New("batcher: max_events must be positive")
	case c.FlushInterval <= 0:
		return errors.New("batcher: flush_interval must be positive")
	case c.MaxFlushInterval < 0:
		return errors.New("batcher: max_flush_interval must not be negative")
	case c.TargetBatchRate < 0 || math.IsNaN(c.TargetBatchRate) || math.IsInf(c.TargetBatchRate, 0):
		return errors.New("batcher: target_batch_rate must be a finite number >= 0")
	case c.MaxBytes <= 0 || c.MaxBytes > MaxPayload/2:
		return errors.New("batcher: max_bytes must be in (0, 4MiB]")
	}
	return nil
}

// Batcher collects events from a producer that must never block (the
// kernel ring-buffer reader) into batches and publishes them. Add never
// blocks: when the queue is full the event is dropped and counted.
type Batcher struct {
	cfg   BatcherConfig
	js    jetstream.JetStream
	m     *metrics.Metrics
	log   *slog.Logger
	queue chan *containv1.Event
	prod  *Producer

	// Append's events: taken by Run when its flush timer fires, or at once
	// when MaxEvents are waiting or Flush asks (kick). armed: a kick for
	// the events in direct was sent (Run arms its timer on it); reset when
	// Run takes them, so the next Append kicks once again.
	mu     sync.Mutex
	direct []*containv1.Event
	armed  bool
	kick   chan struct{}
	// flushNow: Flush asked Run to publish the appended events at once.
	flushNow atomic.Bool
}

// NewBatcher makes a Batcher; call Run to publish.
func NewBatcher(js jetstream.JetStream, cfg BatcherConfig, m *metrics.Metrics, log *slog.Logger) (*Batcher, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Batcher{
		cfg:   cfg,
		js:    js,
		m:     m,
		log:   log,
		queue: make(chan *containv1.Event, cfg.QueueLen),
		prod:  NewProducer(cfg.Host, cfg.Stage),
		kick:  make(chan struct{}, 1),
	}, nil
}

// Add queues ev and reports whether it was taken.
func (b *Batcher) Add(ev *containv1.Event) bool {
	select {
	case b.queue <- ev:
		return true
	default:
		b.m.Dropped.WithLabelValues(b.cfg.Stage, "queue_full").Inc()
		return false
	}
}

// Append queues ev like Add without waking Run for each event: the first
// event after a flush wakes Run once to arm its FlushInterval timer (the
// same bound on latency as Add's, whose events also wait for the timer
// unless a batch fills), and MaxEvents waiting wake it to publish at once.
// A producer that wakes for every event (one kernel record) then costs one
// goroutine wakeup, not two, and an idle producer none. The QueueLen bound
// and the drop counting are Add's. Events of one producer keep their
// order; do not mix Add and Append in one producer.
func (b *Batcher) Append(ev *containv1.Event) bool {
	return b.appendBounded(ev, b.cfg.QueueLen)
}

// AppendKeep is Append for the rare events a consumer cannot do without
// (a container's announcement: without it every later event of the
// container lacks its identity): past QueueLen they still fit in a
// reserve of KeepReserve(QueueLen) more, so a queue filled by a flood of
// ordinary events does not drop them. A refusal past the reserve is not
// counted as a drop: the caller keeps what was refused and offers it
// again (and counts that it had to wait).
func (b *Batcher) AppendKeep(ev *containv1.Event) bool {
	return b.appendBounded(ev, b.cfg.QueueLen+KeepReserve(b.cfg.QueueLen))
}

// KeepReserve is how many events AppendKeep may queue past queueLen: an
// eighth of it, at least 64.
func KeepReserve(queueLen int) int {
	return max(64, queueLen/8)
}

func (b *Batcher) appendBounded(ev *containv1.Event, bound int) bool {
	b.mu.Lock()
	if len(b.direct) >= bound {
		b.mu.Unlock()
		if bound == b.cfg.QueueLen {
			b.m.Dropped.WithLabelValues(b.cfg.Stage, "queue_full").Inc()
		}
		return false
	}
	b.direct = append(b.direct, ev)
	wake := !b.armed || len(b.direct) >= b.cfg.MaxEvents
	b.armed = true
	b.mu.Unlock()
	if wake {
		b.wake()
	}
	return true
}

func (b *Batcher) wake() {
	select {
	case b.kick <- struct{}{}:
	default:
	}
}

// Flush asks Run to publish what was appended at once instead of at the
// next FlushInterval tick, without waiting for it: for events that must
// reach the detectors fast (an exec). Flushes asked for while Run is
// publishing coalesce into one.
func (b *Batcher) Flush() {
	b.flushNow.Store(true)
	b.wake()
}

// takeDirect returns the appended events and resets the list.
func (b *Batcher) takeDirect(spare []*containv1.Event) []*containv1.Event {
	b.mu.Lock()
	defer b.mu.Unlock()
	evs := b.direct
	b.direct = spare[:0]
	b.armed = false
	return evs
}

// directLen is the number of appended events waiting.
func (b *Batcher) directLen() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.direct)
}

// Len is the number of events waiting.
func (b *Batcher) Len() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.queue) + len(b.direct)
}

// Run batches and publishes until ctx ends, then flushes what is queued
// (with a short grace period) and returns.
func (b *Batcher) Run(ctx context.Context) error {
	// The flush timer runs only while events wait: an idle batcher does
	// not wake up.
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	timerOn := false
	pacer := NewFlushPacer(b.cfg.FlushInterval, b.cfg.MaxFlushInterval, b.cfg.TargetBatchRate)
	arm := func() {
		if !timerOn {
			timer.Reset(pacer.Interval(time.Now()))
			timerOn = true
		}
	}
	var (
		pending []*containv1.Event
		size    int
	)
	flush := func(pctx context.Context) {
		if len(pending) == 0 {
			return
		}
		batch := b.prod.Batch(pending)
		if b.cfg.ContainerDictionary {
			// The batcher owns the events from Append on and drops
			// them once published: compacted in place.
			batch.CompactIfSmaller()
		}
		reporterFrom(pctx).trace(TraceFlushing, b.cfg.Stage, batch)
		if err := Publish(pctx, b.js, b.cfg.Subject, batch); err != nil {
			b.m.Dropped.WithLabelValues(b.cfg.Stage, "publish_failed").Add(float64(len(pending)))
			b.m.Errors.WithLabelValues(b.cfg.Stage, "publish").Inc()
			b.log.Error("publishing batch", logfields.Subject, b.cfg.Subject, logfields.Events, len(pending), logfields.Err, err)
		} else {
			b.m.EventsOut.WithLabelValues(b.cfg.Stage).Add(float64(len(pending)))
			b.m.BatchEvents.WithLabelValues(b.cfg.Stage).Observe(float64(len(pending)))
		}
		pending, size = nil, 0
	}
	add := func(pctx context.Context, ev *containv1.Event) {
		n := proto.Size(ev)
		if n > b.cfg.MaxBytes {
			b.m.Dropped.WithLabelValues(b.cfg.Stage, "oversize").Inc()
			b.log.Warn("event larger than a batch dropped", logfields.Bytes, n, logfields.Kind, ev.Kind.String())
			return
		}
		if size+n > b.cfg.MaxBytes {
			flush(pctx)
		}
		pending = append(pending, ev)
		size += n
		pacer.Observe(1)
		if len(pending) >= b.cfg.MaxEvents {
			flush(pctx)
		}
	}
	var spare []*containv1.Event
	addDirect := func(pctx context.Context) {
		evs := b.takeDirect(spare)
		for i, ev := range evs {
			add(pctx, ev)
			evs[i] = nil
		}
		spare = evs
	}
	for {
		select {
		case <-ctx.Done():
			grace, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			for {
				select {
				case ev := <-b.queue:
					add(grace, ev)
				default:
					addDirect(grace)
					flush(grace)
					return nil
				}
			}
		case ev := <-b.queue:
			add(ctx, ev)
			arm()
		case <-b.kick:
			if b.flushNow.Swap(false) {
				addDirect(ctx)
				flush(ctx)
			} else if b.directLen() >= b.cfg.MaxEvents {
				addDirect(ctx) // publishes the full batches
			}
			if len(pending) > 0 || b.directLen() > 0 {
				arm()
			}
		case <-timer.C:
			timerOn = false
			b.m.QueueDepth.WithLabelValues(b.cfg.Stage, "batcher").Set(float64(b.Len()))
			addDirect(ctx)
			flush(ctx)
		}
	}
}
