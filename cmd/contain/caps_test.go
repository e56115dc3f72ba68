package main

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/containsec/contain/internal/testenv"
)

// TestRunDropsCapabilities starts a real `contain run` as root with the
// collector (its eBPF programs loaded) and the responder, and reads its
// CapEff from /proc once it is running: only keepCaps remain.
func TestRunDropsCapabilities(t *testing.T) {
	testenv.RequireRoot(t)
	url, _, _ := testenv.NATS(t)
	dir := t.TempDir()
	bin := filepath.Join(dir, "contain")
	build := exec.Command("go", "build", "-o", bin, "./cmd/contain")
	build.Dir = testenv.RepoRoot(t)
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	run := exec.CommandContext(ctx, bin, "run", "--stages", "collector,responder", "--nats-url", url,
		"--metrics-listen", "", "--host", "capstest")
	run.Dir = dir
	stderr, err := run.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := run.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = run.Process.Signal(unix.SIGTERM); _ = run.Wait() }()
	sc := bufio.NewScanner(stderr)
	running := false
	var log []string
	for sc.Scan() {
		log = append(log, sc.Text())
		if strings.Contains(sc.Text(), "contain running") {
			running = true
			break
		}
	}
	go func() {
		for sc.Scan() {
		}
	}()
	if !running {
		t.Fatalf("contain run did not start:\n%s", strings.Join(log, "\n"))
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(run.Process.Pid) + "/status")
	if err != nil {
		t.Fatal(err)
	}
	var eff uint64
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "CapEff:"); ok {
			eff, err = strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			if err != nil {
				t.Fatal(err)
			}
		}
	}
	var want uint64
	for _, c := range keepCaps {
		want |= 1 << c
	}
	t.Logf("CapEff after start-up: %#x (kept %#x); log: %s", eff, want, strings.Join(log, "\n"))
	if eff == 0 || eff&^want != 0 {
		t.Fatalf("CapEff %#x: want a subset of %#x, non-empty", eff, want)
	}
	if eff&(1<<unix.CAP_NET_ADMIN) != 0 || eff&(1<<unix.CAP_SYS_MODULE) != 0 {
		t.Fatalf("CapEff %#x still has net_admin or sys_module", eff)
	}
}
