package loadtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// The process harness: start a program (a stage of `contain`, a
// nats-server) as a child process, kill -9 it, stop it, restart it with
// the same spec, and read its CPU time and memory from /proc. The chaos
// test runs the pipeline's stages with it; a fleet load test can run many.
//
//	bin, _ := loadtest.BuildGo(ctx, "github.com/containsec/contain/cmd/contain", dir)
//	p, _ := loadtest.StartProc(loadtest.ProcSpec{Name: "store", Path: bin, Args: []string{"store"},
//		Env: []string{"CONTAIN_STORE_DATABASE=x"}, LogFile: dir + "/store.log"})
//	p.Kill()                      // SIGKILL, waits until it is gone
//	p.Restart()                   // same spec, a new pid
//	u, _ := p.Sample()            // this incarnation's CPU and RSS; p.Totals() over all of them

// ProcSpec says how to start a process.
type ProcSpec struct {
	// Name labels the process in errors and logs.
	Name string
	// Path is the executable; Args its arguments (without argv[0]).
	Path string
	Args []string
	// Env is added to this process's environment (KEY=VALUE; later wins).
	Env []string
	// Dir is the working directory; empty: this process's.
	Dir string
	// LogFile receives stdout and stderr, appended across restarts; empty
	// discards them.
	LogFile string
}

// ProcUsage is what /proc says of one process.
type ProcUsage struct {
	// CPU is user + system time.
	CPU time.Duration
	// RSS is the resident set now; PeakRSS the high-water mark (VmHWM),
	// in bytes.
	RSS, PeakRSS uint64
}

// Proc is a child process that can be killed and restarted. Its methods
// are safe for concurrent use.
type Proc struct {
	spec ProcSpec

	mu     sync.Mutex
	cmd    *exec.Cmd
	done   chan struct{} // closed when the current incarnation exited
	exit   error         // its wait status
	starts int
	last   ProcUsage     // the current incarnation's last sample
	past   time.Duration // CPU of the incarnations that ended (their last samples)
	maxRSS uint64        // highest RSS or VmHWM sampled, over all incarnations
}

// StartProc starts spec's process.
func StartProc(spec ProcSpec) (*Proc, error) {
	p := &Proc{spec: spec}
	if err := p.start(); err != nil {
		return nil, err
	}
	return p, nil
}

// start starts a new incarnation; p.mu must not be held.
func (p *Proc) start() error {
	cmd := exec.Command(p.spec.Path, p.spec.Args...)
	cmd.Dir = p.spec.Dir
	cmd.Env = append(os.Environ(), p.spec.Env...)
	// Its own process group: a signal to the harness (Ctrl-C) is not
	// delivered to the children, which the harness stops itself.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	var logf *os.File
	if p.spec.LogFile != "" {
		f, err := os.OpenFile(p.spec.LogFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			return fmt.Errorf("proc %s: %w", p.spec.Name, err)
		}
		logf = f
		cmd.Stdout, cmd.Stderr = f, f
	}
	if err := cmd.Start(); err != nil {
		if logf != nil {
			logf.Close()
		}
		return fmt.Errorf("proc %s: starting %s: %w", p.spec.Name, p.spec.Path, err)
	}
	done := make(chan struct{})
	p.mu.Lock()
	p.cmd, p.done, p.exit = cmd, done, nil
	p.starts++
	p.last = ProcUsage{}
	p.mu.Unlock()
	go func() {
		err := cmd.Wait()
		if logf != nil {
			logf.Close()
		}
		p.mu.Lock()
		p.exit = err
		p.past += p.last.CPU
		p.last = ProcUsage{}
		p.mu.Unlock()
		close(done)
	}()
	return nil
}

// Name is the spec's name.
func (p *Proc) Name() string { return p.spec.Name }

// Pid is the current incarnation's process id.
func (p *Proc) Pid() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cmd.Process.Pid
}

// Starts is how many times the process was started.
func (p *Proc) Starts() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.starts
}

// Done is closed when the current incarnation exits.
func (p *Proc) Done() <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.done
}

// Running reports whether the current incarnation is alive.
func (p *Proc) Running() bool {
	select {
	case <-p.Done():
		return false
	default:
		return true
	}
}

// ExitErr is the current incarnation's wait status once it exited (nil
// while it runs or after a clean exit).
func (p *Proc) ExitErr() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.exit
}

// Kill sends SIGKILL (no cleanup in the process) and waits until it is
// gone; its last CPU time is sampled first. Killing an exited process
// does nothing.
func (p *Proc) Kill() {
	_, _ = p.Sample()
	p.signal(syscall.SIGKILL)
	<-p.Done()
}

// Stop sends SIGTERM and waits up to grace for the process to exit, then
// kills it. It reports whether the process exited by itself in time.
func (p *Proc) Stop(grace time.Duration) bool {
	_, _ = p.Sample()
	p.signal(syscall.SIGTERM)
	select {
	case <-p.Done():
		return true
	case <-time.After(grace):
		p.Kill()
		return false
	}
}

func (p *Proc) signal(sig syscall.Signal) {
	if !p.Running() {
		return
	}
	p.mu.Lock()
	proc := p.cmd.Process
	p.mu.Unlock()
	_ = proc.Signal(sig)
}

// Restart kills the current incarnation if it still runs and starts the
// spec again.
func (p *Proc) Restart() error {
	p.Kill()
	return p.start()
}

// Sample reads the current incarnation's usage from /proc and records it
// in the totals (Totals, MaxRSS). An exited process returns an error.
func (p *Proc) Sample() (ProcUsage, error) {
	p.mu.Lock()
	pid := p.cmd.Process.Pid
	done := p.done
	p.mu.Unlock()
	select {
	case <-done:
		return ProcUsage{}, fmt.Errorf("proc %s: exited", p.spec.Name)
	default:
	}
	u, err := ReadProcUsage(pid)
	if err != nil {
		return u, fmt.Errorf("proc %s: %w", p.spec.Name, err)
	}
	p.mu.Lock()
	if p.done == done { // not restarted meanwhile
		p.last = u
		p.maxRSS = max(p.maxRSS, u.RSS, u.PeakRSS)
	}
	p.mu.Unlock()
	return u, nil
}

// Totals is the CPU time over every incarnation (as of each one's last
// sample) and the highest RSS sampled in any of them.
func (p *Proc) Totals() (cpu time.Duration, maxRSS uint64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.past + p.last.CPU, p.maxRSS
}

// ReadProcUsage reads a process's CPU time (/proc/<pid>/stat utime +
// stime) and memory (/proc/<pid>/status VmRSS, VmHWM).
func ReadProcUsage(pid int) (ProcUsage, error) {
	var u ProcUsage
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return u, err
	}
	if u.CPU, err = parseStatCPU(stat); err != nil {
		return u, fmt.Errorf("/proc/%d/stat: %w", pid, err)
	}
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return u, err
	}
	u.RSS, u.PeakRSS = parseStatusKB(status, "VmRSS:")*1024, parseStatusKB(status, "VmHWM:")*1024
	return u, nil
}

// parseStatCPU returns utime + stime of a /proc/<pid>/stat line. The
// command (field 2) is in parentheses and may hold spaces: fields are
// counted after its closing parenthesis.
func parseStatCPU(stat []byte) (time.Duration, error) {
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, errors.New("no command field")
	}
	f := strings.Fields(string(stat[i+1:]))
	// f[0] is field 3 (state); utime and stime are fields 14 and 15.
	if len(f) < 13 {
		return 0, fmt.Errorf("%d fields", len(f)+2)
	}
	ut, err1 := strconv.ParseUint(f[11], 10, 64)
	st, err2 := strconv.ParseUint(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, err
	}
	return time.Duration(ut+st) * (time.Second / clockTick), nil
}

// parseStatusKB returns the kB value of a /proc/<pid>/status line ("VmRSS:
// 1234 kB"), 0 when absent (a zombie has no Vm lines).
func parseStatusKB(status []byte, key string) uint64 {
	for _, line := range strings.Split(string(status), "\n") {
		if rest, ok := strings.CutPrefix(line, key); ok {
			f := strings.Fields(rest)
			if len(f) > 0 {
				v, _ := strconv.ParseUint(f[0], 10, 64)
				return v
			}
		}
	}
	return 0
}

// BuildGo builds the Go package pkg (an import path of this module or of
// one it requires, e.g. github.com/nats-io/nats-server/v2) into dir and
// returns the binary's path. The build uses this module's go.mod and the
// module cache (offline); it must run inside the module.
func BuildGo(ctx context.Context, pkg, dir string) (string, error) {
	name := filepath.Base(pkg)
	if strings.HasPrefix(name, "v") && len(name) <= 3 { // .../nats-server/v2
		name = filepath.Base(filepath.Dir(pkg))
	}
	out := filepath.Join(dir, name)
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out, pkg)
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = io.Discard, &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("building %s: %w: %s", pkg, err, strings.TrimSpace(stderr.String()))
	}
	return out, nil
}
