package responder

import (
	"os"
	"strings"
	"testing"
	"time"

	"github.com/containsec/contain/schemas/containv1"
)

// TestDecidePolicy is Config.Decide's table: what is done about an alert
// for a policy and a situation, with no container, NATS or clock.
func TestDecidePolicy(t *testing.T) {
	now := time.Date(2026, 12, 3, 4, 0, 0, 0, time.UTC)
	base := DefaultConfig()
	base.Host = "h1"
	base.Threshold = 0.8
	base.Policy.TrustedLabels = []string{CriticalLabel}
	alert := func(score float64, age time.Duration) *containv1.Event {
		return &containv1.Event{
			Host: "h1", ContainerId: "c1", ContainerName: "web", ImageRef: "registry/web:1",
			WallNs: now.Add(-age).UnixNano(), Kind: containv1.Kind_KIND_ALERT,
			Body: &containv1.Event_Alert{Alert: &containv1.Alert{Score: score, Rule: "exec.unseen",
				Reasons: []*containv1.Reason{{Code: "exec.unseen"}}}},
		}
	}
	sit := Situation{Now: now, Received: now}
	for _, tc := range []struct {
		name    string
		cfg     func(*Config)
		ev      *containv1.Event
		sit     func(*Situation)
		want    Verdict
		why     string
		stale   bool
		breaker bool
	}{
		{name: "above threshold pauses", ev: alert(0.9, time.Second), want: VerdictPause, why: "score 0.9 >= threshold 0.8"},
		{name: "at threshold pauses", ev: alert(0.8, 0), want: VerdictPause},
		{name: "below threshold", ev: alert(0.79, 0), want: VerdictSkip, why: "below threshold 0.8"},
		{name: "other host", ev: func() *containv1.Event { e := alert(1, 0); e.Host = "h2"; return e }(), want: VerdictSkip, why: `host "h2"`},
		{name: "stale", ev: alert(1, 3*time.Minute), want: VerdictSkip, why: "stale alert", stale: true},
		{name: "stale check off", cfg: func(c *Config) { c.MaxAlertAge = 0 }, ev: alert(1, time.Hour), want: VerdictPause},
		{name: "just within max age", ev: alert(1, 2*time.Minute), want: VerdictPause},
		{name: "rule lowers threshold", cfg: func(c *Config) {
			c.Policy.Rules = []Rule{{Name: "web", Scope: Scope{Image: "registry/web:*"}, Threshold: 0.5}}
		}, ev: alert(0.6, 0), want: VerdictPause},
		{name: "rule raises threshold", cfg: func(c *Config) {
			c.Policy.Rules = []Rule{{Name: "strict", Scope: Scope{ContainerName: "web"}, Threshold: 0.95}}
		}, ev: alert(0.9, 0), want: VerdictSkip, why: "below threshold 0.95"},
		{name: "rule dry run", cfg: func(c *Config) {
			c.Policy.Rules = []Rule{{Scope: Scope{AlertRule: "exec.*"}, Threshold: 0.5, DryRun: true}}
		}, ev: alert(0.9, 0), want: VerdictDryRun, why: "dry run: would pause"},
		{name: "global dry run", cfg: func(c *Config) { c.DryRun = true }, ev: alert(1, 0), want: VerdictDryRun},
		{name: "allowlisted", cfg: func(c *Config) { c.Policy.Allow = []Scope{{ReasonCode: "exec.*"}} },
			ev: alert(1, 0), want: VerdictSkip, why: "allowlisted by policy.allow[0]"},
		{name: "trusted critical label", ev: alert(1, 0), sit: func(s *Situation) { s.Labels = map[string]string{CriticalLabel: "true"} },
			want: VerdictSkip, why: "never-pause: container labelled"},
		{name: "never pause id", cfg: func(c *Config) { c.Policy.NeverPauseIDs = []string{"c*"} }, ev: alert(1, 0), want: VerdictSkip, why: "contain's own"},
		{name: "within release grace", ev: alert(1, 0), sit: func(s *Situation) {
			s.Released = OperatorRelease{At: now.Add(-30 * time.Second), Actor: "alice/root", Reason: "false positive"}
		}, want: VerdictSkip, why: "released by alice/root"},
		{name: "release grace over", ev: alert(1, 0), sit: func(s *Situation) {
			s.Released = OperatorRelease{At: now.Add(-3 * time.Minute), Actor: "alice/root"}
		}, want: VerdictPause},
		{name: "already quarantined", ev: alert(1, 0), sit: func(s *Situation) { s.Quarantined = &Quarantine{AlertID: "a1", Method: "m"} },
			want: VerdictSkip, why: "already quarantined"},
		{name: "breaker open", ev: alert(1, 0), sit: func(s *Situation) { s.PausesLastMinute = 10 }, want: VerdictSkip, why: "circuit breaker open", breaker: true},
		{name: "breaker below max", ev: alert(1, 0), sit: func(s *Situation) { s.PausesLastMinute = 9 }, want: VerdictPause},
		{name: "breaker off", cfg: func(c *Config) { c.MaxPausesPerMinute = 0 }, ev: alert(1, 0), sit: func(s *Situation) { s.PausesLastMinute = 100 }, want: VerdictPause},
		{name: "dry run before breaker", cfg: func(c *Config) { c.DryRun = true }, ev: alert(1, 0), sit: func(s *Situation) { s.PausesLastMinute = 100 }, want: VerdictDryRun},
		{name: "below threshold before grace", ev: alert(0.1, 0), sit: func(s *Situation) { s.Released = OperatorRelease{At: now} }, want: VerdictSkip, why: "below threshold"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := base
			if tc.cfg != nil {
				tc.cfg(&cfg)
			}
			s := sit
			if tc.sit != nil {
				tc.sit(&s)
			}
			d := cfg.Decide(tc.ev, s)
			if d.Verdict != tc.want || d.Stale != tc.stale || d.Breaker != tc.breaker {
				t.Fatalf("verdict %v stale %v breaker %v (%q), want %v stale %v breaker %v", d.Verdict, d.Stale, d.Breaker, d.Why, tc.want, tc.stale, tc.breaker)
			}
			if !strings.Contains(d.Why, tc.why) {
				t.Fatalf("why %q does not say %q", d.Why, tc.why)
			}
		})
	}
}

// FuzzIntent: an intent file decodes to an alert about the container it
// names, or fails; never panics.
func FuzzIntent(f *testing.F) {
	j := &journal{dir: f.TempDir()}
	ev := &containv1.Event{ContainerId: "c1", Kind: containv1.Kind_KIND_ALERT, Body: &containv1.Event_Alert{Alert: &containv1.Alert{Score: 1}}}
	p, err := j.record(ev, []byte{1, 2, 3})
	if err != nil {
		f.Fatal(err)
	}
	b, err := os.ReadFile(p)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(b)
	f.Add([]byte(`{"container_id":"x","alert":""}`))
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		ev, err := decodeIntent(b)
		if err == nil && (ev.ContainerId == "" || ev.GetAlert() == nil) {
			t.Fatalf("accepted an intent without a container's alert: %v", ev)
		}
	})
}
