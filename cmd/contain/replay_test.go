package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/containsec/contain/analyzer"
	"github.com/containsec/contain/internal/bus"
	"github.com/containsec/contain/schemas/containv1"
)

// TestReplay records a history on CONTAIN_EVENTS (a container's normal
// execs, then wget), then replays it: as JSON lines, and re-scored under
// two learning windows, which a backtest must tell apart.
func TestReplay(t *testing.T) {
	a := deployNATS(t)
	url := a.url
	nc, js := a.conn("enricher")
	ids := containv1.NewIDGen()
	t0 := time.Now().Add(-time.Hour).UnixNano()
	exec := func(at time.Duration, file string) *containv1.Event {
		return &containv1.Event{Id: ids.Next(), Host: "h1", ContainerId: "c1", ImageRef: "demo:1", ImageDigest: "sha256:" + strings.Repeat("e", 64),
			Kind: containv1.Kind_KIND_EXEC, WallNs: t0 + int64(at), SchemaVersion: containv1.SchemaVersion,
			Body: &containv1.Event_Exec{Exec: &containv1.Exec{Filename: file, Argv: []string{file}}}}
	}
	var history []*containv1.Event
	for i := range 20 {
		history = append(history, exec(time.Duration(i)*100*time.Millisecond, "/bin/sleep"))
	}
	history = append(history, exec(30*time.Second, "/bin/wget"))
	p := bus.NewProducer("h1", "enricher")
	for i := 0; i < len(history); i += 7 {
		// The last batch as a partitioned enricher publishes it
		// (analyzer.partitions > 1): replay reads both.
		subject := containv1.EventsSubject("h1")
		if i+7 >= len(history) {
			subject = containv1.EventsPartitionSubject("h1", 2)
		}
		if err := bus.Publish(context.Background(), js, subject, p.Batch(history[i:min(i+7, len(history))])); err != nil {
			t.Fatal(err)
		}
	}
	if err := nc.Publish(containv1.EventsSubject("h1"), []byte("not a batch")); err != nil {
		t.Fatal(err)
	}
	// A fleet batch (enricher.fleet_batches): a part of h1 (two more
	// learned execs of c1) and a part of h2, on the fleet subject.
	fleet := bus.AppendFleetHeader(nil, "enricher", "replay-fleet", 0)
	for _, host := range []string{"h1", "h2"} {
		var evs []*containv1.Event
		for i := range 2 {
			ev := exec(time.Duration(i)*100*time.Millisecond+50*time.Millisecond, "/bin/sleep")
			ev.Host, ev.ContainerId = host, map[string]string{"h1": "c1", "h2": "c2"}[host]
			evs = append(evs, ev)
		}
		data, err := bus.Encode(bus.NewProducer(host, "enricher").Batch(evs))
		if err != nil {
			t.Fatal(err)
		}
		fleet = bus.AppendFleetPart(fleet, data)
	}
	fleetMsg, err := bus.NewEncodedMsg(containv1.FleetSubject(1), "enricher", "replay-fleet", 0, containv1.SchemaVersionFleet, fleet)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.PublishMsg(context.Background(), fleetMsg); err != nil {
		t.Fatal(err)
	}
	const fleetEvents = 4

	out, err := runCLI(t, "replay", "--nats-url", url)
	if err != nil {
		t.Fatal(err)
	}
	// One host's events, however they were published: on its subject, on
	// its partitions' subjects (analyzer.partitions > 1), or in a fleet
	// batch's part; another host's part is not among them.
	for _, partitions := range []string{"", "4"} {
		t.Run("partitions="+partitions, func(t *testing.T) {
			if partitions != "" {
				t.Setenv("CONTAIN_ANALYZER_PARTITIONS", partitions)
			}
			out, err := runCLI(t, "replay", "--nats-url", url, "--event-host", "h1")
			if err != nil {
				t.Fatal(err)
			}
			if n := strings.Count(out, `"containerId":"c1"`); n != len(history)+fleetEvents/2 {
				t.Fatalf("--event-host h1: %d events, want %d:\n%s", n, len(history)+fleetEvents/2, out)
			}
			if strings.Contains(out, `"containerId":"c2"`) {
				t.Fatalf("--event-host h1 gave h2's events:\n%s", out)
			}
		})
	}
	lines := 0
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		if !strings.HasPrefix(l, "{") {
			continue
		}
		var ev map[string]any
		if err := json.Unmarshal([]byte(l), &ev); err != nil {
			t.Fatalf("line is not JSON: %v: %s", err, l)
		}
		lines++
	}
	if lines != len(history)+fleetEvents || !strings.Contains(out, "1 malformed messages skipped") {
		t.Fatalf("dump: %d JSON lines for %d events:\n%s", lines, len(history)+fleetEvents, out)
	}

	t.Setenv("CONTAIN_ANALYZER_LEARNING_WINDOW", "5s")
	out, err = runCLI(t, "replay", "--nats-url", url, "--rescore")
	if err != nil || strings.Count(out, "exec.unseen") != 1 || !strings.Contains(out, "/bin/wget") || !strings.Contains(out, "re-scored: 1 alerts") {
		t.Fatalf("rescore with a 5s window: %v\n%s", err, out)
	}
	// The same history under a longer learning window: wget is learned.
	t.Setenv("CONTAIN_ANALYZER_LEARNING_WINDOW", "1m")
	out, err = runCLI(t, "replay", "--nats-url", url, "--rescore")
	if err != nil || strings.Contains(out, "exec.unseen") || !strings.Contains(out, "re-scored: 0 alerts") {
		t.Fatalf("rescore with a 1m window: %v\n%s", err, out)
	}
}

// replayHistory is a recorded window: container c1 learns 20 execs of
// sleep over 2 s, then runs wget and connects out 30 s later; container c2
// (another image) does the same with curl. It is stored in ClickHouse
// and on CONTAIN_EVENTS.
func replayHistory(t0 time.Time) []*containv1.Event {
	ids := containv1.NewIDGen()
	ev := func(cid, img string, at time.Duration, pid uint32, body func(*containv1.Process) *containv1.Event) *containv1.Event {
		e := body(&containv1.Process{Pid: pid, Tgid: pid, Ppid: 1, Comm: "sh"})
		e.Id, e.Host, e.ContainerId, e.ContainerName, e.ImageRef = ids.Next(), "h1", cid, cid+"-name", img
		e.ImageDigest = "sha256:" + strings.Repeat(img[:1], 64)
		e.WallNs, e.SchemaVersion = t0.Add(at).UnixNano(), containv1.SchemaVersion
		return e
	}
	exec := func(file string) func(*containv1.Process) *containv1.Event {
		return func(p *containv1.Process) *containv1.Event {
			return &containv1.Event{Kind: containv1.Kind_KIND_EXEC, Body: &containv1.Event_Exec{Exec: &containv1.Exec{Proc: p, Filename: file, Argv: []string{file}}}}
		}
	}
	connect := func(p *containv1.Process) *containv1.Event {
		a := netip.MustParseAddr("::ffff:203.0.113.9").As16()
		return &containv1.Event{Kind: containv1.Kind_KIND_NETWORK, Body: &containv1.Event_Network{Network: &containv1.Network{Proc: p,
			Op: containv1.Network_OP_CONNECT, Protocol: containv1.Network_PROTOCOL_TCP, Family: 10, RemoteAddr: a[:], RemotePort: 4444}}}
	}
	var h []*containv1.Event
	for i := range 20 {
		at := time.Duration(i) * 100 * time.Millisecond
		h = append(h, ev("c1", "demo:1", at, uint32(100+i), exec("/bin/sleep")), ev("c2", "other:1", at+time.Millisecond, uint32(100+i), exec("/bin/true")))
	}
	h = append(h,
		ev("c1", "demo:1", 30*time.Second, 200, exec("/bin/wget")),
		ev("c1", "demo:1", 30*time.Second+time.Millisecond, 200, connect),
		ev("c2", "other:1", 31*time.Second, 300, exec("/bin/curl")))
	return h
}

// alertKeys are an engine's alerts as comparable lines: id, container,
// trigger id and reason codes.
func alertKeys(alerts []*containv1.Event) []string {
	var out []string
	for _, a := range alerts {
		var codes []string
		for _, r := range a.GetAlert().GetReasons() {
			codes = append(codes, r.GetCode())
		}
		out = append(out, fmt.Sprintf("%x %s %x %s", a.GetId(), a.GetContainerId(), a.GetAlert().GetTrigger().GetId(), strings.Join(codes, ",")))
	}
	return out
}

// TestReplayWindowReproducesAlerts records a window (ClickHouse and
// JetStream), runs it through an analyzer as the live pipeline did, then
// replays container c1's window with `contain replay --to-subject` from
// each source into a subject of its own at a chosen rate, and feeds what
// arrives there to a fresh analyzer: the same alerts (same ids, triggers
// and reasons) come out, c2's stay out, and the rate holds.
func TestReplayWindowReproducesAlerts(t *testing.T) {
	t0 := time.Now().Add(-10 * time.Minute).Truncate(time.Second)
	history := replayHistory(t0)
	acfg := analyzer.DefaultConfig()
	acfg.LearningWindow = 5 * time.Second
	t.Setenv("CONTAIN_ANALYZER_LEARNING_WINDOW", "5s")
	score := func(evs []*containv1.Event) []string {
		e, err := analyzer.NewEngine(acfg, nil)
		if err != nil {
			t.Fatal(err)
		}
		var alerts []*containv1.Event
		for _, ev := range evs {
			alerts = append(alerts, e.Observe(ev)...)
		}
		return alertKeys(alerts)
	}
	var c1 []*containv1.Event
	for _, ev := range history {
		if ev.ContainerId == "c1" {
			c1 = append(c1, ev)
		}
	}
	want := score(c1)
	if len(want) == 0 {
		t.Fatal("the recorded window raised no alert for c1")
	}

	chAddr, _ := seedStore(t, history...)
	a := deployNATS(t)
	_, js := a.conn("enricher")
	p := bus.NewProducer("h1", "enricher")
	for i := 0; i < len(history); i += 9 {
		if err := bus.Publish(context.Background(), js, containv1.EventsSubject("h1"), p.Batch(history[i:min(i+9, len(history))])); err != nil {
			t.Fatal(err)
		}
	}
	_, rjs := a.conn("admin")

	for _, source := range []string{sourceClickHouse, sourceJetStream} {
		t.Run(source, func(t *testing.T) {
			// Into the pipeline's own events subjects, under a host of its own.
			subject := containv1.EventsSubject("replay-" + source)
			const rate = 100.0
			start := time.Now()
			out, err := runCLI(t, "replay", "--source", source, "--nats-url", a.url, "--clickhouse", chAddr,
				"--from", t0.Add(-time.Second).Format(time.RFC3339), "--since", "1h", "--container", "c1", "--event-host", "h1",
				"--to-subject", subject, "--rate", fmt.Sprint(rate), "--batch", "5", "--progress")
			el := time.Since(start)
			if err != nil {
				t.Fatalf("replay: %v\n%s", err, out)
			}
			t.Log(out)
			// ClickHouse knows the total: the progress line is a bar.
			if source == sourceClickHouse && !strings.Contains(out, fmt.Sprintf("100%% %d/%d events", len(c1), len(c1))) {
				t.Errorf("no finished progress bar in:\n%s", out)
			}
			if min := time.Duration(float64(len(c1)-1) / rate * float64(time.Second)); el < min {
				t.Errorf("%d events at %v/s took %v, want >= %v", len(c1), rate, el, min)
			}
			var replayed []*containv1.Event
			batches := 0
			if err := readStream(context.Background(), rjs, containv1.StreamEvents, subject, t0.Add(-time.Hour), time.Time{}, false,
				func(b *containv1.Batch) error {
					batches++
					if len(b.Events) > 5 {
						t.Errorf("a batch of %d events, want <= 5", len(b.Events))
					}
					replayed = append(replayed, b.Events...)
					return nil
				}, func(string, error) {}); err != nil {
				t.Fatal(err)
			}
			if len(replayed) != len(c1) {
				t.Fatalf("%d events in %d batches on %s, want %d", len(replayed), batches, subject, len(c1))
			}
			if got := score(replayed); !slices.Equal(got, want) {
				t.Errorf("replayed window's alerts:\n%s\nwant (recorded):\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
			}
		})
	}
}

// TestReadStreamEndsAtStart: a read without follow ends at what the stream
// held when it began, even when its reader publishes into the subjects it
// reads (replay --to-subject contain.v1.events.<host> of that host's own
// events would otherwise read its output back forever).
func TestReadStreamEndsAtStart(t *testing.T) {
	a := deployNATS(t)
	_, js := a.conn("enricher")
	_, rjs := a.conn("admin")
	subject := containv1.EventsSubject("loop")
	p := bus.NewProducer("loop", "enricher")
	const recorded = 6
	ids := containv1.NewIDGen()
	ev := func(int) *containv1.Event {
		return &containv1.Event{Id: ids.Next(), Host: "loop", ContainerId: "c1", Kind: containv1.Kind_KIND_EXEC,
			WallNs: time.Now().UnixNano(), SchemaVersion: containv1.SchemaVersion,
			Body: &containv1.Event_Exec{Exec: &containv1.Exec{Filename: "/bin/true"}}}
	}
	for i := range recorded {
		if err := bus.Publish(context.Background(), js, subject, p.Batch([]*containv1.Event{ev(i)})); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	read := 0
	err := readStream(ctx, rjs, containv1.StreamEvents, containv1.SubjectPrefix+".events.>", time.Now().Add(-time.Hour), time.Time{}, false,
		func(b *containv1.Batch) error {
			read += len(b.Events)
			// Every event read is published again where the read looks.
			return bus.Publish(ctx, js, subject, p.Batch([]*containv1.Event{ev(recorded + read)}))
		}, func(s string, err error) { t.Errorf("%s: %v", s, err) })
	if err != nil {
		t.Fatal(err)
	}
	if ctx.Err() != nil {
		t.Fatalf("the read did not end (%d events read)", read)
	}
	if read != recorded {
		t.Errorf("read %d events, want the %d recorded before the read began", read, recorded)
	}
}
