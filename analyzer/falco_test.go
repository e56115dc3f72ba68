package analyzer

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/containsec/contain/schemas/containv1"
)

func TestFalcoJSON(t *testing.T) {
	e := newEngine(t, testConfig(), nil)
	learn(e, "c1")
	out := e.Observe(execEv("c1", sec(5), "/bin/sh", "sh", "-c", "id"))
	raw, err := FalcoJSON(out[0])
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := json.Unmarshal(raw, &got); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"rule", "priority", "output", "output_fields", "time", "hostname", "source", "tags"} {
		if _, ok := got[k]; !ok {
			t.Errorf("missing %q in %s", k, raw)
		}
	}
	if got["priority"] != "Critical" || got["rule"] != "Shell spawned by a service in container" {
		t.Errorf("priority/rule: %v %v", got["priority"], got["rule"])
	}
	if ts, err := time.Parse(time.RFC3339Nano, got["time"].(string)); err != nil || ts.UnixNano() != sec(5) {
		t.Errorf("time %v: %v", got["time"], err)
	}
	f := got["output_fields"].(map[string]any)
	if f["container.id"] != "c1" || f["proc.exepath"] != "/bin/sh" || f["container.image.repository"] != "demo" {
		t.Errorf("output_fields %v", f)
	}
	if !strings.Contains(got["output"].(string), `"/bin/sh" was never executed`) {
		t.Errorf("output %v", got["output"])
	}
	if _, err := FalcoJSON(execEv("c1", sec(1), "/bin/x")); err == nil {
		t.Error("non-alert accepted")
	}
}

func ExampleFalcoJSON() {
	e, _ := NewEngine(testConfig(), nil)
	ev := func(s float64, fn string) *containv1.Event {
		x := execEv("web-1", sec(s), fn)
		x.Id = make([]byte, 16)
		x.Id[15] = byte(s)
		return x
	}
	e.Observe(ev(0, "/bin/httpd"))
	out := e.Observe(ev(5, "/bin/wget"))
	f, _ := ToFalco(out[0])
	fmt.Println(f.Priority, "|", f.Rule, "|", f.Tags)
	fmt.Println(f.Output)
	// Output:
	// Critical | Unseen executable in container | [container contain mitre_T1059 mitre_T1105]
	// 22:13:25.000000000: Critical: "/bin/wget" was never executed by image demo:1 during learning (learned 1 executables over 3s); remote copy tool "wget" ran (container_id=web-1 container_name=web-1-name image=demo:1 score=0.92)
}
