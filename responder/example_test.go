package responder

import (
	"fmt"

	"github.com/containsec/contain/schemas/containv1"
)

// A policy scope: web images run with a lower threshold in dry run, and a
// container labelled critical is never paused.
func ExampleConfig_policy() {
	cfg := DefaultConfig()
	cfg.Host = "node-1"
	cfg.Policy.TrustedLabels = []string{CriticalLabel}
	cfg.Policy.NeverPauseLabels = map[string]string{CriticalLabel: "true"}
	cfg.Policy.Rules = []Rule{{Name: "web-canary", Scope: Scope{Image: "registry.example/web:*"}, Threshold: 0.5, DryRun: true}}
	fmt.Println(cfg.Validate())

	alert := &containv1.Event{ContainerId: "c1", ImageRef: "registry.example/web:2", Kind: containv1.Kind_KIND_ALERT,
		Body: &containv1.Event_Alert{Alert: &containv1.Alert{Score: 0.6}}}
	eff := cfg.effective(alert, nil)
	fmt.Println(eff.rule, eff.threshold, eff.dryRun)
	fmt.Println(cfg.neverPause(alert, map[string]string{CriticalLabel: "true"}))
	// Output:
	// <nil>
	// web-canary 0.5 true
	// never-pause: container labelled io.contain.critical=true
}

func ExampleParseReleaseRequest() {
	_, err := ParseReleaseRequest([]byte(`{"container_id":"../../etc","actor":"alice","reason":"fp"}`))
	fmt.Println(err)
	// The body travels signed (auth.Signed); the responder sets Actor from
	// the signature, and the note is only recorded with the reason.
	req, err := ParseReleaseRequest([]byte(`{"container_id":"web-1","reason":"false positive","note":"ticket 42"}`))
	fmt.Println(req.ContainerID, req.Reason, req.Note, err)
	// Output:
	// release request: invalid container_id "../../etc"
	// web-1 false positive ticket 42 <nil>
}
