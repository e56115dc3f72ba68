package bus_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/containsec/contain/internal/bus"
	"github.com/containsec/contain/internal/metrics"
	"github.com/containsec/contain/internal/testenv"
	"github.com/containsec/contain/schemas/containv1"
)

func testBatch(n int) *containv1.Batch {
	ids := containv1.NewIDGen()
	p := bus.NewProducer("h1", metrics.StageCollector)
	evs := make([]*containv1.Event, n)
	for i := range evs {
		evs[i] = execEvent(ids, "c1", "/bin/"+strings.Repeat("x", 64))
	}
	return p.Batch(evs)
}

func reporterCtx(t *testing.T) (context.Context, *metrics.Metrics) {
	m := metrics.New()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return bus.WithReporter(ctx, &bus.Reporter{M: m, Log: testenv.Logger(t), AttemptTimeout: 500 * time.Millisecond}), m
}

// TestPublishNoStreamIsPermanent: a subject no stream captures is given
// up on promptly, counted and returned.
func TestPublishNoStreamIsPermanent(t *testing.T) {
	_, _, js := testenv.NATS(t)
	ctx, m := reporterCtx(t)
	start := time.Now()
	err := bus.Publish(ctx, js, "contain.v1.nostream.h1", testBatch(1))
	if !errors.Is(err, bus.ErrNoStream) {
		t.Fatalf("err %v, want ErrNoStream", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("returned after %v", d)
	}
	if n := testutil.ToFloat64(m.PublishFailed.WithLabelValues(metrics.StageCollector, bus.KindNoStream)); n != 1 {
		t.Fatalf("contain_publish_failed_total{no_stream} = %v, want 1", n)
	}
}

// TestPublishOverMaxPayloadIsPermanent: a server whose max_payload is
// smaller than the batch refuses it for good.
func TestPublishOverMaxPayloadIsPermanent(t *testing.T) {
	srv, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, JetStream: true,
		StoreDir: t.TempDir(), MaxPayload: 4096, NoSigs: true, NoLog: true})
	if err != nil {
		t.Fatal(err)
	}
	go srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("server not ready")
	}
	t.Cleanup(srv.Shutdown)
	nc, js, err := bus.Connect(srv.ClientURL(), t.Name(), testenv.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	ctx, m := reporterCtx(t)
	if err := bus.EnsureStreams(ctx, js, bus.StreamsConfig{}); err != nil {
		t.Fatal(err)
	}
	if err := bus.Publish(ctx, js, containv1.RawSubject("h1"), testBatch(1)); err != nil {
		t.Fatalf("small batch: %v", err)
	}
	start := time.Now()
	err = bus.Publish(ctx, js, containv1.RawSubject("h1"), testBatch(200))
	if err == nil || time.Since(start) > 5*time.Second {
		t.Fatalf("big batch: err %v after %v, want a prompt error", err, time.Since(start))
	}
	if n := testutil.ToFloat64(m.PublishFailed.WithLabelValues(metrics.StageCollector, bus.KindMaxPayload)); n != 1 {
		t.Fatalf("contain_publish_failed_total{max_payload} = %v, want 1 (err %v)", n, err)
	}
}

// TestPublishPermissionViolationIsPermanent: a subject the user may not
// publish is refused asynchronously by the server; Publish gives up
// after the first timeout instead of retrying forever.
func TestPublishPermissionViolationIsPermanent(t *testing.T) {
	dir := t.TempDir()
	conf := filepath.Join(dir, "nats.conf")
	if err := os.WriteFile(conf, []byte(`
authorization { users: [
  { user: a, password: pa, permissions: { publish: { allow: ["$JS.API.>"] }, subscribe: { allow: ["_INBOX.>"] } } }
  { user: adm, password: pa }
] }
`), 0o600); err != nil {
		t.Fatal(err)
	}
	srv, err := bus.StartEmbedded(bus.EmbeddedConfig{Port: -1, StoreDir: filepath.Join(dir, "js"), ConfigFile: conf})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	log := testenv.Logger(t)
	anc, ajs, err := bus.Connect(srv.ClientURL(), "adm", log, natsUser("adm", "pa"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(anc.Close)
	ctx, m := reporterCtx(t)
	if err := bus.EnsureStreams(ctx, ajs, bus.StreamsConfig{}); err != nil {
		t.Fatal(err)
	}
	nc, js, err := bus.Connect(srv.ClientURL(), "a", log, natsUser("a", "pa"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	start := time.Now()
	err = bus.Publish(ctx, js, containv1.RawSubject("h1"), testBatch(1))
	if err == nil || time.Since(start) > 5*time.Second {
		t.Fatalf("err %v after %v, want a permanent error", err, time.Since(start))
	}
	if n := testutil.ToFloat64(m.PublishFailed.WithLabelValues(metrics.StageCollector, bus.KindPermission)); n != 1 {
		t.Fatalf("contain_publish_failed_total{permission} = %v, want 1 (err %v)", n, err)
	}
}

// TestPublishSurvivesServerRestart: a server gone mid-publish is a
// transient failure, retried and counted until the server is back.
func TestPublishSurvivesServerRestart(t *testing.T) {
	store := t.TempDir()
	srv, err := bus.StartEmbedded(bus.EmbeddedConfig{Port: -1, StoreDir: store})
	if err != nil {
		t.Fatal(err)
	}
	port := srv.Addr().(interface{ AddrPort() netAddrPort }).AddrPort().Port()
	nc, js, err := bus.Connect(srv.ClientURL(), t.Name(), testenv.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	ctx, m := reporterCtx(t)
	if err := bus.EnsureStreams(ctx, js, bus.StreamsConfig{}); err != nil {
		t.Fatal(err)
	}
	srv.Shutdown()
	srv.WaitForShutdown()
	done := make(chan error, 1)
	go func() { done <- bus.Publish(ctx, js, containv1.RawSubject("h1"), testBatch(3)) }()
	time.Sleep(1500 * time.Millisecond)
	srv2, err := bus.StartEmbedded(bus.EmbeddedConfig{Port: int(port), StoreDir: store})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv2.Shutdown)
	if err := <-done; err != nil {
		t.Fatalf("publish across a restart: %v", err)
	}
	var retries float64
	for _, k := range []string{bus.KindTimeout, bus.KindNoResponders, bus.KindDisconnected, bus.KindUnavailable, bus.KindOther} {
		retries += testutil.ToFloat64(m.PublishRetries.WithLabelValues(metrics.StageCollector, k))
	}
	if retries == 0 {
		t.Fatal("no retry counted")
	}
	st, err := js.Stream(ctx, containv1.StreamRaw)
	if err != nil {
		t.Fatal(err)
	}
	if n := st.CachedInfo().State.Msgs; n != 1 {
		t.Fatalf("stream holds %d messages, want 1", n)
	}
}

// TestPublishStalledReported: a publish retrying without end (the server
// is gone) says so in contain_publish_stalled, and clears it when it ends.
func TestPublishStalledReported(t *testing.T) {
	srv, err := bus.StartEmbedded(bus.EmbeddedConfig{Port: -1, StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	nc, js, err := bus.Connect(srv.ClientURL(), t.Name(), testenv.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	if err := bus.EnsureStreams(context.Background(), js, bus.StreamsConfig{}); err != nil {
		t.Fatal(err)
	}
	srv.Shutdown()
	srv.WaitForShutdown()
	m := metrics.New()
	ctx, cancel := context.WithCancel(context.Background())
	ctx = bus.WithReporter(ctx, &bus.Reporter{M: m, Log: testenv.Logger(t), AttemptTimeout: 200 * time.Millisecond, StallAfter: 500 * time.Millisecond})
	done := make(chan error, 1)
	go func() { done <- bus.Publish(ctx, js, containv1.RawSubject("h1"), testBatch(1)) }()
	stalled := func() float64 { return testutil.ToFloat64(m.PublishStalled.WithLabelValues(metrics.StageCollector)) }
	testenv.WaitFor(t, 10*time.Second, "stalled reported", func() bool { return stalled() == 1 })
	cancel()
	if err := <-done; err == nil {
		t.Fatal("publish to a gone server succeeded")
	}
	if stalled() != 0 || testutil.ToFloat64(m.PublishFailed.WithLabelValues(metrics.StageCollector, bus.KindCanceled)) != 1 {
		t.Fatalf("after cancel: stalled %v, failed{canceled} %v", stalled(), testutil.ToFloat64(m.PublishFailed.WithLabelValues(metrics.StageCollector, bus.KindCanceled)))
	}
}
