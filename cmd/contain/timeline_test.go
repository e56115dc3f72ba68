package main

import (
	"encoding/json"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/containsec/contain/schemas/containv1"
)

// TestTimeline stores a container's story in a real ClickHouse (its shell
// forks a child that runs wget, connects out and writes a file; an alert
// and a pause follow) and prints it: the process tree puts wget under the
// shell with its alert, and the timeline interleaves events, the alert and
// the action in time order, as text and JSON.
func TestTimeline(t *testing.T) {
	ids := containv1.NewIDGen()
	t0 := time.Now().Add(-time.Hour).Truncate(time.Second)
	env := func(at time.Duration, kind containv1.Kind) *containv1.Event {
		return &containv1.Event{Id: ids.Next(), Host: "h1", ContainerId: "c0ffee0123456789", ContainerName: "web-1",
			ImageRef: "demo:1", Kind: kind, WallNs: t0.Add(at).UnixNano(), SchemaVersion: containv1.SchemaVersion}
	}
	sh := &containv1.Process{Tgid: 1, Pid: 1, Comm: "sh"}
	wget := &containv1.Process{Tgid: 20, Pid: 20, Ppid: 1, Comm: "wget"}
	var evs []*containv1.Event
	e := env(0, containv1.Kind_KIND_EXEC)
	e.Body = &containv1.Event_Exec{Exec: &containv1.Exec{Proc: sh, Filename: "/bin/sh", Argv: []string{"sh", "-c", "serve"}}}
	evs = append(evs, e)
	e = env(time.Second, containv1.Kind_KIND_PROCESS)
	e.Body = &containv1.Event_Process{Process: &containv1.ProcessLifecycle{Proc: sh, Op: containv1.ProcessLifecycle_OP_FORK, ChildTgid: 20}}
	evs = append(evs, e)
	trigger := env(2*time.Second, containv1.Kind_KIND_EXEC)
	trigger.Body = &containv1.Event_Exec{Exec: &containv1.Exec{Proc: wget, Filename: "/bin/wget", Argv: []string{"wget", "http://203.0.113.9/x"}}}
	evs = append(evs, trigger)
	peer := netip.MustParseAddr("::ffff:203.0.113.9").As16()
	e = env(3*time.Second, containv1.Kind_KIND_NETWORK)
	e.Body = &containv1.Event_Network{Network: &containv1.Network{Proc: wget, Op: containv1.Network_OP_CONNECT, Protocol: containv1.Network_PROTOCOL_TCP,
		RemoteAddr: peer[:], RemotePort: 80}}
	evs = append(evs, e)
	e = env(4*time.Second, containv1.Kind_KIND_FILE)
	e.Body = &containv1.Event_File{File: &containv1.File{Proc: wget, Op: containv1.File_OP_OPEN_WRITE, Path: "/tmp/x", Flags: 0o101}}
	evs = append(evs, e)
	e = env(5*time.Second, containv1.Kind_KIND_PROCESS)
	e.Body = &containv1.Event_Process{Process: &containv1.ProcessLifecycle{Proc: wget, Op: containv1.ProcessLifecycle_OP_EXIT, ExitCode: 0}}
	evs = append(evs, e)
	alert := env(2*time.Second+500*time.Millisecond, containv1.Kind_KIND_ALERT)
	alert.Body = &containv1.Event_Alert{Alert: &containv1.Alert{Score: 0.9, Rule: "baseline.deviation", Priority: "Critical",
		Reasons: []*containv1.Reason{{Code: "exec.unseen", Message: "unseen executable /bin/wget", Score: 0.9}}, Trigger: trigger}}
	action := env(2*time.Second+600*time.Millisecond, containv1.Kind_KIND_ACTION)
	action.Body = &containv1.Event_Action{Action: &containv1.Action{Type: containv1.Action_TYPE_PAUSE, Result: containv1.Action_RESULT_OK,
		Actor: "responder", Method: "freezer", AlertId: alert.Id}}
	// Another container's events stay out.
	other := env(2*time.Second, containv1.Kind_KIND_EXEC)
	other.ContainerId, other.ContainerName = "other", "other"
	other.Body = &containv1.Event_Exec{Exec: &containv1.Exec{Proc: sh, Filename: "/bin/other"}}
	addr, _ := seedStore(t, append(evs, alert, action, other)...)

	aid := uuid.UUID(alert.Id).String()
	out, err := runCLI(t, "timeline", "c0ffee01", "--clickhouse", addr, "--around", aid, "--window", "1m")
	if err != nil {
		t.Fatalf("timeline: %v\n%s", err, out)
	}
	t.Logf("\n%s", out)
	for _, want := range []string{
		"└─ 1 sh  /bin/sh sh -c serve",
		"   └─ 20 wget  /bin/wget wget http://203.0.113.9/x  [exit 0]  !! 1 alert(s)",
		"!! alert     20/wget              0.90 Critical baseline.deviation: unseen executable /bin/wget",
		"=> action",
		"pause ok by responder freezer",
		"connect tcp 203.0.113.9:80",
		"open_write /tmp/x",
		"6 events, 1 alerts, 1 actions",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("timeline lacks %q", want)
		}
	}
	if strings.Contains(out, "/bin/other") {
		t.Error("timeline shows another container's exec")
	}
	if i, j := strings.Index(out, "!! alert"), strings.Index(out, "connect tcp"); i < 0 || j < 0 || i > j {
		t.Error("the alert (t+2.5s) is not before the connect (t+3s)")
	}

	// Without --around: the window ends at the last event; JSON.
	out, err = runCLI(t, "timeline", "web-1", "--clickhouse", addr, "--window", "3s", "--format", "json")
	if err != nil {
		t.Fatalf("timeline json: %v\n%s", err, out)
	}
	var tl timeline
	if err := json.Unmarshal([]byte(out), &tl); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, out)
	}
	// Last event at t+5s: the window [t+2s, t+6s) holds 4 events, the alert and the action.
	if len(tl.Entries) != 6 || len(tl.Alerts) != 1 || len(tl.Actions) != 1 {
		t.Errorf("json: %d entries, %d alerts, %d actions; want 6, 1, 1", len(tl.Entries), len(tl.Alerts), len(tl.Actions))
	}
	if _, err := runCLI(t, "timeline", "nosuch", "--clickhouse", addr); err == nil || !strings.Contains(err.Error(), "no events") {
		t.Errorf("unknown container: %v", err)
	}
}
