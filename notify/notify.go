package notify

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/containsec/contain/internal/bus"
	"github.com/containsec/contain/internal/logfields"
	"github.com/containsec/contain/internal/metrics"
	"github.com/containsec/contain/schemas/containv1"
)

// StageNotify labels the stage's metrics and logs.
const StageNotify = "notify"

// maxRemembered bounds the ids remembered per output (delivered ones,
// skipped on redelivery) and the alerts kept for their actions.
const maxRemembered = 1 << 16

// Notifier consumes alerts and actions and pushes them to its outputs.
type Notifier struct {
	cfg     Config
	js      jetstream.JetStream
	m       *metrics.Metrics
	log     *slog.Logger
	senders []*sender

	mu     sync.Mutex
	sent   *idSet // "<output>/<id>" delivered or counted dropped
	alerts *lru   // alert id -> its notification, for the action it causes
}

// New builds the outputs of cfg; Run starts consuming.
func New(cfg Config, js jetstream.JetStream, m *metrics.Metrics, log *slog.Logger) (*Notifier, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	nf := &Notifier{cfg: cfg, js: js, m: m, log: log, sent: newIDSet(maxRemembered), alerts: newLRU(maxRemembered / 4)}
	om := newOutputMetrics(m)
	for i, oc := range cfg.Outputs {
		oc = oc.withDefaults(i)
		out, err := newOutput(oc)
		if err != nil {
			return nil, err
		}
		nf.senders = append(nf.senders, newSender(oc, out, om, log))
	}
	return nf, nil
}

// Run consumes CONTAIN_ALERTS and CONTAIN_ACTIONS until ctx ends.
func (nf *Notifier) Run(ctx context.Context) error {
	defer func() {
		for _, s := range nf.senders {
			_ = s.out.Close()
		}
	}()
	for _, s := range nf.senders {
		s.run(ctx)
	}
	var names []string
	for _, s := range nf.senders {
		names = append(names, s.name+"("+s.cfg.Type+")")
	}
	nf.log.Info("notify running", logfields.Outputs, names)
	errc := make(chan error, 2)
	for _, c := range []struct{ stream, suffix string }{{containv1.StreamAlerts, "-alerts"}, {containv1.StreamActions, "-actions"}} {
		cc := bus.ConsumerConfig{Stream: c.stream, Durable: nf.cfg.DurablePrefix + c.suffix, Stage: StageNotify,
			DeliverNew: nf.cfg.DeliverNew, Fetch: 16, AckWait: nf.ackWait()}
		go func() { errc <- bus.Consume(ctx, nf.js, cc, nf.handle, nf.m, nf.log) }()
	}
	return errors.Join(<-errc, <-errc)
}

// ackWait outlasts the longest a handler may wait on its outputs (every
// attempt timing out, every back-off), so JetStream does not redeliver a
// message an output is still retrying.
func (nf *Notifier) ackWait() time.Duration {
	worst := 30 * time.Second
	for _, s := range nf.senders {
		d, b := time.Duration(0), s.cfg.Backoff
		for range s.cfg.MaxRetries + 1 {
			d += s.cfg.Timeout + b
			b = min(2*b, s.cfg.MaxBackoff)
		}
		worst = max(worst, 2*d)
	}
	return worst
}

type waiting struct {
	key  string
	done chan int
}

// handle pushes every alert and action of batches to every output that
// has not yet taken it, and returns once each output delivered it or
// counted it dropped; an error (some output failed after its retries)
// makes JetStream redeliver the batch, and the outputs that delivered are
// skipped then.
func (nf *Notifier) handle(ctx context.Context, batches []*containv1.Batch) error {
	var wait []waiting
	for _, b := range batches {
		for _, ev := range b.GetEvents() {
			n, ok := nf.notification(ev)
			if !ok {
				continue
			}
			for _, s := range nf.senders {
				key := s.name + "/" + n.ID
				nf.mu.Lock()
				done := nf.sent.has(key)
				nf.mu.Unlock()
				if done {
					continue
				}
				ch := make(chan int, 1)
				if !s.enqueue(n, ch) {
					nf.remember(key)
					continue
				}
				wait = append(wait, waiting{key, ch})
			}
		}
	}
	failed := 0
	for _, w := range wait {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case r := <-w.done:
			if r == outcomeFailed {
				failed++
				continue
			}
			nf.remember(w.key)
		}
	}
	if failed > 0 {
		return fmt.Errorf("notify: %d deliveries failed", failed)
	}
	return nil
}

func (nf *Notifier) remember(key string) {
	nf.mu.Lock()
	nf.sent.add(key)
	nf.mu.Unlock()
}

// notification makes ev's notification, keeping alerts for the actions
// they cause; ok is false for what is not pushed.
func (nf *Notifier) notification(ev *containv1.Event) (*Notification, bool) {
	n, ok := FromEvent(ev)
	if !ok {
		return nil, false
	}
	nf.mu.Lock()
	defer nf.mu.Unlock()
	if n.Kind == KindAlert {
		nf.alerts.put(n.ID, n)
		return n, nf.cfg.Alerts && n.Score >= nf.cfg.MinScore
	}
	n.enrich(nf.alerts.get(n.AlertID))
	return n, true
}

// idSet remembers up to max ids, forgetting the oldest first.
type idSet struct {
	m    map[string]struct{}
	ring []string
	next int
}

func newIDSet(max int) *idSet { return &idSet{m: map[string]struct{}{}, ring: make([]string, max)} }

func (s *idSet) has(k string) bool { _, ok := s.m[k]; return ok }

func (s *idSet) add(k string) {
	if s.has(k) {
		return
	}
	if old := s.ring[s.next]; old != "" {
		delete(s.m, old)
	}
	s.ring[s.next] = k
	s.next = (s.next + 1) % len(s.ring)
	s.m[k] = struct{}{}
}

// lru keeps the latest alerts by id (insertion order is enough: an
// action follows its alert closely).
type lru struct {
	ids *idSet
	m   map[string]*Notification
}

func newLRU(max int) *lru { return &lru{ids: newIDSet(max), m: map[string]*Notification{}} }

func (l *lru) put(id string, n *Notification) {
	if old := l.ids.ring[l.ids.next]; old != "" && !l.ids.has(id) {
		delete(l.m, old)
	}
	l.ids.add(id)
	l.m[id] = n
}

func (l *lru) get(id string) *Notification {
	if id == "" {
		return nil
	}
	return l.m[id]
}
