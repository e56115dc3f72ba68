package main

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/containsec/contain/internal/auth"
	"github.com/containsec/contain/internal/bus"
	"github.com/containsec/contain/internal/metrics"
	"github.com/containsec/contain/internal/testenv"
	"github.com/containsec/contain/schemas/containv1"
)

// TestDLQCommand: a batch whose handler panicked is listed by `contain dlq
// list` and put back on its subject by `contain dlq replay`.
func TestDLQCommand(t *testing.T) {
	dir := t.TempDir()
	if _, err := auth.Ensure(auth.EnsureConfig{Dir: dir, Users: []string{auth.RoleAdmin}, Role: func(string) string { return "" }}); err != nil {
		t.Fatal(err)
	}
	seed := auth.SeedPath(dir, auth.RoleAdmin)
	creds, err := auth.LoadSeed(seed)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := bus.StartEmbedded(bus.EmbeddedConfig{Port: -1, StoreDir: t.TempDir()}, &server.NkeyUser{Nkey: creds.PublicKey()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Shutdown(); srv.WaitForShutdown() })
	url := srv.ClientURL()
	nc, js, err := bus.Connect(url, t.Name(), testenv.Logger(t), nats.Nkey(creds.PublicKey(), creds.KP.Sign))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	if err := bus.EnsureStreams(context.Background(), js, bus.StreamsConfig{}); err != nil {
		t.Fatal(err)
	}
	m := metrics.New()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ctx = bus.WithReporter(ctx, &bus.Reporter{M: m, Log: testenv.Logger(t)})
	b := bus.NewProducer("h1", "test").Batch([]*containv1.Event{{Id: containv1.NewIDGen().Next(), Host: "h1", ContainerId: "c", Kind: containv1.Kind_KIND_EXEC,
		SchemaVersion: containv1.SchemaVersion, Body: &containv1.Event_Exec{Exec: &containv1.Exec{Filename: "/bin/poison"}}}})
	if err := bus.Publish(ctx, js, containv1.EventsSubject("h1"), b); err != nil {
		t.Fatal(err)
	}
	go func() {
		_ = bus.Consume(ctx, js, bus.ConsumerConfig{Stream: containv1.StreamEvents, Durable: "dlqcmd", Stage: "test"},
			func(context.Context, []*containv1.Batch) error { panic("decoder bug") }, m, testenv.Logger(t))
	}()
	testenv.WaitFor(t, 10*time.Second, "the panicking batch dead-lettered", func() bool {
		return testutil.ToFloat64(m.DeadLettered.WithLabelValues("test", bus.DLQPanic)) == 1
	})
	cancel()
	out, err := runCLI(t, "dlq", "list", "--nats-url", url, "--nkey-seed", seed, "--stage", "test")
	if err != nil {
		t.Fatalf("dlq list: %v\n%s", err, out)
	}
	if !strings.Contains(out, containv1.EventsSubject("h1")) || !strings.Contains(out, "panic") || !strings.Contains(out, "decoder bug") {
		t.Fatalf("dlq list:\n%s", out)
	}
	if out, _ := runCLI(t, "dlq", "list", "--nats-url", url, "--nkey-seed", seed, "--stage", "other"); strings.Contains(out, "poison") || strings.Count(out, "\n") != 1 {
		t.Fatalf("dlq list --stage other:\n%s", out)
	}
	out, err = runCLI(t, "dlq", "replay", "--nats-url", url, "--nkey-seed", seed, "--stage", "test")
	if err != nil || !strings.Contains(out, "replayed 1") {
		t.Fatalf("dlq replay: %v\n%s", err, out)
	}
	st, err := js.Stream(context.Background(), containv1.StreamEvents)
	if err != nil {
		t.Fatal(err)
	}
	if n := st.CachedInfo().State.Msgs; n != 2 {
		t.Fatalf("%s holds %d messages after replay, want 2 (original, replayed)", containv1.StreamEvents, n)
	}
	if out, _ := runCLI(t, "dlq", "list", "--nats-url", url, "--nkey-seed", seed); strings.Count(out, "\n") != 1 {
		t.Fatalf("DLQ not empty after replay:\n%s", out)
	}
}

// TestDeadLetterUnderDeployConf: under the shipped permissions a stage
// user (the analyzer) dead-letters a batch its handler panicked on and
// reads its stream's info; a collector of node-a may not write node-b's
// dead letters.
func TestDeadLetterUnderDeployConf(t *testing.T) {
	a := deployNATS(t)
	_, ejs := a.conn(auth.RoleEnricher)
	_, js := a.conn(auth.RoleAnalyzer)
	m := metrics.New()
	h := bus.NewHealth()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ctx = bus.WithReporter(ctx, &bus.Reporter{M: m, Log: testenv.Logger(t), Health: h,
		HealthBounds: bus.HealthConfig{CheckInterval: 50 * time.Millisecond}})
	b := bus.NewProducer("node-a", "enricher").Batch([]*containv1.Event{{Id: containv1.NewIDGen().Next(), Host: "node-a", ContainerId: "c",
		Kind: containv1.Kind_KIND_EXEC, SchemaVersion: containv1.SchemaVersion, Body: &containv1.Event_Exec{Exec: &containv1.Exec{Filename: "/bin/poison"}}}})
	if err := bus.Publish(ctx, ejs, containv1.EventsSubject("node-a"), b); err != nil {
		t.Fatal(err)
	}
	go func() {
		_ = bus.Consume(ctx, js, bus.ConsumerConfig{Stream: containv1.StreamEvents, Durable: auth.DefaultNames().AnalyzerDurable, Stage: metrics.StageAnalyzer},
			func(context.Context, []*containv1.Batch) error { panic("bug") }, m, testenv.Logger(t))
	}()
	testenv.WaitForState(t, 15*time.Second, "dead-lettered under deploy/nats/contain.conf", func() (bool, string) {
		return testutil.ToFloat64(m.DeadLettered.WithLabelValues(metrics.StageAnalyzer, bus.DLQPanic)) == 1,
			fmt.Sprintf("dead_letter errors %v", testutil.ToFloat64(m.Errors.WithLabelValues(metrics.StageAnalyzer, "dead_letter")))
	})
	time.Sleep(200 * time.Millisecond)
	if lines, ok := h.Check(ctx); !ok {
		t.Fatalf("consumer not healthy under deploy/nats/contain.conf: %v", lines)
	}
	resp := auth.UserName(auth.RoleResponder, "node-a")
	rnc, _ := a.conn(resp)
	for _, host := range []string{"node-a", "node-b"} {
		if err := rnc.Publish(bus.DLQSubject(auth.RoleResponder, containv1.AlertsSubject(host)), []byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	_ = rnc.Flush()
	testenv.WaitFor(t, 5*time.Second, "node-a's responder refused node-b's dead letters", func() bool {
		return a.violation(resp, bus.DLQSubject(auth.RoleResponder, containv1.AlertsSubject("node-b")))
	})
	if a.violation(resp, bus.DLQSubject(auth.RoleResponder, containv1.AlertsSubject("node-a"))) {
		t.Fatal("node-a's responder may not write its own dead letters")
	}
}
