package main

import (
	"context"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/containsec/contain/analyzer"
	"github.com/containsec/contain/enricher"
	"github.com/containsec/contain/internal/bus"
	"github.com/containsec/contain/internal/metrics"
	"github.com/containsec/contain/internal/testenv"
	"github.com/containsec/contain/responder"
	"github.com/containsec/contain/schemas/containv1"
)

// TestSpoofedIdentityThroughPipeline runs the real enricher, analyzer and
// responder on an embedded NATS and a real runc container whose labels
// (OCI annotations, as an image author or runner may write them) claim
// another digest, a fresh reference and io.contain.critical=true. The
// collector's events (published as the collector does) carry the
// runtime's identity in ContainerInfo. The enriched events and the alert
// carry the runtime's digest, the baseline is the runtime digest's, and
// the container is still paused: the critical label is not trusted.
func TestSpoofedIdentityThroughPipeline(t *testing.T) {
	testenv.RequireRoot(t)
	const host = "ident"
	real := "sha256:" + strings.Repeat("ab", 32)
	fake := "sha256:" + strings.Repeat("fe", 32)
	_, nc, js := testenv.NATS(t)
	c := testenv.RunContainer(t, "ident", testenv.ContainerSpec{Annotations: map[string]string{
		"io.contain.image.digest": fake, "io.contain.image.ref": "evil/fresh:1", responder.CriticalLabel: "true",
	}})
	st, err := c.State()
	if err != nil {
		t.Fatal(err)
	}

	m := metrics.New()
	log := testenv.Logger(t)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })
	run := func(f func(context.Context) error) {
		wg.Add(1)
		go func() { defer wg.Done(); _ = f(ctx) }()
	}
	ecfg := enricher.DefaultConfig()
	ecfg.Workers = 0
	ecfg.Registry.Enabled = false
	enr, err := enricher.New(ecfg, js, m, log)
	if err != nil {
		t.Fatal(err)
	}
	const learning = 3 * time.Second
	acfg := analyzer.DefaultConfig()
	acfg.Host = host
	acfg.LearningWindow = learning
	acfg.BaselinesBucket = ""
	an, err := analyzer.New(acfg, js, m, log)
	if err != nil {
		t.Fatal(err)
	}
	rcfg := responder.DefaultConfig()
	rcfg.Host = host
	rcfg.Snapshot = false
	rcfg.DockerHost, rcfg.ContainerdAddress = "", ""
	resp, err := responder.New(rcfg, nc, js, m, log)
	if err != nil {
		t.Fatal(err)
	}
	run(enr.Run)
	run(an.Run)
	run(resp.Run)

	acts, err := js.OrderedConsumer(ctx, containv1.StreamActions, jetstream.OrderedConsumerConfig{FilterSubjects: []string{containv1.ActionsSubject(host)}})
	if err != nil {
		t.Fatal(err)
	}
	// The host's events: on its own subject, or in fleet batches' parts
	// (enricher.fleet_batches), read below with bus.DecodeParts.
	enriched, err := js.OrderedConsumer(ctx, containv1.StreamEvents, jetstream.OrderedConsumerConfig{FilterSubjects: []string{containv1.SubjectPrefix + ".events.>"}})
	if err != nil {
		t.Fatal(err)
	}

	// Events as the collector emits them: the container first, with the
	// runtime's identity and the annotations as labels.
	ids := containv1.NewIDGen()
	prod := bus.NewProducer(host, "collector")
	publish := func(evs ...*containv1.Event) {
		t.Helper()
		if err := bus.Publish(ctx, js, containv1.RawSubject(host), prod.Batch(evs)); err != nil {
			t.Fatal(err)
		}
	}
	start := time.Now()
	exec := func(file string, argv ...string) *containv1.Event {
		now := time.Now()
		return &containv1.Event{Id: ids.Next(), Host: host, ContainerId: c.ID, Kind: containv1.Kind_KIND_EXEC,
			WallNs: now.UnixNano(), MonoNs: uint64(now.Sub(start).Nanoseconds()) + 1, SchemaVersion: containv1.SchemaVersion,
			Body: &containv1.Event_Exec{Exec: &containv1.Exec{Filename: file, Argv: argv,
				Proc: &containv1.Process{Pid: uint32(st.Pid), Tgid: uint32(st.Pid), Comm: argv[0]}}}}
	}
	publish(&containv1.Event{Id: ids.Next(), Host: host, ContainerId: c.ID, Kind: containv1.Kind_KIND_CONTAINER,
		WallNs: time.Now().UnixNano(), MonoNs: 1, SchemaVersion: containv1.SchemaVersion,
		Body: &containv1.Event_Container{Container: &containv1.ContainerInfo{Runtime: "runc", CgroupPath: "/" + c.ID,
			InitPid: uint32(st.Pid), ImageRef: "demo/ident:1", ImageDigest: real, Name: "ident",
			Labels: map[string]string{"io.contain.image.digest": fake, "io.contain.image.ref": "evil/fresh:1", responder.CriticalLabel: "true"}}}})
	for time.Since(start) < learning+time.Second {
		publish(exec("/bin/sleep", "sleep", "1"))
		time.Sleep(100 * time.Millisecond)
	}

	var alertDigest string
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		publish(exec("/bin/sh", "sh", "-c", "echo pwned"))
		msg, err := acts.Next(jetstream.FetchMaxWait(2 * time.Second))
		if err != nil {
			continue
		}
		b, err := bus.Decode(msg.Data())
		if err != nil {
			t.Fatal(err)
		}
		ev := b.Events[0]
		a := ev.GetAction()
		if a.Type != containv1.Action_TYPE_PAUSE || ev.ContainerId != c.ID {
			continue
		}
		if a.Result != containv1.Action_RESULT_OK {
			t.Fatalf("the container was not paused: %v %s", a.Result, a.Detail)
		}
		alertDigest = ev.ImageDigest
		if strings.Contains(a.Reason, "evil/fresh") || strings.Contains(a.Reason, fake) {
			t.Errorf("the alert names the labels' image: %s", a.Reason)
		}
		t.Logf("paused: %s", a.Reason)
		break
	}
	if alertDigest == "" {
		t.Fatal("no pause action")
	}
	if alertDigest != real {
		t.Errorf("the alert's digest is %q, want the runtime's %q", alertDigest, real)
	}
	if s, _ := c.FreezerState(); s != "FROZEN" {
		t.Errorf("container %s after PAUSE/OK", s)
	}
	if _, err := resp.Release(ctx, responder.ReleaseRequest{ContainerID: c.ID, Actor: "test", Reason: "done"}); err != nil {
		t.Fatal(err)
	}

	// Every enriched event of the container carries the runtime's image.
	n := 0
	for {
		msg, err := enriched.Next(jetstream.FetchMaxWait(time.Second))
		if err != nil {
			break
		}
		bs, err := bus.DecodeParts(msg.Data())
		if err != nil {
			t.Fatal(err)
		}
		var evs []*containv1.Event
		for _, b := range bs {
			evs = append(evs, b.Events...)
		}
		for _, ev := range evs {
			if ev.ContainerId != c.ID {
				continue
			}
			n++
			if ev.ImageDigest != real || ev.ImageRef != "demo/ident:1" {
				t.Fatalf("enriched event %d: image %q digest %q, want demo/ident:1 %s", n, ev.ImageRef, ev.ImageDigest, real)
			}
		}
	}
	if n == 0 {
		t.Fatal("no enriched events")
	}
	t.Logf("%d enriched events, all with the runtime's digest; %s", n, strconv.Quote(alertDigest))
}
