package responder

import (
	"strings"
	"testing"

	"github.com/containsec/contain/internal/freezer"
	"github.com/containsec/contain/schemas/containv1"
)

func TestConfigValidate(t *testing.T) {
	ok := DefaultConfig()
	ok.Host = "h"
	if err := ok.Validate(); err != nil {
		t.Fatalf("default config with a host: %v", err)
	}
	for key, edit := range map[string]func(*Config){
		"responder.host":                      func(c *Config) { c.Host = " " },
		"responder.threshold":                 func(c *Config) { c.Threshold = -1 },
		"responder.methods":                   func(c *Config) { c.Methods = []string{"docker"} },
		"responder.docker_methods":            func(c *Config) { c.DockerMethods = []string{freezer.MethodContainerdPause} },
		"responder.containerd_methods":        func(c *Config) { c.ContainerdMethods = []string{"nope"} },
		"responder.engine_timeout":            func(c *Config) { c.EngineTimeout = c.VerifyTimeout },
		"responder.docker_host":               func(c *Config) { c.DockerHost = "/run/docker.sock" },
		"responder.verify_timeout":            func(c *Config) { c.VerifyTimeout = 0 },
		"responder.max_pauses_per_minute":     func(c *Config) { c.MaxPausesPerMinute = -1 },
		"responder.operator_keys":             func(c *Config) { c.OperatorKeys = []string{"operator:not-a-key"} },
		"responder.snapshot_limits":           func(c *Config) { c.SnapshotLimits.MaxFiles = 0 },
		"responder.policy.rules[0].scope":     func(c *Config) { c.Policy.Rules = []Rule{{Scope: Scope{Image: "["}}} },
		"responder.policy.allow[0]":           func(c *Config) { c.Policy.Allow = []Scope{{ContainerName: "[x"}} },
		"responder.policy.never_pause_ids[0]": func(c *Config) { c.Policy.NeverPauseIDs = []string{""} },
		"responder.policy.allow[0].labels":    func(c *Config) { c.Policy.Allow = []Scope{{Labels: map[string]string{"team": "x"}}} },
		"responder.policy.trusted_labels[0]":  func(c *Config) { c.Policy.TrustedLabels = []string{" "} },
		"responder.protect_pids[0]":           func(c *Config) { c.ProtectPids = []int{0} },
		"responder.protect_cgroups[0]":        func(c *Config) { c.ProtectCgroups = []string{"system.slice"} },
		"responder.protect_addrs":             func(c *Config) { c.ProtectAddrs = []string{"nats://nohost"} },
	} {
		c := ok
		edit(&c)
		err := c.Validate()
		if err == nil || !strings.HasPrefix(err.Error(), key) {
			t.Errorf("%s: got %v", key, err)
		}
	}
}

func TestScopeMatches(t *testing.T) {
	ev := &containv1.Event{ContainerId: "c1", ContainerName: "web-1", ImageRef: "reg/web:2", Kind: containv1.Kind_KIND_ALERT,
		Body: &containv1.Event_Alert{Alert: &containv1.Alert{Rule: "exec.unseen", Reasons: []*containv1.Reason{{Code: "exec.unseen"}, {Code: "net.new_peer"}}}}}
	labels := map[string]string{"team": "payments"}
	for _, tc := range []struct {
		s    Scope
		want bool
	}{
		{Scope{}, true},
		{Scope{Image: "reg/web:*"}, true},
		{Scope{Image: "reg/db:*"}, false},
		{Scope{ReasonCode: "net.*"}, true},
		{Scope{ReasonCode: "file.*"}, false},
		{Scope{Labels: map[string]string{"team": "pay*"}}, true},
		{Scope{Labels: map[string]string{"team": "search"}}, false},
		{Scope{Labels: map[string]string{"absent": "*"}}, false},
		{Scope{ContainerName: "web-*", AlertRule: "exec.*"}, true},
	} {
		if got := tc.s.Matches(ev, labels); got != tc.want {
			t.Errorf("%s matches = %v", tc.s, got)
		}
	}
}

func FuzzParseReleaseRequest(f *testing.F) {
	f.Add([]byte(`{"container_id":"c1","actor":"alice","reason":"fp"}`))
	f.Add([]byte(`{"container_id":"../../etc","actor":"a","reason":"r"}`))
	f.Add([]byte(`{"container_id":"c1"}`))
	f.Add([]byte(`{`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, data []byte) {
		req, err := ParseReleaseRequest(data)
		if err != nil {
			return
		}
		if req.Reason == "" || strings.ContainsAny(req.ContainerID, "/\x00") || req.ContainerID == ".." {
			t.Fatalf("accepted %+v", req)
		}
	})
}

func TestAlertReason(t *testing.T) {
	a := &containv1.Alert{Rule: "r", Reasons: []*containv1.Reason{{Code: "exec.unseen", Message: "/bin/nc"}, {Message: "odd"}}}
	if got := alertReason(a); got != "exec.unseen: /bin/nc; odd" {
		t.Errorf("%q", got)
	}
	if got := alertReason(&containv1.Alert{Rule: "r"}); got != "r" {
		t.Errorf("%q", got)
	}
}

// TestSpoofedCriticalLabel: a critical label the operator did not trust
// (set by an image's LABEL, say) exempts nothing and changes no threshold;
// a trusted one does.
func TestSpoofedCriticalLabel(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Host = "h"
	alert := &containv1.Event{ContainerId: "c1", Kind: containv1.Kind_KIND_ALERT,
		Body: &containv1.Event_Alert{Alert: &containv1.Alert{Score: 0.9}}}
	spoofed := map[string]string{CriticalLabel: "true", "io.contain.image.digest": "sha256:" + strings.Repeat("0", 64)}
	if why := cfg.neverPause(alert, cfg.Policy.trusted(spoofed)); why != "" {
		t.Fatalf("default policy exempts an untrusted label: %s", why)
	}
	if inert := cfg.Policy.InertNeverPauseLabels(); len(inert) != 1 || inert[0] != CriticalLabel {
		t.Fatalf("inert never-pause labels %v", inert)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	cfg.Policy.TrustedLabels = []string{CriticalLabel}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	if why := cfg.neverPause(alert, cfg.Policy.trusted(spoofed)); !strings.Contains(why, "never-pause") {
		t.Fatalf("trusted critical label: %q", why)
	}
	if got := cfg.Policy.trusted(spoofed); len(got) != 1 {
		t.Fatalf("trusted kept %v", got)
	}
}
