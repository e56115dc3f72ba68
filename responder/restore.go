package responder

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/containsec/contain/internal/bus"
	"github.com/containsec/contain/internal/freezer"
	"github.com/containsec/contain/internal/metrics"
	"github.com/containsec/contain/schemas/containv1"
)

// maxRestoreMessages bounds the replay of the actions stream at start.
const maxRestoreMessages = 1_000_000

// restore rebuilds the quarantine list from this host's actions in
// CONTAIN_ACTIONS: a PAUSE/OK not followed by a RELEASE/OK or a "gone"
// RELEASE/SKIPPED is a quarantine, kept if its container is still frozen.
// It returns how many were restored.
func (r *Responder) restore(ctx context.Context) (int, error) {
	subj := containv1.ActionsSubject(r.cfg.Host)
	// A consumer with a fixed name, not an ordered consumer's random one,
	// so NATS permissions can allow this host exactly this consumer
	// (deploy/nats). A leftover from a crash may sit mid-stream: delete it
	// and start over.
	name := r.cfg.restoreConsumer()
	if err := r.js.DeleteConsumer(ctx, containv1.StreamActions, name); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
		return 0, fmt.Errorf("restoring from %s: deleting consumer %s: %w", containv1.StreamActions, name, err)
	}
	cons, err := r.js.CreateConsumer(ctx, containv1.StreamActions, jetstream.ConsumerConfig{
		Name:              name,
		FilterSubject:     subj,
		DeliverPolicy:     jetstream.DeliverAllPolicy,
		AckPolicy:         jetstream.AckNonePolicy,
		InactiveThreshold: time.Minute,
		MemoryStorage:     true,
	})
	if err != nil {
		return 0, fmt.Errorf("restoring from %s: %w", containv1.StreamActions, err)
	}
	defer func() {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		defer cancel()
		_ = r.js.DeleteConsumer(dctx, containv1.StreamActions, name)
	}()
	info := cons.CachedInfo()
	found := map[string]*Quarantine{}
	pending := info.NumPending
	for n := 0; pending > 0 && n < maxRestoreMessages; n++ {
		msg, err := cons.Next(jetstream.FetchMaxWait(2 * time.Second))
		if err != nil {
			return 0, fmt.Errorf("restoring from %s after %d messages: %w", containv1.StreamActions, n, err)
		}
		if md, err := msg.Metadata(); err == nil {
			pending = md.NumPending
		}
		b, err := bus.Decode(msg.Data())
		if err != nil {
			r.m.Malformed.WithLabelValues(metrics.StageResponder).Inc()
			continue
		}
		for _, ev := range b.Events {
			r.replay(found, ev)
		}
	}
	r.actMu.Lock()
	defer r.actMu.Unlock()
	kept := 0
	for id, q := range found {
		t, err := freezer.Locate(r.cfg.roots(), id)
		if err != nil {
			r.log.Warn("quarantined container is gone", logContainer, id, "err", err)
			continue
		}
		m := r.named[q.Method]
		if m == nil || !m.Applies(t) {
			r.log.Warn("quarantine not restored: method does not apply", logContainer, id, logMethod, q.Method)
			continue
		}
		if ok, err := m.Frozen(t); err != nil || !ok {
			r.log.Warn("quarantined container is no longer frozen; not restored", logContainer, id, logMethod, q.Method, "err", err)
			continue
		}
		q.target, q.method = t, m
		r.quarantined[id] = q
		kept++
	}
	return kept, nil
}

func (r *Responder) replay(found map[string]*Quarantine, ev *containv1.Event) {
	a := ev.GetAction()
	if a == nil || ev.ContainerId == "" {
		return
	}
	switch {
	case a.Type == containv1.Action_TYPE_PAUSE && a.Result == containv1.Action_RESULT_OK:
		found[ev.ContainerId] = &Quarantine{
			ContainerID:   ev.ContainerId,
			ContainerName: ev.ContainerName,
			ImageRef:      ev.ImageRef,
			ImageDigest:   ev.ImageDigest,
			Method:        a.Method,
			Since:         time.Unix(0, ev.WallNs).UTC(),
			AlertID:       containv1.FormatID(a.AlertId),
			ActionID:      containv1.FormatID(ev.Id),
			Score:         a.Score,
			Reason:        a.Reason,
			Actor:         a.Actor,
		}
	case a.Type == containv1.Action_TYPE_RELEASE && (a.Result == containv1.Action_RESULT_OK || a.Result == containv1.Action_RESULT_SKIPPED):
		delete(found, ev.ContainerId)
	}
}
