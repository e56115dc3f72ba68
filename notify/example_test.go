package notify_test

import (
	"fmt"
	"time"

	"github.com/containsec/contain/internal/falcojson"
	"github.com/containsec/contain/notify"
)

// A quarantine as Falcosidekick receives it.
func ExampleFalcoEvent() {
	n := &notify.Notification{ID: "6f1c", Kind: notify.KindQuarantine, Time: time.Date(2026, 12, 3, 4, 10, 0, 0, time.UTC),
		Host: "node-a", Summary: "contain quarantine: container web on node-a", Priority: "Critical", Rule: "exec.unseen", Score: 0.95,
		Container: notify.Container{ID: "0123abcd", Name: "web", Pod: "web-7d4b9c8f6d-x2x9q", Namespace: "shop"},
		Mitre:     []string{"T1059"}, ReleaseCommand: "contain release 0123abcd --reason 'REASON'"}
	b, err := falcojson.Marshal(notify.FalcoEvent(n))
	if err != nil {
		panic(err)
	}
	fmt.Println(string(b))
	// Output:
	// {"uuid":"6f1c","output":"contain quarantine: container web on node-a","priority":"Critical","rule":"exec.unseen","time":"2026-12-03T04:10:00Z","output_fields":{"contain.id":"6f1c","contain.kind":"quarantine","contain.release_command":"contain release 0123abcd --reason 'REASON'","contain.score":0.95,"container.id":"0123abcd","container.name":"web","evt.time.iso8601":"2026-12-03T04:10:00Z","k8s.ns.name":"shop","k8s.pod.name":"web-7d4b9c8f6d-x2x9q"},"source":"contain","tags":["contain","quarantine","T1059"],"hostname":"node-a"}
}
