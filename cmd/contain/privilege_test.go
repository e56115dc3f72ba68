package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"

	"github.com/containsec/contain/internal/bus"
	"github.com/containsec/contain/internal/testenv"
	"github.com/containsec/contain/schemas/containv1"
)

const nobody = 65534

// buildContain builds the contain binary where an unprivileged user can
// run it.
func buildContain(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "contain-bin-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "contain")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/contain")
	cmd.Dir = testenv.RepoRoot(t)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

func asNobody(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: nobody}}
	cmd.Env = append(os.Environ(), "HOME=/nonexistent")
}

// TestStagesRunUnprivileged runs the enricher, analyzer and ClickHouse sink
// as the nobody user (the real binary, `contain run --stages ...`) and
// checks that events flow into ClickHouse; the collector, which needs
// root, refuses clearly as nobody.
func TestStagesRunUnprivileged(t *testing.T) {
	testenv.RequireRoot(t)
	chAddr := testenv.ClickHouseAddr(t)
	url, _, js := testenv.NATS(t)
	bin := buildContain(t)
	db := fmt.Sprintf("contain_unpriv_%d", time.Now().UnixNano())
	ch, err := clickhouse.Open(&clickhouse.Options{Addr: []string{chAddr}, Settings: clickhouse.Settings{"allow_experimental_low_cardinality_type": 1}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ch.Exec(context.Background(), "DROP DATABASE IF EXISTS "+db); ch.Close() })

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var logs bytes.Buffer
	run := exec.CommandContext(ctx, bin, "run", "--stages", "enricher,analyzer,store", "--nats-url", url,
		"--clickhouse", chAddr, "--metrics-listen", "", "--host", "unpriv")
	asNobody(run)
	run.Env = append(run.Env, "CONTAIN_STORE_DATABASE="+db, "CONTAIN_ENRICHER_REGISTRY_ENABLED=false", "CONTAIN_STORE_INSERT_MAX_AGE=100ms")
	run.Stdout, run.Stderr = &logs, &logs
	run.Cancel = func() error { return run.Process.Signal(os.Interrupt) }
	run.WaitDelay = 10 * time.Second
	if err := run.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		_ = run.Wait()
		if t.Failed() {
			t.Logf("contain run (as nobody) said:\n%s", logs.String())
		}
	})

	ids := containv1.NewIDGen()
	now := time.Now().UnixNano()
	evs := []*containv1.Event{{Id: ids.Next(), Host: "unpriv", ContainerId: "u1", Kind: containv1.Kind_KIND_CONTAINER, WallNs: now,
		SchemaVersion: containv1.SchemaVersion, Body: &containv1.Event_Container{Container: &containv1.ContainerInfo{Runtime: "runc",
			Labels: map[string]string{"org.opencontainers.image.ref.name": "demo/unpriv:1"}}}}}
	for i := range 10 {
		evs = append(evs, &containv1.Event{Id: ids.Next(), Host: "unpriv", ContainerId: "u1", Kind: containv1.Kind_KIND_EXEC,
			WallNs: now + int64(i), SchemaVersion: containv1.SchemaVersion,
			Body: &containv1.Event_Exec{Exec: &containv1.Exec{Filename: "/bin/sleep", Argv: []string{"sleep", "1"}}}})
	}
	if err := bus.Publish(ctx, js, containv1.RawSubject("unpriv"), bus.NewProducer("unpriv", "collector").Batch(evs)); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 30*time.Second, "events stored by the unprivileged stages", func() bool {
		return countRows(t, ch, "SELECT count() FROM system.tables WHERE database = '"+db+"' AND name = 'events'") == 1 &&
			countRows(t, ch, fmt.Sprintf("SELECT count() FROM %s.events WHERE container_id = 'u1' AND image_ref = 'demo/unpriv:1'", db)) == uint64(len(evs))
	})
	// The stages really ran as nobody.
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", run.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(status), fmt.Sprintf("Uid:\t%d\t%d", nobody, nobody)) {
		t.Fatalf("contain run is not running as nobody:\n%s", status)
	}

	// The collector needs root and says so.
	col := exec.Command(bin, "collect", "--nats-url", url, "--metrics-listen", "", "--host", "unpriv")
	asNobody(col)
	out, err := col.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "needs root") {
		t.Fatalf("collector as nobody: err %v, output:\n%s", err, out)
	}
	t.Logf("collector as nobody: %s", strings.TrimSpace(string(out)))
}
