package bus_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/containsec/contain/internal/bus"
	"github.com/containsec/contain/internal/metrics"
	"github.com/containsec/contain/internal/testenv"
	"github.com/containsec/contain/schemas/containv1"
)

// TestExpiredBeforeDeliveryCounted: messages that expire from a stream
// (max_age 1s) while the consumer is away are counted exactly when it
// resumes; nothing else is.
func TestExpiredBeforeDeliveryCounted(t *testing.T) {
	_, _, js := testenv.NATS(t)
	m := metrics.New()
	base := context.Background()
	if _, err := js.CreateStream(base, jetstream.StreamConfig{Name: "EXP", Subjects: []string{"contain.v1.exp.>"}, MaxAge: time.Second}); err != nil {
		t.Fatal(err)
	}
	prod := bus.NewProducer("h1", "test")
	ids := containv1.NewIDGen()
	pub := func(n int) {
		for range n {
			if err := bus.Publish(base, js, "contain.v1.exp.h1", prod.Batch([]*containv1.Event{execEvent(ids, "c", "/bin/sh")})); err != nil {
				t.Fatal(err)
			}
		}
	}
	var got collected
	consume := func() (stop func()) {
		ctx, cancel := context.WithCancel(base)
		ctx = bus.WithReporter(ctx, &bus.Reporter{M: m, Log: testenv.Logger(t),
			HealthBounds: bus.HealthConfig{CheckInterval: 100 * time.Millisecond}})
		done := make(chan struct{})
		go func() {
			_ = bus.Consume(ctx, js, bus.ConsumerConfig{Stream: "EXP", Durable: "exp", Stage: "test"}, got.handler(nil), m, testenv.Logger(t))
			close(done)
		}()
		return func() { cancel(); <-done }
	}
	expired := func() float64 { return testutil.ToFloat64(m.Expired.WithLabelValues("EXP", "exp")) }

	pub(2)
	stop := consume()
	testenv.WaitFor(t, 5*time.Second, "2 events", func() bool { return got.len() == 2 })
	stop()
	pub(3)
	st, err := js.Stream(base, "EXP")
	if err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 10*time.Second, "the stream to expire its messages", func() bool {
		info, err := st.Info(base)
		return err == nil && info.State.Msgs == 0
	})
	stop = consume()
	defer stop()
	testenv.WaitFor(t, 5*time.Second, "expired counted", func() bool { return expired() >= 3 })
	pub(2)
	testenv.WaitFor(t, 5*time.Second, "later events", func() bool { return got.len() == 4 })
	time.Sleep(300 * time.Millisecond) // a few more checks
	if n := expired(); n != 3 {
		t.Fatalf("contain_expired_total = %v, want 3", n)
	}
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestReadyzFollowsNATS: /readyz is 200 with a live server, 503 naming
// NATS once it is gone, 200 again after it restarts.
func TestReadyzFollowsNATS(t *testing.T) {
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
	h := bus.NewHealth()
	h.Register("nats", bus.NATSCheck(nc, js, time.Second))
	web := httptest.NewServer(h.ReadyHandler(3 * time.Second))
	t.Cleanup(web.Close)
	if code, body := get(t, web.URL); code != 200 {
		t.Fatalf("live: %d %s", code, body)
	}
	srv.Shutdown()
	srv.WaitForShutdown()
	code, body := get(t, web.URL)
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "nats") {
		t.Fatalf("server gone: %d %q", code, body)
	}
	t.Logf("server gone: %q", body)
	srv2, err := bus.StartEmbedded(bus.EmbeddedConfig{Port: int(port), StoreDir: store})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv2.Shutdown)
	testenv.WaitFor(t, 10*time.Second, "ready after restart", func() bool { c, _ := get(t, web.URL); return c == 200 })
}

// TestReadyzJetStreamDisabled: a server without JetStream is not ready.
func TestReadyzJetStreamDisabled(t *testing.T) {
	srv, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, NoSigs: true, NoLog: true})
	if err != nil {
		t.Fatal(err)
	}
	go srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("not ready")
	}
	t.Cleanup(srv.Shutdown)
	nc, js, err := bus.Connect(srv.ClientURL(), t.Name(), testenv.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	h := bus.NewHealth()
	h.Register("nats", bus.NATSCheck(nc, js, time.Second))
	web := httptest.NewServer(h.ReadyHandler(3 * time.Second))
	t.Cleanup(web.Close)
	code, body := get(t, web.URL)
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "jetstream") {
		t.Fatalf("no JetStream: %d %q", code, body)
	}
}

// TestReadyzConsumerLag: a consumer whose lag exceeds nats.health.max_lag
// makes /readyz 503 until it catches up; its lag is exported.
func TestReadyzConsumerLag(t *testing.T) {
	_, _, js := testenv.NATS(t)
	m := metrics.New()
	h := bus.NewHealth()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ctx = bus.WithReporter(ctx, &bus.Reporter{M: m, Log: testenv.Logger(t), Health: h,
		HealthBounds: bus.HealthConfig{MaxLag: 2, CheckInterval: 50 * time.Millisecond}})
	for _, f := range []string{"/bin/a", "/bin/b", "/bin/c", "/bin/d", "/bin/e", "/bin/f"} {
		publishFile(t, ctx, js, bus.NewProducer("h1", "test"), f)
	}
	release := make(chan struct{})
	var got collected
	go func() {
		_ = bus.Consume(ctx, js, bus.ConsumerConfig{Stream: containv1.StreamEvents, Durable: "lag", Stage: "test", Fetch: 1},
			func(ctx context.Context, b []*containv1.Batch) error {
				<-release
				return got.handler(nil)(ctx, b)
			}, m, testenv.Logger(t))
	}()
	web := httptest.NewServer(h.ReadyHandler(3 * time.Second))
	t.Cleanup(web.Close)
	testenv.WaitFor(t, 5*time.Second, "503 for lag", func() bool {
		c, body := get(t, web.URL)
		return c == http.StatusServiceUnavailable && strings.Contains(body, "max_lag")
	})
	if lag := testutil.ToFloat64(m.ConsumerLag.WithLabelValues(containv1.StreamEvents, "lag")); lag < 3 {
		t.Fatalf("contain_consumer_lag = %v, want >= 3", lag)
	}
	close(release)
	testenv.WaitFor(t, 5*time.Second, "caught up", func() bool { return got.len() == 6 })
	testenv.WaitFor(t, 5*time.Second, "ready again", func() bool { c, _ := get(t, web.URL); return c == 200 })
}
