package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/containsec/contain/internal/auth"
	"github.com/containsec/contain/internal/bus"
	"github.com/containsec/contain/internal/testenv"
	"github.com/containsec/contain/notify"
	"github.com/containsec/contain/schemas/containv1"
)

// dashboardFile is the shipped Grafana dashboard, relative to the module root.
const dashboardFile = "deploy/grafana/contain.json"

// metricName finds the series names a PromQL expression reads.
var metricName = regexp.MustCompile(`\b((?:contain|process|go)_[a-zA-Z0-9_]+)`)

// dashboardMetrics lists every metric name the dashboard's queries and
// variables read.
func dashboardMetrics(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(testenv.RepoRoot(t), dashboardFile))
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
		Templating struct {
			List []struct {
				Definition string `json:"definition"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}
	seen := map[string]bool{}
	add := func(expr string) {
		for _, m := range metricName.FindAllStringSubmatch(expr, -1) {
			seen[m[1]] = true
		}
	}
	for _, p := range d.Panels {
		if len(p.Targets) == 0 {
			t.Errorf("%s: panel %q has no query", dashboardFile, p.Title)
		}
		for _, tg := range p.Targets {
			add(tg.Expr)
		}
	}
	for _, v := range d.Templating.List {
		add(v.Definition)
	}
	var out []string
	for m := range seen {
		out = append(out, m)
	}
	sort.Strings(out)
	return out
}

// TestDashboardMetricsRegistered: every metric deploy/grafana/contain.json
// queries is served by a running pipeline's /metrics. The pipeline is
// `contain run` in this process with its embedded NATS and auth
// (notify, a dry-run responder, the analyzer); an alert published as the
// analyzer reaches notify's webhook with the responder's action, which
// also proves the notify role's permissions.
func TestDashboardMetricsRegistered(t *testing.T) {
	testenv.RequireRoot(t) // the responder
	var (
		mu    sync.Mutex
		kinds []string
	)
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var n notify.Notification
		if err := json.NewDecoder(r.Body).Decode(&n); err != nil {
			t.Errorf("webhook body: %v", err)
		}
		mu.Lock()
		kinds = append(kinds, n.Kind)
		mu.Unlock()
	}))
	defer hook.Close()

	const host = "dashhost"
	dir := t.TempDir()
	cfg := defaultConfig()
	cfg.Host = host
	cfg.Auth.CredsDir = filepath.Join(dir, "creds")
	cfg.NATS.Embedded.Port = freePort(t)
	cfg.NATS.Embedded.StoreDir = filepath.Join(dir, "nats")
	cfg.NATS.Health.CheckInterval = 200 * time.Millisecond
	cfg.Metrics.Listen = fmt.Sprintf("127.0.0.1:%d", freePort(t))
	cfg.Responder.DryRun = true
	cfg.Notify.Outputs = []notify.OutputConfig{{Name: "hook", Type: notify.TypeWebhook, URL: hook.URL}}
	cfg.propagate()
	log := testenv.Logger(t)
	t.Cleanup(startRun(t, &cfg, []string{stageNotify, stageResponder, stageAnalyzer}, true, log))

	url := fmt.Sprintf("nats://127.0.0.1:%d", cfg.NATS.Embedded.Port)
	var seed *auth.Credentials
	testenv.WaitFor(t, 20*time.Second, "the analyzer's credentials", func() bool {
		var err error
		seed, err = auth.LoadSeed(auth.SeedPath(cfg.Auth.CredsDir, auth.RoleAnalyzer))
		return err == nil
	})
	var (
		nc  *nats.Conn
		ajs jetstream.JetStream
		err error
	)
	testenv.WaitFor(t, 20*time.Second, "NATS as the analyzer", func() bool {
		nc, ajs, err = bus.Connect(url, "analyzer", log, nats.Nkey(seed.PublicKey(), seed.KP.Sign), nats.CustomInboxPrefix(auth.InboxPrefix(auth.RoleAnalyzer)))
		return err == nil
	})
	defer nc.Close()
	alert := &containv1.Event{Id: containv1.NewIDGen().Next(), Host: host, ContainerId: strings.Repeat("d", 64), Kind: containv1.Kind_KIND_ALERT,
		WallNs: time.Now().UnixNano(), SchemaVersion: containv1.SchemaVersion, Body: &containv1.Event_Alert{Alert: &containv1.Alert{Score: 0.99, Rule: "exec.unseen",
			Reasons: []*containv1.Reason{{Code: "exec.unseen", Message: "test", Score: 0.99, Mitre: []string{"T1059"}}}}}}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := bus.Publish(ctx, ajs, containv1.AlertsSubject(host), bus.NewProducer("central", "analyzer").Batch([]*containv1.Event{alert})); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 20*time.Second, "the alert and the responder's action at the webhook", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(kinds) >= 2
	})
	mu.Lock()
	t.Logf("webhook received: %v", kinds)
	mu.Unlock()

	var body string
	testenv.WaitFor(t, 10*time.Second, "/metrics", func() bool {
		resp, err := http.Get("http://" + cfg.Metrics.Listen + "/metrics")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		body = string(b)
		// notify observes a delivery's latency once the webhook's
		// response is back, after the webhook has the body.
		return resp.StatusCode == 200 && strings.Contains(body, "contain_consumer_lag{") &&
			strings.Contains(body, `contain_notify_delivery_seconds_bucket{`)
	})
	served := map[string]bool{}
	for _, l := range strings.Split(body, "\n") {
		if l == "" || l[0] == '#' {
			continue
		}
		if i := strings.IndexAny(l, "{ "); i > 0 {
			served[l[:i]] = true
		}
	}
	names := dashboardMetrics(t)
	if len(names) < 10 {
		t.Fatalf("only %d metrics found in %s: %v", len(names), dashboardFile, names)
	}
	for _, n := range names {
		if !served[n] {
			t.Errorf("%s queries %s, which /metrics does not serve", dashboardFile, n)
		}
	}
	for _, n := range []string{"contain_exec_to_alert_seconds_bucket", "contain_alert_to_frozen_seconds_bucket",
		"contain_exec_to_frozen_seconds_bucket", "contain_quarantined_containers"} {
		if !served[n] {
			t.Errorf("/metrics lacks %s", n)
		}
	}
}
