package responder

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/containsec/contain/internal/bus"
	"github.com/containsec/contain/internal/freezer"
	"github.com/containsec/contain/internal/logfields"
	"github.com/containsec/contain/internal/metrics"
	"github.com/containsec/contain/internal/runtime"
	"github.com/containsec/contain/schemas/containv1"
)

// maxRestoreMessages bounds the replay of the actions stream at start.
const maxRestoreMessages = 1_000_000

// restore rebuilds the quarantine list from this host's actions in
// CONTAIN_ACTIONS: a PAUSE/OK not followed by a RELEASE/OK or a "gone"
// RELEASE/SKIPPED is a quarantine, kept if its container is still frozen.
// Release grace (the last RELEASE/OK per container) and the circuit
// breaker's window (the PAUSE/OK actions of the last minute) are rebuilt
// from the same actions. It returns how many quarantines were restored.
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
	st := &replayed{found: map[string]*Quarantine{}, released: map[string]OperatorRelease{}}
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
			st.replay(ev)
		}
		r.handled.addActions(b.Events)
	}
	r.actMu.Lock()
	defer r.actMu.Unlock()
	now := r.now()
	for id, rel := range st.released {
		if now.Sub(rel.At) < r.cfg.ReleaseGrace {
			r.released[id] = rel
		}
	}
	for _, at := range st.pauses {
		if now.Sub(at) < time.Minute {
			r.pauses = append(r.pauses, at)
		}
	}
	kept := 0
	for id, q := range st.found {
		t, err := freezer.Locate(r.cfg.roots(), id)
		if err != nil {
			r.log.Warn("quarantined container is gone", logfields.ContainerID, id, logfields.Err, err)
			continue
		}
		m := r.named[q.Method]
		if m == nil || !m.Applies(t) {
			r.log.Warn("quarantine not restored: method does not apply", logfields.ContainerID, id, logfields.Method, q.Method)
			continue
		}
		if ok, err := m.Frozen(t); err != nil || !ok {
			r.log.Warn("quarantined container is no longer frozen; not restored", logfields.ContainerID, id, logfields.Method, q.Method, logfields.Err, err)
			continue
		}
		q.target, q.method = t, m
		r.quarantined[id] = q
		kept++
	}
	r.m.Quarantined.Set(float64(len(r.quarantined)))
	return kept, nil
}

// replayed is what restore reads from the actions.
type replayed struct {
	found    map[string]*Quarantine
	released map[string]OperatorRelease
	pauses   []time.Time
}

func (st *replayed) replay(ev *containv1.Event) {
	a := ev.GetAction()
	if a == nil || ev.ContainerId == "" {
		return
	}
	at := time.Unix(0, ev.WallNs)
	switch {
	case a.Type == containv1.Action_TYPE_PAUSE && a.Result == containv1.Action_RESULT_OK:
		st.pauses = append(st.pauses, at)
		st.found[ev.ContainerId] = &Quarantine{
			ContainerID:   ev.ContainerId,
			ContainerName: ev.ContainerName,
			ImageRef:      ev.ImageRef,
			ImageDigest:   ev.ImageDigest,
			Method:        a.Method,
			Since:         at.UTC(),
			AlertID:       containv1.FormatID(a.AlertId),
			ActionID:      containv1.FormatID(ev.Id),
			Score:         a.Score,
			Reason:        a.Reason,
			Actor:         a.Actor,
		}
	case a.Type == containv1.Action_TYPE_RELEASE && (a.Result == containv1.Action_RESULT_OK || a.Result == containv1.Action_RESULT_SKIPPED):
		delete(st.found, ev.ContainerId)
		if a.Result == containv1.Action_RESULT_OK {
			st.released[ev.ContainerId] = OperatorRelease{At: at, Actor: a.Actor, Reason: a.Reason}
		}
	}
}

// recoverIntents settles the intents a previous run left (it stopped
// between recording an intent and publishing the action). A container
// found frozen was frozen by that run: its PAUSE/OK action is returned to
// publish, and it joins the quarantine list. One not frozen is rolled
// back (a half-done freeze undone) and logged: its alert, never
// acknowledged, is redelivered and decided again. One already in the
// quarantine list had its action published. The returned paths are
// removed once the actions are published.
func (r *Responder) recoverIntents(ctx context.Context) ([]*containv1.Event, []string) {
	pend, errs := r.journal.pending()
	for _, err := range errs {
		r.m.Errors.WithLabelValues(metrics.StageResponder, "intent").Inc()
		r.log.Error("unreadable intent left in place", logfields.Err, err)
	}
	var out []*containv1.Event
	var done []string
	r.actMu.Lock()
	defer r.actMu.Unlock()
	for _, p := range pend {
		ev := p.alert
		id := ev.ContainerId
		if r.quarantined[id] != nil {
			done = append(done, p.path) // published before the stop
			continue
		}
		t, err := r.locateProven(ctx, id)
		if err != nil {
			r.log.Warn("intent: container not found or not proven; nothing to complete", logfields.ContainerID, id, logfields.Err, err)
			done = append(done, p.path)
			continue
		}
		m := freezer.FrozenBy(r.candidates(t), t)
		if m == nil {
			wrote, err := freezer.RollBack(t)
			r.m.Errors.WithLabelValues(metrics.StageResponder, "intent_rolled_back").Inc()
			r.log.Warn("intent: the container is not frozen; rolled back, its alert is decided again on redelivery",
				logfields.ContainerID, id, logfields.UndidPartialFreeze, wrote, logfields.Err, err)
			done = append(done, p.path)
			continue
		}
		out = append(out, r.completeIntent(ev, t, m))
		done = append(done, p.path)
	}
	return out, done
}

// quarantine records container id as quarantined by m since since, for
// the alert ev (or the event standing for it) and the pause action out/act.
// Called with actMu held.
func (r *Responder) quarantine(id string, ev *containv1.Event, t *freezer.Target, m freezer.Method, cgroup string, since time.Time, out *containv1.Event, act *containv1.Action) {
	r.quarantined[id] = &Quarantine{
		ContainerID:   id,
		ContainerName: ev.ContainerName,
		ImageRef:      ev.ImageRef,
		ImageDigest:   ev.ImageDigest,
		Method:        m.Name(),
		Cgroup:        cgroup,
		Since:         since.UTC(),
		AlertID:       containv1.FormatID(ev.Id),
		ActionID:      containv1.FormatID(out.Id),
		Score:         act.Score,
		Reason:        act.Reason,
		Actor:         r.actor,
		target:        t,
		method:        m,
	}
}

// completeIntent records the pause of a container frozen by a previous
// run whose action was not published. Called with actMu held.
func (r *Responder) completeIntent(ev *containv1.Event, t *freezer.Target, m freezer.Method) *containv1.Event {
	out, act := r.newAction(ev, containv1.Action_TYPE_PAUSE)
	act.Method = m.Name()
	d := &Detail{Threshold: r.cfg.Threshold, Cgroup: firstNonEmpty(t.FreezerV1, t.Cgroup2),
		Decision: "paused before a restart: found frozen (" + m.Name() + ") at start with the intent recorded before the freeze and no action published; recorded now"}
	now := r.now()
	r.pauses = append(r.pauses, now)
	r.quarantine(t.ID, ev, t, m, d.Cgroup, now, out, act)
	r.log.Warn("completed a pause interrupted by a previous stop (intent)", logfields.ContainerID, t.ID, logfields.Method, m.Name())
	return r.finish(out, act, containv1.Action_RESULT_OK, d)
}

// maxPreFrozenScan bounds the cgroup2 directories recoverPreFrozen reads.
const maxPreFrozenScan = 100_000

// recoverPreFrozen completes the pauses a previous run left half done. An
// engine method on a hybrid host freezes the container's cgroup2 first,
// then has the engine pause it (v1 freezer), then thaws cgroup2: a
// responder stopped in between leaves a container frozen that its engine
// calls running and no action records. Found at start (cgroup2
// cgroup.freeze 1, the v1 freezer thawed, the engine not paused, not in
// the quarantine list), the pause is completed through the engine and
// recorded as a quarantine, so `contain quarantine list` shows it and
// `contain release` thaws it. Called before alerts are consumed.
func (r *Responder) recoverPreFrozen(ctx context.Context) []*containv1.Event {
	root := r.cfg.Cgroup2Root
	if !r.cfg.EnginePreFreeze || root == "" || r.cfg.FreezerRoot == "" {
		return nil
	}
	var frozen []string
	seen := 0
	_ = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return nil
		}
		if seen++; seen > maxPreFrozenScan {
			return fs.SkipAll
		}
		if b, err := os.ReadFile(filepath.Join(p, "cgroup.freeze")); err == nil && strings.TrimSpace(string(b)) == "1" {
			frozen = append(frozen, strings.TrimPrefix(p, root))
		}
		return nil
	})
	var out []*containv1.Event
	for _, cg := range frozen {
		ref, ok := runtime.FromCgroupPath(cg)
		if !ok || (ref.Runtime != runtime.Docker && ref.Runtime != runtime.Containerd) || r.quarantined[ref.ID] != nil {
			continue
		}
		t, err := freezer.Locate(r.cfg.roots(), ref.ID)
		if err != nil || t.FreezerV1 == "" {
			continue
		}
		if st, err := os.ReadFile(filepath.Join(t.FreezerV1, "freezer.state")); err != nil || strings.TrimSpace(string(st)) != "THAWED" {
			continue // paused by its runtime (v1), not a pre-freeze
		}
		var engine freezer.Method
		for _, m := range r.methodsFor(t) {
			if freezer.MethodRuntime(m.Name()) == t.Runtime && m.Name() != freezer.MethodRuncPause && m.Applies(t) {
				engine = m
				break
			}
		}
		if engine == nil {
			continue
		}
		if paused, err := engine.Frozen(t); err != nil || paused {
			continue
		}
		ev := &containv1.Event{ContainerId: t.ID, ContainerName: t.Labels[runtime.LabelContainerName]}
		out = append(out, r.completePreFreeze(ctx, ev, t, engine))
	}
	return out
}

// completePreFreeze has the engine pause a container found pre-frozen and
// records it.
func (r *Responder) completePreFreeze(ctx context.Context, ev *containv1.Event, t *freezer.Target, m freezer.Method) *containv1.Event {
	r.actMu.Lock()
	defer r.actMu.Unlock()
	out, act := r.newAction(ev, containv1.Action_TYPE_PAUSE)
	act.Method = m.Name()
	act.Reason = "found frozen at start by an interrupted cgroup2 pre-freeze (the responder stopped between its freeze and the engine's pause)"
	d := &Detail{Threshold: r.cfg.Threshold, Cgroup: firstNonEmpty(t.FreezerV1, t.Cgroup2)}
	vctx, cancel := context.WithTimeout(ctx, r.cfg.VerifyTimeout)
	defer cancel()
	if err := m.Freeze(vctx, t); err != nil {
		// Leave it contained: the decision to pause was made before the stop.
		d.Decision, d.Error = "completing the interrupted pause through the engine failed; the container stays frozen by cgroup2", err.Error()
		r.m.Errors.WithLabelValues(metrics.StageResponder, "freeze").Inc()
		return r.finish(out, act, containv1.Action_RESULT_FAILED, d)
	}
	d.Decision = "completed the interrupted pause through " + m.Name() + " and recorded it; release it to thaw"
	now := r.now()
	r.quarantine(t.ID, ev, t, m, d.Cgroup, now, out, act)
	r.log.Warn("completed a pause interrupted by a previous stop", logfields.ContainerID, t.ID, logfields.Method, m.Name())
	return r.finish(out, act, containv1.Action_RESULT_OK, d)
}
