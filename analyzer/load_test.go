package analyzer

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/containsec/contain/internal/bus"
	"github.com/containsec/contain/internal/metrics"
	"github.com/containsec/contain/internal/testenv"
	"github.com/containsec/contain/schemas/kvdoc"
)

// storedDoc is the baseline an engine writes after one exec of exe.
func storedDoc(t *testing.T, exe string) *Doc {
	t.Helper()
	e, err := NewEngine(DefaultConfig(), nil)
	if err != nil {
		t.Fatal(err)
	}
	e.Observe(execEv("c1", sec(0), exe))
	docs := e.Dirty()
	if len(docs) != 1 {
		t.Fatalf("%d dirty baselines, want 1", len(docs))
	}
	return docs[0]
}

// startAnalyzerWith is startAnalyzer with edit applied before Run.
func startAnalyzerWith(t *testing.T, js jetstream.JetStream, cfg Config, edit func(*Analyzer)) (a *Analyzer, m *metrics.Metrics, stop func()) {
	t.Helper()
	m = metrics.New()
	a, err := New(cfg, js, m, testenv.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	edit(a)
	return a, m, testenv.Go(t, 10*time.Second, a.Run)
}

// loadedExecutables is what the analyzer's engine holds for the image.
func loadedExecutables(a *Analyzer, key string) (exes []string) {
	a.Engine(func(e *Engine) {
		if b := e.images[key]; b != nil {
			d := b.Doc()
			for x := range d.Executables {
				exes = append(exes, x)
			}
		}
	})
	return exes
}

// NATS is down when the analyzer starts: it retries loading the
// baselines (counted, logged), is not ready and consumes nothing; once
// it is back it loads the stored baseline and is ready.
func TestAnalyzerRetriesBaselinesUntilLoaded(t *testing.T) {
	dir := t.TempDir()
	s, err := bus.StartEmbedded(bus.EmbeddedConfig{Port: -1, StoreDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Shutdown)
	nc, js, err := bus.Connect(s.ClientURL(), t.Name(), testenv.Discard())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	ctx := context.Background()
	if err := bus.EnsureStreams(ctx, js, bus.StreamsConfig{}); err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	st, err := OpenStore(ctx, js, cfg.BaselinesBucket)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Save(ctx, storedDoc(t, "/bin/httpd")); err != nil {
		t.Fatal(err)
	}
	port := s.Addr().(*net.TCPAddr).Port
	s.Shutdown()
	s.WaitForShutdown()

	a, m, _ := startAnalyzerWith(t, js, cfg, func(a *Analyzer) { a.loading.timeout = 300 * time.Millisecond })
	failed := func() float64 {
		return testutil.ToFloat64(m.Errors.WithLabelValues(metrics.StageAnalyzer, kindBaselineLoad))
	}
	testenv.WaitFor(t, 10*time.Second, "two failed load attempts", func() bool { return failed() >= 2 })
	if err := a.Ready(); err == nil || !strings.Contains(err.Error(), "baselines not loaded") {
		t.Fatalf("Ready while NATS is down: %v", err)
	}
	if exes := loadedExecutables(a, "sha256:aaaa"); exes != nil {
		t.Fatalf("engine holds %v before the load", exes)
	}

	s2, err := bus.StartEmbedded(bus.EmbeddedConfig{Port: port, StoreDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s2.Shutdown)
	testenv.WaitFor(t, 15*time.Second, "ready after NATS returns", func() bool { return a.Ready() == nil })
	if exes := loadedExecutables(a, "sha256:aaaa"); len(exes) != 1 || exes[0] != "/bin/httpd" {
		t.Fatalf("loaded baseline executables %v, want [/bin/httpd]", exes)
	}
	t.Logf("%v failed attempts before NATS returned", failed())
}

// A corrupt latest revision: the newest valid revision in the key's
// history is loaded (counted as corrupt and fallen back) and written back
// over it.
func TestAnalyzerCorruptBaselineFallsBackToValidRevision(t *testing.T) {
	_, _, js := testenv.NATS(t)
	ctx := context.Background()
	cfg := DefaultConfig()
	cfg.PersistInterval = 50 * time.Millisecond
	st, err := OpenStore(ctx, js, cfg.BaselinesBucket)
	if err != nil {
		t.Fatal(err)
	}
	old := storedDoc(t, "/bin/old")
	if _, err := st.Save(ctx, old); err != nil {
		t.Fatal(err)
	}
	good := storedDoc(t, "/bin/httpd")
	if _, err := st.Save(ctx, good); err != nil {
		t.Fatal(err)
	}
	if _, err := st.kv.Put(ctx, kvdoc.EscapeKey(good.Key), []byte(`{"format":"truncated`)); err != nil {
		t.Fatal(err)
	}

	a, m, _ := startAnalyzer(t, js, cfg)
	testenv.WaitFor(t, 10*time.Second, "ready", func() bool { return a.Ready() == nil })
	if exes := loadedExecutables(a, good.Key); len(exes) != 1 || exes[0] != "/bin/httpd" {
		t.Fatalf("loaded executables %v, want the newest valid revision's [/bin/httpd]", exes)
	}
	for kind, want := range map[string]float64{kindBaselineCorrupt: 1, kindBaselineFallback: 1, kindBaselineLoad: 0} {
		if got := testutil.ToFloat64(m.Errors.WithLabelValues(metrics.StageAnalyzer, kind)); got != want {
			t.Fatalf("errors{kind=%s} = %v, want %v", kind, got, want)
		}
	}
	testenv.WaitFor(t, 10*time.Second, "the valid baseline written back as the latest revision", func() bool {
		d, err := st.Get(ctx, good.Key)
		return err == nil && d.Executables["/bin/httpd"] > 0
	})
}
