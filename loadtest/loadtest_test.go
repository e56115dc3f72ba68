package loadtest_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/containsec/contain/internal/bus"
	"github.com/containsec/contain/internal/testenv"
	"github.com/containsec/contain/loadtest"
	"github.com/containsec/contain/schemas/containv1"
)

// runLoad runs cfg's load test and logs its report; an unreachable
// ClickHouse skips (or fails under CI), any other error fails the test.
func runLoad(t *testing.T, ctx context.Context, cfg loadtest.Config) *loadtest.Result {
	t.Helper()
	res, err := loadtest.Run(ctx, cfg, warnLogger(t))
	if errors.Is(err, loadtest.ErrClickHouseUnavailable) {
		testenv.Unavailable(t, err.Error())
	}
	if res != nil {
		var out bytes.Buffer
		res.Print(&out)
		t.Log("\n" + out.String())
	}
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// TestPipelineNoLoss runs the whole pipeline for ~5 s at a modest rate
// against the real ClickHouse: every published event must be one distinct
// row, nothing dropped, every deviation alerted, every alert acted on (dry
// run).
func TestPipelineNoLoss(t *testing.T) {
	testPipelineNoLoss(t, 1)
}

// The same with the analyzer partitioned (analyzer.partitions 4, one
// instance holding them all): the enricher routes every event to its
// image's partition, and nothing is lost or alerted twice.
func TestPipelineNoLossPartitioned(t *testing.T) {
	testPipelineNoLoss(t, 4)
}

// The same with fleet batches (enricher.fleet_batches: a fetch's batches
// of one partition, of both hosts, in one message): the analyzers and the
// store read each part as the batch it was; nothing is lost or alerted
// twice.
func TestPipelineNoLossFleetBatches(t *testing.T) {
	testPipelineNoLoss(t, 4, func(c *loadtest.Config) { c.Enricher.FleetBatches = true })
}

func testPipelineNoLoss(t *testing.T, partitions int, opts ...func(*loadtest.Config)) {
	chAddr := testenv.ClickHouseAddr(t)
	cfg := loadtest.DefaultConfig()
	for _, o := range opts {
		o(&cfg)
	}
	cfg.Analyzer.Partitions = partitions
	cfg.Analyzer.LeaseTTL = 2 * time.Second
	cfg.Store.Addr = []string{chAddr}
	cfg.Store.Database = fmt.Sprintf("contain_loadtest_%d", time.Now().UnixNano())
	cfg.Generator.Hosts = 2
	cfg.Generator.ContainersPerHost = 10
	cfg.Generator.Images = 4
	cfg.Generator.Rate = 2000
	cfg.Generator.Duration = 5 * time.Second
	cfg.Analyzer.LearningWindow = 2 * time.Second
	cfg.Generator.DeviateAfter = 3 * time.Second
	cfg.Generator.DeviationFraction = 0.002
	cfg.DrainTimeout = 60 * time.Second

	res := runLoad(t, context.Background(), cfg)
	if err := res.Check(); err != nil {
		t.Fatal(err)
	}
	// ~10,000 events at 2,000/s; a loaded machine may publish fewer, never
	// next to none.
	if res.Gen.Events < 5000 {
		t.Fatalf("published only %d events in %v (target 2000/s)", res.Gen.Events, res.Gen.Elapsed)
	}
	if want := int64(cfg.Generator.Hosts * cfg.Generator.ContainersPerHost); res.Gen.Containers != want {
		t.Errorf("%d container events, want one per container (%d)", res.Gen.Containers, want)
	}
	if res.Gen.Deviations == 0 {
		t.Fatal("no deviation was injected")
	}
	// Each deviation is distinct (unseen /tmp executable or peer) and the
	// normal behaviour was all seen while learning: one alert per
	// deviation, and the dry-run responder records a decision for each.
	if res.Alerts != res.Gen.Deviations || res.AlertRows != uint64(res.Gen.Deviations) {
		t.Errorf("%d alerts received, %d alert rows, for %d deviations", res.Alerts, res.AlertRows, res.Gen.Deviations)
	}
	if res.Actions != res.Alerts || res.ActionResults["dry_run"] == 0 {
		t.Errorf("actions %v for %d alerts; want one each, some dry_run (the /tmp executables score over the threshold)", res.ActionResults, res.Alerts)
	}
	if res.ProbeLag.N == 0 || res.AlertLag.N == 0 {
		t.Errorf("no lag measured: rows %+v alerts %+v", res.ProbeLag, res.AlertLag)
	}
}

// TestCheckCatchesLoss: a result with fewer rows than events, or a drop,
// fails the check (the load test cannot pass without having counted).
func TestCheckCatchesLoss(t *testing.T) {
	r := &loadtest.Result{Gen: loadtest.GeneratorStats{Events: 10}, RowsDistinct: 10}
	if err := r.Check(); err != nil {
		t.Fatalf("complete run: %v", err)
	}
	r.RowsDistinct = 9
	if r.Check() == nil {
		t.Fatal("a missing row passed the check")
	}
	r.RowsDistinct = 10
	r.Dropped = map[string]float64{"enricher/queue_full": 1}
	if r.Check() == nil {
		t.Fatal("a drop passed the check")
	}
}

// TestGeneratorShape publishes a bounded count to an embedded NATS and
// reads the raw stream back: the count is exact, each container's
// KIND_CONTAINER event precedes its other events, and every event is
// well-formed for the collector's schema.
func TestGeneratorShape(t *testing.T) {
	_, _, js := testenv.NATS(t)
	cfg := loadtest.DefaultGeneratorConfig()
	cfg.Hosts, cfg.ContainersPerHost, cfg.Images = 3, 7, 2
	cfg.Rate = 0
	cfg.Duration = 0
	cfg.MaxEvents = 5000
	cfg.BatchMaxEvents = 100
	cfg.DeviateAfter = 0
	cfg.DeviationFraction = 0.01
	g, err := loadtest.NewGenerator(cfg, js, nil)
	if err != nil {
		t.Fatal(err)
	}
	st, err := g.Run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if st.Events != cfg.MaxEvents {
		t.Fatalf("published %d events, want exactly %d", st.Events, cfg.MaxEvents)
	}
	if st.Containers != int64(cfg.Hosts*cfg.ContainersPerHost) || st.Deviations == 0 {
		t.Fatalf("stats %+v: want %d container events and some deviations", st, cfg.Hosts*cfg.ContainersPerHost)
	}
	ctx := context.Background()
	s, err := js.Stream(ctx, containv1.StreamRaw)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != uint64(st.Batches) {
		t.Fatalf("stream holds %d messages, %d batches published", info.State.Msgs, st.Batches)
	}
	announced := map[string]bool{}
	ids := map[string]bool{}
	var n int64
	for seq := uint64(1); seq <= info.State.LastSeq; seq++ {
		msg, err := s.GetMsg(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		b, err := bus.Decode(msg.Data)
		if err != nil {
			t.Fatalf("message %d: %v", seq, err)
		}
		if msg.Subject != containv1.RawSubject(b.Host) || b.Stage != "collector" {
			t.Fatalf("batch of host %q stage %q on %s", b.Host, b.Stage, msg.Subject)
		}
		for _, ev := range b.Events {
			n++
			if len(ev.Id) != 16 || ids[string(ev.Id)] || ev.WallNs == 0 || ev.Host != b.Host || ev.ContainerId == "" {
				t.Fatalf("bad envelope: %v", ev)
			}
			ids[string(ev.Id)] = true
			key := ev.Host + "/" + ev.ContainerId
			if ev.Kind == containv1.Kind_KIND_CONTAINER {
				if announced[key] {
					t.Fatalf("container %s announced twice", key)
				}
				announced[key] = true
				if ev.GetContainer().GetLabels()["org.opencontainers.image.ref.name"] == "" {
					t.Fatalf("container event without an image label: %v", ev)
				}
				continue
			}
			if !announced[key] {
				t.Fatalf("%s event of %s before its KIND_CONTAINER event", ev.Kind, key)
			}
		}
	}
	if n != st.Events {
		t.Fatalf("read back %d events, published %d", n, st.Events)
	}
}

func TestConfigValidateNamesKey(t *testing.T) {
	cfg := loadtest.DefaultConfig()
	if err := cfg.Validate(); err != nil {
		t.Fatalf("default config: %v", err)
	}
	cfg.Generator.Duration, cfg.Generator.MaxEvents = 0, 0
	if err := cfg.Validate(); err == nil || !bytes.Contains([]byte(err.Error()), []byte("loadtest.duration")) {
		t.Fatalf("unbounded run: %v", err)
	}
	cfg = loadtest.DefaultConfig()
	cfg.Responder.DryRun = false
	if err := cfg.Validate(); err == nil {
		t.Fatal("a responder that may freeze was accepted")
	}
}

// warnLogger logs the stages' warnings and errors to the test log (the
// analyzer and responder log every alert and action at info).
func warnLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(string(bytes.TrimRight(p, "\n")))
	return len(p), nil
}
