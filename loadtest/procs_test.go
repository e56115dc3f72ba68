package loadtest

import (
	"path/filepath"
	"testing"
	"time"
)

// TestProcKillRestart: a process is killed -9 and restarted with a new
// pid, its usage is read from /proc, and its CPU time adds up over
// incarnations.
func TestProcKillRestart(t *testing.T) {
	log := filepath.Join(t.TempDir(), "spin.log")
	// Spins for CPU time, then sleeps: RSS and CPU are non-zero.
	p, err := StartProc(ProcSpec{Name: "spin", Path: "/bin/sh",
		Args: []string{"-c", "echo started; i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done; exec sleep 60"}, LogFile: log})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Kill()
	first := p.Pid()
	deadline := time.Now().Add(20 * time.Second)
	var u ProcUsage
	for time.Now().Before(deadline) {
		if u, err = p.Sample(); err != nil {
			t.Fatal(err)
		}
		if u.CPU > 0 {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if u.CPU == 0 || u.RSS == 0 || u.PeakRSS < u.RSS {
		t.Fatalf("usage %+v: want CPU time and RSS", u)
	}
	p.Kill()
	if p.Running() || p.ExitErr() == nil {
		t.Fatalf("after Kill: running %v, exit %v", p.Running(), p.ExitErr())
	}
	if _, err := p.Sample(); err == nil {
		t.Fatal("sampled a dead process")
	}
	if err := p.Restart(); err != nil {
		t.Fatal(err)
	}
	if p.Pid() == first || !p.Running() || p.Starts() != 2 {
		t.Fatalf("restart: pid %d (was %d), running %v, starts %d", p.Pid(), first, p.Running(), p.Starts())
	}
	cpu, maxRSS := p.Totals()
	if cpu < u.CPU || maxRSS < u.RSS {
		t.Fatalf("totals cpu %v rss %d lost the first incarnation's %+v", cpu, maxRSS, u)
	}
	if !p.Stop(5 * time.Second) {
		t.Fatal("sleep did not stop on SIGTERM")
	}
}

func TestParseStatCPU(t *testing.T) {
	// A command with spaces and parentheses; utime 250, stime 50 ticks.
	stat := []byte("1234 (a (b) c) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 1 0 100 1000 10")
	d, err := parseStatCPU(stat)
	if err != nil || d != 3*time.Second {
		t.Fatalf("cpu %v, %v; want 3s", d, err)
	}
	if _, err := parseStatCPU([]byte("1234 (x) S 1")); err == nil {
		t.Fatal("a short line parsed")
	}
	if v := parseStatusKB([]byte("Name:\tx\nVmHWM:\t  2048 kB\nVmRSS:\t 1024 kB\n"), "VmRSS:"); v != 1024 {
		t.Fatalf("VmRSS %d", v)
	}
}
