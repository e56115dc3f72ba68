package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containsec/contain/internal/auth"
	"github.com/containsec/contain/internal/testenv"
)

// TestDeployConfMatchesTable: deploy/nats/contain.conf is exactly what
// `contain nats-conf --hosts node-a,node-b` makes from the permission table
// the embedded server enforces, so the shipped file cannot drift from it.
func TestDeployConfMatchesTable(t *testing.T) {
	var want bytes.Buffer
	if err := writeNATSConf(&want, deployConfHosts); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(testenv.RepoRoot(t), deployConf)
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want.Bytes()) {
		t.Fatalf("%s differs from the permission table; regenerate it:\n  go run ./cmd/contain nats-conf --hosts %s > %s",
			deployConf, strings.Join(deployConfHosts, ","), deployConf)
	}
	// The CLI prints the same, and refuses a host that is no subject token.
	out, err := runCLI(t, "nats-conf", "--hosts", strings.Join(deployConfHosts, ","))
	if err != nil || out != want.String() {
		t.Fatalf("contain nats-conf: %v", err)
	}
	if _, err := runCLI(t, "nats-conf", "--hosts", "a.b"); err == nil || !strings.Contains(err.Error(), "--hosts") {
		t.Fatalf("nats-conf accepted host a.b: %v", err)
	}
	// Every user of the table is in the file, with its key variable.
	for _, u := range auth.Table(auth.DefaultNames(), deployConfHosts) {
		if !strings.Contains(string(got), "nkey: $"+auth.EnvVar(u.Name)+"\n") {
			t.Errorf("%s: no user %s", deployConf, u.Name)
		}
	}
}
