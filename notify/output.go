package notify

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/containsec/contain/internal/logfields"
	"github.com/containsec/contain/internal/metrics"
)

// Output delivers one notification to one destination. Send is called by
// up to OutputConfig.MaxInFlight goroutines at once, each call bounded by
// the context's deadline (OutputConfig.Timeout).
type Output interface {
	Send(ctx context.Context, n *Notification) error
	Close() error
}

// PermanentError is a refusal that no retry can change (an HTTP 4xx other
// than 408 and 429): the message is dropped and counted, not retried.
type PermanentError struct{ Err error }

func (e *PermanentError) Error() string { return "permanent: " + e.Err.Error() }
func (e *PermanentError) Unwrap() error { return e.Err }

// Outcomes of one message on one output.
const (
	outcomeDelivered = iota
	outcomeDropped
	outcomeFailed
)

// Dropped reasons (contain_notify_dropped_total{output,reason}).
const (
	dropQueueFull = "queue_full"
	dropRejected  = "rejected"
)

// Log field keys.
const (
	logOutput  = "output"
	logID      = "id"
	logKind    = "kind"
	logAttempt = "attempt"
	logErr     = "err"
)

type outputMetrics struct {
	delivered, failed, retries *prometheus.CounterVec
	dropped                    *prometheus.CounterVec
	queue                      *prometheus.GaugeVec
	latency                    *prometheus.HistogramVec
}

func newOutputMetrics(m *metrics.Metrics) *outputMetrics {
	return &outputMetrics{
		delivered: metrics.Register(m, "notify", prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "contain", Subsystem: "notify", Name: "delivered_total",
			Help: "Notifications an output accepted, by output.",
		}, []string{"output"})),
		failed: metrics.Register(m, "notify", prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "contain", Subsystem: "notify", Name: "failed_total",
			Help: "Deliveries given up after every retry, by output; the message stays in JetStream and is redelivered.",
		}, []string{"output"})),
		retries: metrics.Register(m, "notify", prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "contain", Subsystem: "notify", Name: "retries_total",
			Help: "Delivery attempts that failed and were retried, by output.",
		}, []string{"output"})),
		dropped: metrics.Register(m, "notify", prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "contain", Subsystem: "notify", Name: "dropped_total",
			Help: "Notifications an output lost, by output and reason (queue_full, rejected).",
		}, []string{"output", "reason"})),
		queue: metrics.Register(m, "notify", prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: "contain", Subsystem: "notify", Name: "queue_length",
			Help: "Notifications waiting for an output.",
		}, []string{"output"})),
		latency: metrics.Register(m, "notify", prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "contain", Subsystem: "notify", Name: "delivery_seconds",
			Help:    "Time from queueing to an output's acceptance, retries included.",
			Buckets: prometheus.ExponentialBuckets(0.001, 4, 10),
		}, []string{"output"})),
	}
}

type job struct {
	n      *Notification
	queued time.Time
	done   chan int // buffered: a worker never blocks on it
}

// sender is one output's bounded queue and its workers.
type sender struct {
	name string
	cfg  OutputConfig
	out  Output
	q    chan job
	m    *outputMetrics
	log  *slog.Logger

	loggedFull atomic.Bool
	lastWarn   atomic.Int64 // unix ns of the last failure logged
}

// warnEvery bounds the failure logs of one output during an outage.
const warnEvery = 10 * time.Second

func newSender(cfg OutputConfig, out Output, m *outputMetrics, log *slog.Logger) *sender {
	s := &sender{name: cfg.Name, cfg: cfg, out: out, q: make(chan job, cfg.QueueLen), m: m, log: log.With(logOutput, cfg.Name)}
	// Every series exists from the start, so a dashboard shows zeros.
	m.delivered.WithLabelValues(s.name)
	m.failed.WithLabelValues(s.name)
	m.retries.WithLabelValues(s.name)
	m.dropped.WithLabelValues(s.name, dropQueueFull)
	m.dropped.WithLabelValues(s.name, dropRejected)
	m.queue.WithLabelValues(s.name).Set(0)
	return s
}

// enqueue queues n, or drops and counts it when the queue is full.
func (s *sender) enqueue(n *Notification, done chan int) bool {
	select {
	case s.q <- job{n: n, queued: time.Now(), done: done}:
		s.m.queue.WithLabelValues(s.name).Set(float64(len(s.q)))
		return true
	default:
		s.m.dropped.WithLabelValues(s.name, dropQueueFull).Inc()
		if !s.loggedFull.Swap(true) {
			s.log.Error("output queue full: notification dropped (logged once; see contain_notify_dropped_total)",
				logID, n.ID, logKind, n.Kind, logfields.QueueLen, s.cfg.QueueLen)
		}
		return false
	}
}

// run starts the workers; they stop when ctx ends.
func (s *sender) run(ctx context.Context) {
	for range s.cfg.MaxInFlight {
		go func() {
			for {
				select {
				case <-ctx.Done():
					return
				case j := <-s.q:
					s.m.queue.WithLabelValues(s.name).Set(float64(len(s.q)))
					j.done <- s.deliver(ctx, j)
				}
			}
		}()
	}
}

// deliver sends one notification, retrying with exponential back-off.
func (s *sender) deliver(ctx context.Context, j job) int {
	backoff := s.cfg.Backoff
	for attempt := 0; ; attempt++ {
		actx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
		err := s.out.Send(actx, j.n)
		cancel()
		if err == nil {
			s.m.delivered.WithLabelValues(s.name).Inc()
			s.m.latency.WithLabelValues(s.name).Observe(time.Since(j.queued).Seconds())
			return outcomeDelivered
		}
		var perm *PermanentError
		if errors.As(err, &perm) {
			s.m.dropped.WithLabelValues(s.name, dropRejected).Inc()
			s.log.Error("output rejected the notification: dropped (see contain_notify_dropped_total)", logID, j.n.ID, logKind, j.n.Kind, logErr, err)
			return outcomeDropped
		}
		if ctx.Err() != nil {
			return outcomeFailed
		}
		if attempt >= s.cfg.MaxRetries {
			s.m.failed.WithLabelValues(s.name).Inc()
			if now := time.Now().UnixNano(); now-s.lastWarn.Load() < int64(warnEvery) {
				return outcomeFailed
			} else {
				s.lastWarn.Store(now)
			}
			s.log.Warn("delivery failed after retries; JetStream redelivers it (logged every 10s at most; see contain_notify_failed_total)", logID, j.n.ID, logKind, j.n.Kind, logAttempt, attempt+1, logErr, err)
			return outcomeFailed
		}
		s.m.retries.WithLabelValues(s.name).Inc()
		s.log.Debug("delivery failed, retrying", logID, j.n.ID, logAttempt, attempt+1, logfields.RetryIn, backoff, logErr, err)
		select {
		case <-ctx.Done():
			return outcomeFailed
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, s.cfg.MaxBackoff)
	}
}

// newOutput builds the output of cfg (defaults applied).
func newOutput(cfg OutputConfig) (Output, error) {
	switch cfg.Type {
	case TypeWebhook:
		return newWebhook(cfg), nil
	case TypeFalcosidekick:
		return newFalcosidekick(cfg), nil
	case TypeSyslog:
		return newSyslog(cfg)
	}
	return nil, fmt.Errorf("notify: unknown output type %q", cfg.Type)
}
