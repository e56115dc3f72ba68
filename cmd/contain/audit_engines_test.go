package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"

	"github.com/containsec/contain/internal/testenv"
)

// auditConfigFile writes a config whose store is a fresh ClickHouse
// database (dropped when the test ends) and returns its path and a
// connection to that database.
func auditConfigFile(t *testing.T) (string, clickhouse.Conn, string) {
	t.Helper()
	addr := testenv.ClickHouseAddr(t)
	db := fmt.Sprintf("contain_audit_%d", time.Now().UnixNano())
	path := filepath.Join(t.TempDir(), "contain.yaml")
	if err := os.WriteFile(path, []byte(fmt.Sprintf("store:\n  addr: [%s]\n  database: %s\n", addr, db)), 0o644); err != nil {
		t.Fatal(err)
	}
	ch, err := clickhouse.Open(&clickhouse.Options{Addr: []string{addr}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = ch.Exec(context.Background(), "DROP DATABASE IF EXISTS "+db)
		_ = ch.Close()
	})
	return path, ch, db
}

func wantExit3(t *testing.T, err error, out string) {
	t.Helper()
	var ee exitError
	if !errors.As(err, &ee) || ee.code != 3 {
		t.Fatalf("exit: %v, want exit 3\n%s", err, out)
	}
}

// TestAuditReadOnlyPolicy: `contain audit --running --policy read-only`
// flags a writable docker container, passes a --read-only one (with a
// tmpfs and a declared volume), exits 3, and stores both verdicts.
func TestAuditReadOnlyPolicy(t *testing.T) {
	e := testenv.RequireEngines(t)
	cfgFile, ch, db := auditConfigFile(t)
	rw := e.DockerRun(t, "contain-audit-rw", []string{"-v", t.TempDir() + ":/data"})
	ro := e.DockerRun(t, "contain-audit-ro", []string{"--read-only", "--tmpfs", "/tmp", "-v", "/cache"})
	out, err := runCLI(t, "audit", "-c", cfgFile, "--running", "--policy", "read-only", "--store", "--format", "json",
		"--docker-host", e.DockerHost, "--containerd=", "--podman=false")
	wantExit3(t, err, out)
	var results []struct {
		Container struct{ ID string }
		Verdict   string
		Findings  []struct{ Code string }
	}
	if err := json.Unmarshal([]byte(out[:strings.LastIndex(out, "]")+1]), &results); err != nil {
		t.Fatalf("output: %v\n%s", err, out)
	}
	got := map[string]string{}
	for _, r := range results {
		var codes []string
		for _, f := range r.Findings {
			codes = append(codes, f.Code)
		}
		got[r.Container.ID] = r.Verdict + " " + strings.Join(codes, ",")
	}
	if got[rw.ID] != "fail rootfs.writable,mount.writable.undeclared" {
		t.Errorf("writable container: %q, want fail with rootfs.writable and the /data bind mount", got[rw.ID])
	}
	if got[ro.ID] != "pass " {
		t.Errorf("read-only container: %q, want pass (tmpfs /tmp, declared volume /cache)", got[ro.ID])
	}
	rows, err := ch.Query(context.Background(), "SELECT container_id, verdict, read_only_rootfs, runs_as_root FROM "+db+".container_audits WHERE policy = 'read-only'")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	stored := map[string]string{}
	for rows.Next() {
		var id, verdict string
		var roFS, root uint8
		if err := rows.Scan(&id, &verdict, &roFS, &root); err != nil {
			t.Fatal(err)
		}
		stored[id] = fmt.Sprintf("%s ro=%d root=%d", verdict, roFS, root)
	}
	if stored[rw.ID] != "fail ro=0 root=1" || stored[ro.ID] != "pass ro=1 root=1" {
		t.Errorf("container_audits rows: %v", stored)
	}
}

// TestAuditInventory: `contain audit --inventory` audits the busybox image
// in docker, containerd (namespace contain-test) and podman, stores the
// findings in image_audits and names the running container whose image
// failed.
func TestAuditInventory(t *testing.T) {
	e := testenv.RequireEngines(t)
	testenv.RequirePodman(t)
	cfgFile, ch, db := auditConfigFile(t)
	c := e.DockerRun(t, "contain-inventory-1", nil)
	start := time.Now()
	out, err := runCLI(t, "audit", "-c", cfgFile, "--inventory", "--store", "--fail-on", "medium",
		"--docker-host", e.DockerHost, "--containerd", e.Containerd, "--podman")
	wantExit3(t, err, out)
	t.Logf("inventory took %v:\n%s", time.Since(start), out)
	rows := map[string]bool{}
	for _, l := range strings.Split(out, "\n") {
		if f := strings.Fields(l); len(f) >= 3 {
			rows[strings.Join(f[:3], " ")] = true
		}
	}
	for _, want := range []string{
		"FAIL docker " + testenv.EnginesImage,
		"FAIL containerd " + testenv.EnginesNamespace + "/docker.io/" + testenv.EnginesImage,
		"FAIL podman " + testenv.PodmanImage,
		"docker contain-inventory-1 (" + c.ID[:12] + ")",
	} {
		if !rows[want] {
			t.Errorf("output lacks a row %q", want)
		}
	}
	if !strings.Contains(out, "Running containers whose image failed:") {
		t.Error("output lacks the running containers' report")
	}
	var n uint64
	if err := ch.QueryRow(context.Background(), "SELECT count() FROM "+db+".image_audits WHERE has(finding_codes, 'no_user') AND auditor LIKE 'contain audit --inventory@%'").Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n < 3 {
		t.Errorf("image_audits: %d inventory rows with no_user, want one per engine (3)", n)
	}
}
