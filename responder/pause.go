package responder

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/containsec/contain/internal/forensics"
	"github.com/containsec/contain/internal/freezer"
	"github.com/containsec/contain/internal/logfields"
	"github.com/containsec/contain/internal/metrics"
	"github.com/containsec/contain/schemas/containv1"
)

// crashHook, when set (tests only), is called at the named points of a
// pause, so a test can kill the process there.
var crashHook func(point string)

// Crash points for crashHook.
const (
	crashAfterIntent   = "after_intent"
	crashAfterFreeze   = "after_freeze"
	crashBeforePublish = "before_publish"
)

func crashAt(point string) {
	if crashHook != nil {
		crashHook(point)
	}
}

// onAlert decides on one alert (Config.Decide) and acts; it always returns
// an action, and the path of the intent recorded before a freeze ("" when
// none), removed once the action is published.
func (r *Responder) onAlert(ctx context.Context, ev *containv1.Event, recv time.Time) (*containv1.Event, string) {
	out, act := r.newAction(ev, containv1.Action_TYPE_PAUSE)
	d := &Detail{Threshold: r.cfg.Threshold}
	skip := func(why string) *containv1.Event {
		d.Decision = why
		return r.finish(out, act, containv1.Action_RESULT_SKIPPED, d)
	}
	fail := func(decision string, err error) *containv1.Event {
		d.Decision, d.Error = decision, err.Error()
		r.m.Errors.WithLabelValues(metrics.StageResponder, "freeze").Inc()
		return r.finish(out, act, containv1.Action_RESULT_FAILED, d)
	}
	refuse := func(err error) *containv1.Event {
		r.refused(ev.ContainerId, err)
		d.Decision, d.Error = "refused: not a container; nothing frozen", err.Error()
		return r.finish(out, act, containv1.Action_RESULT_FAILED, d)
	}
	if ev.Host != "" && ev.Host != r.cfg.Host {
		r.m.Dropped.WithLabelValues(metrics.StageResponder, "wrong_host").Inc()
		return skip(r.cfg.Decide(ev, Situation{Now: r.now(), Received: recv}).Why), ""
	}
	if err := freezer.RefuseID(ev.ContainerId); err != nil {
		return refuse(err), ""
	}

	r.actMu.Lock()
	defer r.actMu.Unlock()

	sit := Situation{Now: r.now(), Received: recv, Quarantined: r.quarantined[ev.ContainerId], PausesLastMinute: r.pausesLastMinute()}
	var target *freezer.Target
	var locErr error
	if r.cfg.MaxAlertAge <= 0 || ev.WallNs <= 0 || recv.Sub(time.Unix(0, ev.WallNs)) <= r.cfg.MaxAlertAge {
		target, locErr = r.locateProven(ctx, ev.ContainerId)
	}
	if target != nil {
		// Only the keys the operator trusts: the rest may come from the
		// image (an author's "critical" label exempts nothing).
		sit.Labels = r.cfg.Policy.trusted(target.Labels)
		d.Cgroup = firstNonEmpty(target.FreezerV1, target.Cgroup2)
	}
	if rel, ok := r.released[ev.ContainerId]; ok {
		if sit.Now.Sub(rel.At) < r.cfg.ReleaseGrace {
			sit.Released = rel
		} else {
			delete(r.released, ev.ContainerId)
		}
	}
	dec := r.cfg.Decide(ev, sit)
	d.PolicyRule, d.Threshold = dec.Rule, dec.Threshold
	switch {
	case dec.Stale:
		r.staleTotal.Inc()
		r.log.Warn("stale alert skipped", logfields.ContainerID, ev.ContainerId, logfields.AlertID, containv1.FormatID(ev.Id),
			logfields.Age, recv.Sub(time.Unix(0, ev.WallNs)).Round(time.Millisecond), logfields.MaxAlertAge, r.cfg.MaxAlertAge)
	case dec.Breaker:
		r.breakerOpened(sit.PausesLastMinute)
	case dec.Verdict == VerdictPause:
		r.breakerClosed()
	}
	switch dec.Verdict {
	case VerdictSkip:
		return skip(dec.Why), ""
	case VerdictDryRun:
		d.Decision = dec.Why
		return r.finish(out, act, containv1.Action_RESULT_DRY_RUN, d), ""
	}
	if locErr != nil {
		if errors.Is(locErr, freezer.ErrRefused) {
			if err := r.exitedPerEngine(ctx, ev.ContainerId); err != nil {
				return fail("container exited before it could be paused", err), ""
			}
			return refuse(locErr), ""
		}
		if errors.Is(locErr, freezer.ErrExited) {
			return fail("container exited before it could be paused", locErr), ""
		}
		return fail("container not proven: nothing paused", locErr), ""
	}
	if pids, err := freezer.Procs(target); err == nil && slices.Contains(pids, r.selfPid) {
		return skip("never-pause: the container holds this responder's own process"), ""
	}
	if m := freezer.FrozenBy(r.candidates(target), target); m != nil {
		return skip("already frozen (" + m.Name() + "), not by this responder: left as it is"), ""
	}
	return r.pause(ctx, ev, out, act, d, target, recv, dec)
}

// pause records the intent, freezes the proven target and records the
// quarantine. Called with actMu held.
func (r *Responder) pause(ctx context.Context, ev, out *containv1.Event, act *containv1.Action, d *Detail,
	target *freezer.Target, recv time.Time, dec Decision) (*containv1.Event, string) {
	fail := func(decision string, err error) *containv1.Event {
		d.Decision, d.Error = decision, err.Error()
		r.m.Errors.WithLabelValues(metrics.StageResponder, "freeze").Inc()
		return r.finish(out, act, containv1.Action_RESULT_FAILED, d)
	}
	intent, err := r.journal.record(ev, out.Id)
	if err != nil {
		// Pausing matters more than surviving a crash in the next
		// milliseconds: freeze anyway, loudly.
		r.m.Errors.WithLabelValues(metrics.StageResponder, "intent").Inc()
		r.log.Error("recording the intent to pause failed; pausing without it", logfields.ContainerID, ev.ContainerId, logfields.Err, err)
	}
	crashAt(crashAfterIntent)
	vctx, cancel := context.WithTimeout(ctx, r.cfg.VerifyTimeout)
	defer cancel()
	d.ReceivedToFreezeUs = r.now().Sub(recv).Microseconds()
	start := time.Now()
	rep, err := freezer.FreezeReport(vctx, r.methodsFor(target), target)
	done := time.Now()
	m, tried := rep.Method, rep.Tried
	// frozenAt is on r.now's clock (tests move it); containment may
	// precede the method's return (an engine's cgroup2 pre-freeze).
	frozenAt := r.now().Add(-done.Sub(rep.FrozenAt))
	for _, e := range tried {
		d.Fallback = append(d.Fallback, e.Error())
	}
	if err != nil {
		decision := "pause failed; container left running"
		if errors.Is(err, freezer.ErrExited) {
			decision = "container exited before it could be paused"
		}
		return fail(decision, err), intent
	}
	crashAt(crashAfterFreeze)
	if err := r.journal.sync(intent); err != nil {
		r.m.Errors.WithLabelValues(metrics.StageResponder, "intent").Inc()
		r.log.Error("syncing the intent to pause", logfields.ContainerID, ev.ContainerId, logfields.Err, err)
	}
	act.Method = m.Name()
	fellBack := ""
	if len(tried) > 0 {
		r.m.Errors.WithLabelValues(metrics.StageResponder, "freeze_fallback").Inc()
		fellBack = fmt.Sprintf(" by %s after %d other method(s) failed (see fallback)", m.Name(), len(tried))
	}
	d.FreezeUs = rep.FrozenAt.Sub(start).Microseconds()
	d.MethodDoneUs = done.Sub(start).Microseconds()
	if w := triggerWall(ev); w > 0 {
		act.LatencyNs = frozenAt.UnixNano() - w
	}
	d.ReceivedToFrozenUs = frozenAt.Sub(recv).Microseconds()
	if ev.WallNs > 0 {
		d.AlertToFrozenUs = (frozenAt.UnixNano() - ev.WallNs) / 1e3
	}
	d.Decision = fmt.Sprintf("paused and verified frozen%s (%s)", fellBack, dec.Why)
	if r.cfg.Snapshot {
		d.Snapshot = r.snapshot(ctx, target)
	}
	r.pauses = append(r.pauses, frozenAt)
	r.quarantine(ev.ContainerId, ev, target, m, d.Cgroup, frozenAt, out, act)
	return r.finish(out, act, containv1.Action_RESULT_OK, d), intent
}

// pausesLastMinute trims the circuit breaker's window and counts it.
// Called with actMu held.
func (r *Responder) pausesLastMinute() int {
	cut := r.now().Add(-time.Minute)
	i := 0
	for i < len(r.pauses) && !r.pauses[i].After(cut) {
		i++
	}
	r.pauses = r.pauses[i:]
	return len(r.pauses)
}

// breakerOpened logs the circuit breaker opening (once) and counts each
// refusal. Called with actMu held.
func (r *Responder) breakerOpened(paused int) {
	if !r.breakerOpen {
		r.breakerOpen = true
		r.log.Error("CIRCUIT BREAKER OPEN: too many quarantines, alerting only", logfields.PausedLastMinute, paused, logfields.MaxPerMinute, r.cfg.MaxPausesPerMinute)
	}
	r.m.Errors.WithLabelValues(metrics.StageResponder, "circuit_open").Inc()
}

// breakerClosed logs the circuit breaker closing. Called with actMu held.
func (r *Responder) breakerClosed() {
	if r.breakerOpen {
		r.breakerOpen = false
		r.log.Warn("circuit breaker closed: pausing again", logfields.MaxPerMinute, r.cfg.MaxPausesPerMinute)
	}
}

func (r *Responder) snapshot(ctx context.Context, t *freezer.Target) *forensics.Snapshot {
	pids, err := freezer.Procs(t)
	in := forensics.Input{Pids: pids, ProcRoot: r.cfg.ProcRoot, Rootfs: t.Rootfs, Since: t.Created}
	s := forensics.Take(ctx, in, r.cfg.SnapshotLimits)
	if err != nil {
		s.Errors = append(s.Errors, "cgroup.procs: "+err.Error())
	}
	return s
}
