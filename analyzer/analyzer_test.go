package analyzer

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/containsec/contain/internal/auth"
	"github.com/containsec/contain/internal/bus"
	"github.com/containsec/contain/internal/metrics"
	"github.com/containsec/contain/internal/testenv"
	"github.com/containsec/contain/schemas/containv1"
	"github.com/containsec/contain/schemas/kvdoc"
)

// alertsReader reads alerts from CONTAIN_ALERTS with an ordered consumer.
type alertsReader struct {
	t    *testing.T
	cons jetstream.Consumer
	got  []*containv1.Event
}

func newAlertsReader(t *testing.T, js jetstream.JetStream) *alertsReader {
	cons, err := js.OrderedConsumer(context.Background(), containv1.StreamAlerts, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	return &alertsReader{t: t, cons: cons}
}

// waitFor polls until cond holds on the alerts read so far.
func (r *alertsReader) waitFor(timeout time.Duration, what string, cond func([]*containv1.Event) bool) {
	r.t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		msgs, err := r.cons.Fetch(16, jetstream.FetchMaxWait(100*time.Millisecond))
		if err == nil {
			for m := range msgs.Messages() {
				b, err := bus.Decode(m.Data())
				if err != nil {
					r.t.Fatalf("alert batch: %v", err)
				}
				if !strings.HasPrefix(m.Subject(), containv1.SubjectPrefix+".alerts.") || b.Stage != metrics.StageAnalyzer {
					r.t.Fatalf("alert on %s from %s", m.Subject(), b.Stage)
				}
				r.got = append(r.got, b.Events...)
			}
		}
		if cond(r.got) {
			return
		}
	}
	r.t.Fatalf("timed out waiting for %s; got %d alerts", what, len(r.got))
}

func startAnalyzer(t *testing.T, js jetstream.JetStream, cfg Config) (a *Analyzer, m *metrics.Metrics, stop func()) {
	t.Helper()
	return startAnalyzerWith(t, js, cfg, func(*Analyzer) {})
}

func publishEvents(t *testing.T, js jetstream.JetStream, p *bus.Producer, evs ...*containv1.Event) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := bus.Publish(ctx, js, containv1.EventsSubject("h1"), p.Batch(evs)); err != nil {
		t.Fatal(err)
	}
}

func TestAnalyzerAlertsOverNATS(t *testing.T) {
	_, _, js := testenv.NATS(t)
	cfg := DefaultConfig()
	cfg.LearningWindow = 3 * time.Second
	cfg.PersistInterval = 100 * time.Millisecond
	startAnalyzer(t, js, cfg)
	r := newAlertsReader(t, js)
	enr := bus.NewProducer("h1", metrics.StageEnricher)

	// The benign workload, in event time, in two batches.
	publishEvents(t, js, enr, execEv("c1", sec(0), "/bin/httpd", "/bin/httpd", "-f"), execEv("c1", sec(1), "/bin/sleep", "sleep", "1"))
	publishEvents(t, js, enr, execEv("c1", sec(2), "/bin/sleep", "sleep", "1"), sysEv("c1", sec(2), "read"))
	// The deviation, after the learning window; a malformed message in
	// between is skipped.
	if _, err := js.Publish(context.Background(), containv1.EventsSubject("h1"), []byte("not a batch")); err != nil {
		t.Fatal(err)
	}
	wget := execEv("c1", sec(5), "/bin/wget", "wget", "http://10.0.0.9/x")
	publishEvents(t, js, enr, execEv("c1", sec(4.5), "/bin/sleep", "sleep", "1"), wget)

	r.waitFor(10*time.Second, "the wget alert", func(got []*containv1.Event) bool { return len(got) >= 1 })
	al := r.got[0]
	a := al.GetAlert()
	if al.Kind != containv1.Kind_KIND_ALERT || al.ContainerId != "c1" || string(a.EvidenceIds[0]) != string(wget.Id) {
		t.Fatalf("alert %v", al)
	}
	want := `"/bin/wget" was never executed by image demo:1 during learning (learned 2 executables over 3s)`
	if r := hasCode(a, CodeExecUnseen); r == nil || r.Message != want {
		t.Fatalf("reasons %v", a.Reasons)
	}
	t.Logf("alert: score=%v priority=%s rule=%q reason=%q", a.Score, a.Priority, a.Rule, a.Reasons[0].Message)
}

func TestAnalyzerPersistsAndAppliesOps(t *testing.T) {
	_, _, js := testenv.NATS(t)
	cfg := DefaultConfig()
	cfg.LearningWindow = 3 * time.Second
	cfg.PersistInterval = 50 * time.Millisecond
	op, err := auth.Generate("operator")
	if err != nil {
		t.Fatal(err)
	}
	cfg.OperatorKeys = []string{op.Trusted()}
	_, am, stop := startAnalyzer(t, js, cfg)
	enr := bus.NewProducer("h1", metrics.StageEnricher)
	publishEvents(t, js, enr, execEv("c1", sec(0), "/bin/httpd"), execEv("c1", sec(4), "/bin/httpd"))
	ctx := context.Background()
	st, err := OpenStore(ctx, js, cfg.BaselinesBucket)
	if err != nil {
		t.Fatal(err)
	}
	var d *Doc
	testenv.WaitFor(t, 10*time.Second, "baseline persisted converged", func() bool {
		d, err = st.Get(ctx, "sha256:aaaa")
		return err == nil && d.Phase == "converged"
	})
	if d.Executables["/bin/httpd"] != 1 {
		t.Errorf("executables %v", d.Executables)
	}
	// A manual lock through the bucket reaches the running analyzer.
	if err := LockBaseline(ctx, js, cfg.BaselinesBucket, "sha256:aaaa", auth.NewSigner(op)); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 10*time.Second, "lock applied and persisted", func() bool {
		d, err = st.Get(ctx, "sha256:aaaa")
		return err == nil && d.Phase == "locked" && d.Op == ""
	})
	// The operator's version, in the bucket's history, records who: the
	// signing credential and OS user.
	hist, _, err := st.History(ctx, "sha256:aaaa")
	if err != nil {
		t.Fatal(err)
	}
	var actor string
	for _, h := range hist {
		if h.Op == "lock" {
			actor = h.OpActor
		}
	}
	if actor != auth.NewSigner(op).Actor() {
		t.Fatalf("lock recorded by %q, want %q", actor, auth.NewSigner(op).Actor())
	}
	// Forged operations: unsigned, and signed by a key the analyzer does
	// not trust, each claiming to unlock. Refused, counted, still locked.
	forged := *d
	forged.Op, forged.OpActor = "unlock", "operator/root (uid 0)"
	if _, err := st.Save(ctx, &forged); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 10*time.Second, "unsigned op refused", func() bool {
		return testutil.ToFloat64(am.Refused.WithLabelValues(metrics.StageAnalyzer, auth.ReasonUnsigned)) == 1
	})
	mallory, _ := auth.Generate("operator")
	forged2 := *d
	if err := signOp(&forged2, "unlock", auth.NewSigner(mallory)); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Save(ctx, &forged2); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 10*time.Second, "op signed by an unknown key refused", func() bool {
		return testutil.ToFloat64(am.Refused.WithLabelValues(metrics.StageAnalyzer, auth.ReasonUnknownKey)) == 1
	})
	testenv.WaitFor(t, 10*time.Second, "the analyzer's locked version back over the forged ones", func() bool {
		d, err = st.Get(ctx, "sha256:aaaa")
		return err == nil && d.Phase == "locked" && d.Op == ""
	})
	stop()

	// A restarted analyzer loads it; a corrupt entry is counted, not loaded.
	kv, _ := js.KeyValue(ctx, cfg.BaselinesBucket)
	if _, err := kv.Put(ctx, kvdoc.EscapeKey("sha256:bad"), []byte(`{"format":"contain.baseline/v1","key":"sha256:bad","checksum":"00"}`)); err != nil {
		t.Fatal(err)
	}
	cfg.Durable = "analyzer2"
	a2, m2, _ := startAnalyzer(t, js, cfg)
	testenv.WaitFor(t, 10*time.Second, "baselines loaded", func() bool {
		var ph Phase
		a2.Engine(func(e *Engine) {
			if b := e.Baseline("sha256:aaaa"); b != nil {
				ph = b.Phase
			}
		})
		return ph == PhaseLocked
	})
	testenv.WaitFor(t, 5*time.Second, "corrupt counted", func() bool {
		return counterValue(t, m2, "contain_errors_total", "baseline_corrupt") == 1
	})
	var loaded bool
	a2.Engine(func(e *Engine) { loaded = e.Baseline("sha256:bad") != nil })
	if loaded {
		t.Error("corrupt baseline loaded")
	}
}

func counterValue(t *testing.T, m *metrics.Metrics, name, kind string) float64 {
	t.Helper()
	mfs, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, mt := range mf.Metric {
			for _, l := range mt.Label {
				if l.GetName() == "kind" && l.GetValue() == kind {
					sum += mt.GetCounter().GetValue()
				}
			}
		}
	}
	return sum
}
