package responder

import (
	"fmt"
	"path"
	"sort"
	"strings"

	"github.com/containsec/contain/schemas/containv1"
)

// glob matches an empty pattern to anything.
func glob(pattern, s string) bool {
	if pattern == "" {
		return true
	}
	ok, _ := path.Match(pattern, s)
	return ok
}

// Matches reports whether the alert event ev, on a container with the
// runtime labels labels, is in the scope.
func (s Scope) Matches(ev *containv1.Event, labels map[string]string) bool {
	a := ev.GetAlert()
	if !glob(s.Image, ev.ImageRef) || !glob(s.ImageDigest, ev.ImageDigest) ||
		!glob(s.ContainerName, ev.ContainerName) || !glob(s.ContainerID, ev.ContainerId) ||
		!glob(s.AlertRule, a.GetRule()) {
		return false
	}
	if s.ReasonCode != "" {
		found := false
		for _, r := range a.GetReasons() {
			if glob(s.ReasonCode, r.GetCode()) {
				found = true
				break
			}
		}
		if !found {
			return false
		}
	}
	for k, v := range s.Labels {
		if got, ok := labels[k]; !ok || !glob(v, got) {
			return false
		}
	}
	return true
}

func (s Scope) String() string {
	var parts []string
	add := func(k, v string) {
		if v != "" {
			parts = append(parts, k+"="+v)
		}
	}
	add("image", s.Image)
	add("image_digest", s.ImageDigest)
	add("container_name", s.ContainerName)
	add("container_id", s.ContainerID)
	add("alert_rule", s.AlertRule)
	add("reason_code", s.ReasonCode)
	keys := make([]string, 0, len(s.Labels))
	for k := range s.Labels {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		parts = append(parts, "label:"+k+"="+s.Labels[k])
	}
	if len(parts) == 0 {
		return "{*}"
	}
	return "{" + strings.Join(parts, " ") + "}"
}

// effective is what the policy says for one alert.
type effective struct {
	rule      string // name of the rule that applied, "" for the defaults
	threshold float64
	dryRun    bool
}

func (c *Config) effective(ev *containv1.Event, labels map[string]string) effective {
	for i, r := range c.Policy.Rules {
		if r.Scope.Matches(ev, labels) {
			name := r.Name
			if name == "" {
				name = fmt.Sprintf("rules[%d]", i)
			}
			return effective{rule: name, threshold: r.Threshold, dryRun: r.DryRun || c.DryRun}
		}
	}
	return effective{threshold: c.Threshold, dryRun: c.DryRun}
}

// neverPause returns why the container must not be paused, or "".
func (c *Config) neverPause(ev *containv1.Event, labels map[string]string) string {
	for i, s := range c.Policy.Allow {
		if s.Matches(ev, labels) {
			return fmt.Sprintf("allowlisted by policy.allow[%d] %s", i, s)
		}
	}
	keys := make([]string, 0, len(c.Policy.NeverPauseLabels))
	for k := range c.Policy.NeverPauseLabels {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if v, ok := labels[k]; ok && glob(c.Policy.NeverPauseLabels[k], v) {
			return fmt.Sprintf("never-pause: container labelled %s=%s", k, v)
		}
	}
	for _, p := range c.Policy.NeverPauseIDs {
		if glob(p, ev.ContainerId) {
			return fmt.Sprintf("never-pause: container id matches %q (contain's own)", p)
		}
	}
	return ""
}
