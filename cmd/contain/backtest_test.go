package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containsec/contain/analyzer"
	"github.com/containsec/contain/responder"
	"github.com/containsec/contain/schemas/containv1"
)

// TestBacktestTwoBaselines records a window as the pipeline would (the
// analyzer with a 5 s learning window raises alerts for c1's wget and
// connect and c2's curl; the responder pauses on them), stores it in a
// real ClickHouse, and backtests two candidate baselines for c1's image
// and one candidate configuration on that history: baseline A (the 2 s
// of sleeps c1 learned) changes nothing; baseline B (which also learned
// wget and its peer) makes c1's alerts and pause go away and leaves c2's;
// a configuration with a 1 h learning window makes every alert go.
func TestBacktestTwoBaselines(t *testing.T) {
	t0 := time.Now().Add(-10 * time.Minute).Truncate(time.Second)
	history := replayHistory(t0)
	t.Setenv("CONTAIN_ANALYZER_LEARNING_WINDOW", "5s")
	t.Setenv("CONTAIN_RESPONDER_THRESHOLD", "0.3")
	engine := func(learning time.Duration) *analyzer.Engine {
		cfg := analyzer.DefaultConfig()
		cfg.LearningWindow = learning
		e, err := analyzer.NewEngine(cfg, nil)
		if err != nil {
			t.Fatal(err)
		}
		return e
	}

	// What happened.
	live := engine(5 * time.Second)
	pol := responder.DefaultConfig()
	pol.Host, pol.Threshold = "h1", 0.3
	var recorded []*containv1.Event
	ids := containv1.NewIDGen()
	paused := map[string]bool{}
	pauses := 0
	for _, ev := range history {
		for _, a := range live.Observe(ev) {
			recorded = append(recorded, a)
			at := time.Unix(0, a.WallNs)
			if d := pol.Decide(a, responder.Situation{Now: at, Received: at}); d.Verdict == responder.VerdictPause && !paused[a.ContainerId] {
				paused[a.ContainerId] = true
				pauses++
				recorded = append(recorded, &containv1.Event{Id: ids.Next(), Host: "h1", ContainerId: a.ContainerId, ImageRef: a.ImageRef,
					WallNs: a.WallNs + int64(time.Millisecond), Body: &containv1.Event_Action{Action: &containv1.Action{
						Type: containv1.Action_TYPE_PAUSE, Result: containv1.Action_RESULT_OK, AlertId: a.Id, Score: a.GetAlert().GetScore()}}})
			}
		}
	}
	nAlerts := len(recorded) - pauses
	if nAlerts < 2 || !paused["c1"] || !paused["c2"] {
		t.Fatalf("the recorded window has %d alerts, pauses %v: want alerts and pauses for c1 and c2", nAlerts, paused)
	}
	addr, _ := seedStore(t, append(append([]*containv1.Event{}, history...), recorded...)...)

	// Two candidate baselines for c1's image.
	dir := t.TempDir()
	baseline := func(name string, learning time.Duration, upTo time.Duration) string {
		e := engine(learning)
		var key string
		for _, ev := range history {
			if ev.ContainerId == "c1" && time.Unix(0, ev.WallNs).Before(t0.Add(upTo)) {
				e.Observe(ev)
				key = analyzer.ImageKey(ev)
			}
		}
		if err := e.Lock(key); err != nil {
			t.Fatal(err)
		}
		doc, err := e.Snapshot(key)
		if err != nil {
			t.Fatal(err)
		}
		raw, err := analyzer.MarshalJSONDoc(doc)
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(dir, name+".json")
		if err := os.WriteFile(path, raw, 0o644); err != nil {
			t.Fatal(err)
		}
		return path
	}
	a := baseline("a", 5*time.Second, 5*time.Second)
	b := baseline("b", time.Hour, time.Minute)
	conf := filepath.Join(dir, "candidate.yaml")
	if err := os.WriteFile(conf, []byte("analyzer:\n  learning_window: 1h\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	run := func(args ...string) (string, backtestReport) {
		t.Helper()
		base := []string{"backtest", "--clickhouse", addr, "--from", t0.Add(-time.Second).Format(time.RFC3339)}
		out, err := runCLI(t, append(append(base, args...), "--format", "text")...)
		if err != nil {
			t.Fatalf("backtest %v: %v\n%s", args, err, out)
		}
		t.Logf("backtest %v:\n%s", args, out)
		js, err := runCLI(t, append(append(base, args...), "--format", "json")...)
		if err != nil {
			t.Fatal(err)
		}
		var rep backtestReport
		if err := json.Unmarshal([]byte(js), &rep); err != nil {
			t.Fatalf("json: %v\n%s", err, js)
		}
		return out, rep
	}

	out, rep := run("--baseline", a)
	if rep.Alerts.Recorded != nAlerts || rep.Alerts.Kept != nAlerts || rep.Alerts.Gone != 0 || rep.Alerts.New != 0 ||
		rep.Pauses.Recorded != 2 || rep.Pauses.Kept != 2 || rep.Events != uint64(len(history)) {
		t.Errorf("baseline A: %+v %+v, want every alert and both pauses kept", rep.Alerts, rep.Pauses)
	}
	if !strings.Contains(out, "0 gone, 0 new") {
		t.Errorf("baseline A text:\n%s", out)
	}

	_, rep = run("--baseline", b)
	for _, d := range rep.Diffs {
		a := d.Recorded
		if a == nil {
			a = d.Candidate
		}
		if want := map[string]string{"c1": "gone", "c2": "kept"}[a.ContainerID]; d.Change != want {
			t.Errorf("baseline B: %s alert on %s is %s, want %s", a.ContainerID, strings.Join(a.Reasons, ","), d.Change, want)
		}
	}
	if rep.Alerts.New != 0 || rep.Alerts.Gone == 0 || rep.Pauses.Gone != 1 || rep.Pauses.Kept != 1 {
		t.Errorf("baseline B: %+v %+v, want c1's alerts and pause gone, c2's kept", rep.Alerts, rep.Pauses)
	}

	// The environment overrides a file: unset it so the candidate decides.
	t.Setenv("CONTAIN_ANALYZER_LEARNING_WINDOW", "")
	os.Unsetenv("CONTAIN_ANALYZER_LEARNING_WINDOW")
	_, rep = run("--config", conf)
	if rep.Alerts.Gone != nAlerts || rep.Alerts.Candidate != 0 || rep.Pauses.Gone != 2 {
		t.Errorf("config with a 1h learning window: %+v %+v, want every alert and pause gone", rep.Alerts, rep.Pauses)
	}
}

// FuzzReadBaselineDoc reads arbitrary baseline files: JSON or YAML, a
// document or an error, never a panic.
func FuzzReadBaselineDoc(f *testing.F) {
	f.Add([]byte(`{"key":"demo:1"}`))
	f.Add([]byte("key: demo:1\nphase: locked\n"))
	f.Add([]byte("{"))
	f.Fuzz(func(t *testing.T, raw []byte) {
		if d, err := readBaselineDoc(raw); err == nil && d == nil {
			t.Fatal("no document and no error")
		}
	})
}
