package main

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"

	"github.com/containsec/contain/analyzer"
	"github.com/containsec/contain/internal/auth"
	"github.com/containsec/contain/internal/testenv"
)

// TestEndToEnd runs the whole pipeline for real: a runc container watched by
// the eBPF collector, embedded NATS, enricher, analyzer, responder and the
// ClickHouse sink, each stage connecting with its own credentials under the
// shipped deploy/nats/contain.conf permissions. After the learning window an unexpected executable in the
// container must get it frozen, with the exec, the alert and the action in
// ClickHouse, and `contain release` must thaw it.
func TestEndToEnd(t *testing.T) {
	testenv.RequireRoot(t)
	chAddr := testenv.ClickHouseAddr(t)
	a := deployNATS(t)
	natsURL := a.url
	var logs syncBuffer
	log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("stages said:\n%s", logs.String())
		}
	})

	const learning = 4 * time.Second
	db := fmt.Sprintf("contain_e2e_%d", time.Now().UnixNano())
	host := "node-a" // a host of deploy/nats/contain.conf
	cfg := defaultConfig()
	cfg.Host = host
	cfg.Auth.CredsDir = a.dir // the responder and analyzer trust its operator.nk
	cfg.Store.Addr = []string{chAddr}
	cfg.Store.Database = db
	cfg.Store.InsertMaxAge = 200 * time.Millisecond
	cfg.Analyzer.LearningWindow = learning
	// The deviation below is run through `runc exec`: an exec session,
	// scored (not just recorded) so that it pauses.
	cfg.Analyzer.ExecSessions = analyzer.ExecSessionsAlert
	cfg.Responder.Threshold = 0.5
	// The demo image is in no registry (and the network reaches none).
	cfg.Enricher.Registry.Enabled = false
	cfg.propagate()
	if err := cfg.validate(allStages); err != nil {
		t.Fatal(err)
	}

	ch, err := clickhouse.Open(&clickhouse.Options{Addr: []string{chAddr}, Settings: clickhouse.Settings{"allow_experimental_low_cardinality_type": 1}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = ch.Exec(context.Background(), "DROP DATABASE IF EXISTS "+db)
		_ = ch.Close()
	})

	a.startStages(t, cfg, host, allStages, log)
	t.Cleanup(func() {
		// No stage was refused anything it needs.
		if s := logs.String(); strings.Contains(s, "Permissions Violation") {
			t.Errorf("a stage was refused a permission:\n%s", grepLines(s, "Permissions Violation"))
		}
	})
	// The collector attaches in New, before runStages starts it; give the
	// stages a moment to be up by waiting for the streams' consumers.
	testenv.WaitFor(t, 20*time.Second, "stages to start", func() bool {
		return countRows(t, ch, "SELECT count() FROM system.tables WHERE database = '"+db+"' AND name = 'actions'") == 1
	})

	c := testenv.RunContainer(t, "e2e", testenv.ContainerSpec{
		Args: []string{"/bin/sh", "-c", "while true; do /bin/sleep 0.3; done"},
		Annotations: map[string]string{
			"org.opencontainers.image.ref.name": "demo/loop:1.0",
			"org.opencontainers.image.digest":   "sha256:" + strings.Repeat("ab", 32), // io.contain.image.* is the runtime's only
		},
	})
	// Normal behaviour during learning: the loop's own execs.
	testenv.WaitFor(t, 20*time.Second, "learning-time execs stored", func() bool {
		return countRows(t, ch, fmt.Sprintf("SELECT count() FROM %s.events WHERE container_id = '%s' AND kind = 'exec' AND exec_filename = '/bin/sleep'", db, c.ID)) > 0
	})
	time.Sleep(learning) // the learning window is a span of event time

	state, err := c.FreezerState()
	if err != nil || state != "THAWED" {
		t.Fatalf("before the deviation the container is %q (%v), want THAWED", state, err)
	}
	// The deviation: an executable never seen while learning.
	start := time.Now()
	go func() { _, _ = c.Exec(20*time.Second, "/bin/wget", "--help") }()
	testenv.WaitFor(t, 15*time.Second, "container frozen", func() bool {
		s, _ := c.FreezerState()
		return s == "FROZEN"
	})
	t.Logf("exec→frozen latency (observed by polling the freezer every 10ms): %v", time.Since(start))

	q := func(sql string) uint64 { return countRows(t, ch, fmt.Sprintf(sql, db, c.ID)) }
	testenv.WaitFor(t, 20*time.Second, "exec, alert and action in ClickHouse", func() bool {
		return q("SELECT count() FROM %s.events WHERE container_id = '%s' AND kind = 'exec' AND exec_filename = '/bin/wget'") >= 1 &&
			q("SELECT count() FROM %s.alerts WHERE container_id = '%s' AND has(reason_codes, 'exec.unseen') AND trigger_exec_filename = '/bin/wget'") >= 1 &&
			q("SELECT count() FROM %s.actions WHERE container_id = '%s' AND type = 'pause' AND result = 'ok'") >= 1
	})
	// The exec of /bin/wget is what the alert names; the responder froze on
	// the first alert over threshold (the exec's, or a syscall runc exec
	// made first) and recorded that alert's reasons.
	var reasons []string
	var score float64
	if err := ch.QueryRow(context.Background(), fmt.Sprintf(
		"SELECT reason_messages, score FROM %s.alerts WHERE container_id = '%s' AND has(reason_codes, 'exec.unseen') LIMIT 1", db, c.ID)).Scan(&reasons, &score); err != nil {
		t.Fatal(err)
	}
	if len(reasons) == 0 || !strings.Contains(reasons[0], "/bin/wget") || score < cfg.Responder.Threshold {
		t.Errorf("exec alert: reasons %q score %v; want a reason naming /bin/wget and a score over %v", reasons, score, cfg.Responder.Threshold)
	}
	var reason string
	var latency int64
	if err := ch.QueryRow(context.Background(), fmt.Sprintf(
		"SELECT reason, latency_ns FROM %s.actions WHERE container_id = '%s' AND type = 'pause' AND result = 'ok' LIMIT 1", db, c.ID)).Scan(&reason, &latency); err != nil {
		t.Fatal(err)
	}
	if reason == "" {
		t.Error("the pause action records no reason")
	}
	t.Logf("pause reason: %s", reason)
	t.Logf("alert→frozen latency recorded by the responder: %v", time.Duration(latency))
	if q("SELECT count() FROM %s.alerts WHERE container_id = '%s' AND trigger_exec_filename = '/bin/sleep'") != 0 {
		t.Error("the learned /bin/sleep raised an alert")
	}

	// Release through the CLI, as a responder would.
	root := newRoot()
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetArgs([]string{"release", c.ID, "--reason", "e2e: investigated", "--actor", "tester", "--nats-url", natsURL, "--host", host})
	// The operator's credentials come from CONTAIN_AUTH_CREDS_DIR; the
	// actor is that credential and this OS user, --actor only a note.
	actor := "operator/" + auth.LocalOSUser()
	if err := root.ExecuteContext(context.Background()); err != nil {
		t.Fatalf("contain release: %v", err)
	}
	t.Log(strings.TrimSpace(out.String()))
	testenv.WaitFor(t, 10*time.Second, "container thawed", func() bool {
		s, _ := c.FreezerState()
		return s == "THAWED"
	})
	// A learned executable runs again (an unlearned one would be, rightly,
	// a new deviation).
	if out, err := c.Exec(10*time.Second, "/bin/sleep", "0.01"); err != nil {
		t.Fatalf("container does not run after release: %q %v", out, err)
	}
	testenv.WaitFor(t, 20*time.Second, "release action in ClickHouse", func() bool {
		return q("SELECT count() FROM %s.actions WHERE container_id = '%s' AND type = 'release' AND result = 'ok' AND actor = '"+actor+"' AND position(reason, 'note: tester') > 0") >= 1
	})
}

// syncBuffer is a bytes.Buffer safe for concurrent writers (loggers).
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

func countRows(t *testing.T, ch clickhouse.Conn, sql string) uint64 {
	t.Helper()
	var n uint64
	if err := ch.QueryRow(context.Background(), sql).Scan(&n); err != nil {
		if strings.Contains(err.Error(), "doesn't exist") || strings.Contains(err.Error(), "UNKNOWN_TABLE") || strings.Contains(err.Error(), "Unknown") {
			return 0
		}
		t.Fatalf("%s: %v", sql, err)
	}
	return n
}
