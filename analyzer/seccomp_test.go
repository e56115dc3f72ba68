package analyzer

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/containsec/contain/internal/testenv"
)

// learnedShellSyscalls is what busybox sh, sleep and true use beyond the
// runtime set, as a collector in FIRST mode reports them.
var learnedShellSyscalls = []string{
	"wait4", "rt_sigsuspend", "setpgid", "getpgid", "getpgrp", "pipe2", "dup2", "stat", "lstat", "fstatfs",
	"sysinfo", "times", "getpid", "nanosleep", "clock_nanosleep", "restart_syscall", "umask", "pause",
}

func TestSeccompExportRunsRuncContainer(t *testing.T) {
	testenv.RequireRoot(t)
	testenv.RequireCommand(t, "runc")
	e := newEngine(t, testConfig(), nil)
	for i, s := range learnedShellSyscalls {
		e.Observe(sysEv("c1", sec(float64(i)/100), s))
	}
	d, err := e.Snapshot("sha256:aaaa")
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := WriteDoc(&buf, d, FormatSeccomp); err != nil {
		t.Fatal(err)
	}
	var prof map[string]any
	if err := json.Unmarshal(buf.Bytes(), &prof); err != nil {
		t.Fatalf("profile is not JSON: %v", err)
	}
	names := SeccompSyscalls(d, SeccompOptions{})
	for _, banned := range []string{"unshare", "chroot", "mount", "ptrace"} {
		for _, n := range names {
			if n == banned {
				t.Fatalf("%s allowed", banned)
			}
		}
	}
	c := testenv.RunContainer(t, "seccomp", testenv.ContainerSpec{
		Edit: func(cfg map[string]any) { cfg["linux"].(map[string]any)["seccomp"] = prof },
	})
	testenv.WaitFor(t, 10*time.Second, "container running", func() bool {
		s, err := c.State()
		return err == nil && s.Status == "running"
	})
	if out, err := c.Exec(10*time.Second, "/bin/sh", "-c", "echo learned-ok"); err != nil || !strings.Contains(out, "learned-ok") {
		t.Fatalf("learned behaviour refused under the profile: %v: %s", err, out)
	}
	out, err := c.Exec(10*time.Second, "/bin/unshare", "-m", "/bin/true")
	if err == nil || !strings.Contains(strings.ToLower(out), "not permitted") {
		t.Fatalf("unshare not denied: err=%v out=%q", err, out)
	}
	out, err = c.Exec(10*time.Second, "/bin/chroot", "/", "/bin/true")
	if err == nil || !strings.Contains(strings.ToLower(out), "not permitted") {
		t.Fatalf("chroot not denied: err=%v out=%q", err, out)
	}
	t.Logf("profile allows %d syscalls; unshare and chroot denied: %q", len(names), strings.TrimSpace(out))
	if s, err := c.State(); err != nil || s.Status != "running" {
		t.Errorf("container state %v %v", s, err)
	}
}
