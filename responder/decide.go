package responder

import (
	"fmt"
	"time"

	"github.com/containsec/contain/schemas/containv1"
)

// Verdict is what the responder does about one alert.
type Verdict int

const (
	// VerdictSkip records the alert as SKIPPED.
	VerdictSkip Verdict = iota
	// VerdictDryRun records that it would have paused (DRY_RUN).
	VerdictDryRun
	// VerdictPause pauses the container, if it is proven to be one.
	VerdictPause
)

// Situation is what the responder knows when it decides on an alert: the
// state that Decide reads and never changes.
type Situation struct {
	// Now is the decision time; Received is when the alert arrived.
	Now, Received time.Time
	// Labels are the container's trusted runtime labels (nil when it was
	// not located).
	Labels map[string]string
	// Released is the container's last operator release within
	// ReleaseGrace, if any (zero At: none).
	Released OperatorRelease
	// Quarantined is set when this responder holds the container paused.
	Quarantined *Quarantine
	// PausesLastMinute counts this responder's pauses in the last minute
	// (the circuit breaker's window).
	PausesLastMinute int
}

// OperatorRelease is an operator's release of a container, as release grace reads
// it.
type OperatorRelease struct {
	At            time.Time
	Actor, Reason string
}

// Decision is Decide's answer.
type Decision struct {
	Verdict Verdict
	// Why says it in words (the action's detail.decision for a skip).
	Why string
	// Rule is the policy rule that set Threshold ("" for the defaults).
	Rule      string
	Threshold float64
	// Stale: the alert was older than MaxAlertAge when it arrived.
	Stale bool
	// Breaker: the circuit breaker refused the pause.
	Breaker bool
}

// Decide is the responder's policy for one alert, a pure function of the
// configuration, the alert and the situation: host, age, threshold
// (policy rules), never-pause exemptions, release grace, the quarantine
// list, dry run and the circuit breaker, in that order. A VerdictPause
// still needs the container proven (freezer.Prove) before it is frozen.
func (c Config) Decide(ev *containv1.Event, s Situation) Decision {
	d := Decision{Threshold: c.Threshold}
	skip := func(why string) Decision {
		d.Verdict, d.Why = VerdictSkip, why
		return d
	}
	if ev.Host != "" && ev.Host != c.Host {
		return skip(fmt.Sprintf("alert is about host %q, this responder acts on %q", ev.Host, c.Host))
	}
	if c.MaxAlertAge > 0 && ev.WallNs > 0 {
		if age := s.Received.Sub(time.Unix(0, ev.WallNs)); age > c.MaxAlertAge {
			d.Stale = true
			return skip(fmt.Sprintf("stale alert: made %s before it arrived (max_alert_age %s); recorded, not acted on",
				age.Round(time.Millisecond), c.MaxAlertAge))
		}
	}
	eff := c.effective(ev, s.Labels)
	d.Rule, d.Threshold = eff.rule, eff.threshold
	score := ev.GetAlert().GetScore()
	if score < eff.threshold {
		return skip(fmt.Sprintf("score %.3g below threshold %.3g", score, eff.threshold))
	}
	if why := c.neverPause(ev, s.Labels); why != "" {
		return skip(why)
	}
	if rel := s.Released; !rel.At.IsZero() {
		if since := s.Now.Sub(rel.At); since < c.ReleaseGrace {
			return skip(fmt.Sprintf("released by %s %s ago (%q); alerts within release_grace %s are recorded, not acted on",
				rel.Actor, since.Round(time.Millisecond), rel.Reason, c.ReleaseGrace))
		}
	}
	if q := s.Quarantined; q != nil {
		return skip(fmt.Sprintf("already quarantined by this responder since %s (alert %s, %s)", q.Since.Format(time.RFC3339Nano), q.AlertID, q.Method))
	}
	if eff.dryRun {
		d.Verdict = VerdictDryRun
		d.Why = fmt.Sprintf("dry run: would pause (score %.3g >= threshold %.3g)", score, eff.threshold)
		return d
	}
	if max := c.MaxPausesPerMinute; max > 0 && s.PausesLastMinute >= max {
		d.Breaker = true
		return skip(fmt.Sprintf("circuit breaker open: %d containers paused in the last minute (max %d); alert only", s.PausesLastMinute, max))
	}
	d.Verdict = VerdictPause
	d.Why = fmt.Sprintf("score %.3g >= threshold %.3g", score, eff.threshold)
	return d
}
