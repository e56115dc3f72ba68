package freezer

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"
)

// Method names.
const (
	MethodV1Freezer = "cgroup-v1-freezer"
	MethodV2Freeze  = "cgroup-v2-freeze"
	MethodRuncPause = "runc-pause"
)

// Method freezes and thaws a container one way. Freeze and Thaw return only
// after the new state was observed, or ctx ended.
type Method interface {
	Name() string
	// Applies reports whether the method can act on t.
	Applies(t *Target) bool
	Freeze(ctx context.Context, t *Target) error
	Thaw(ctx context.Context, t *Target) error
	// Frozen reads whether t is frozen by this method's means.
	Frozen(t *Target) (bool, error)
}

// MethodNames lists the known methods in the default order of preference.
func MethodNames() []string { return []string{MethodV1Freezer, MethodV2Freeze, MethodRuncPause} }

// NewMethods builds methods by name, in the given order. runcBinary is the
// runc executable for runc-pause (looked up on PATH when it has no slash).
// The engine methods are built without a client and never apply; use
// NewMethodsWith to give them one.
func NewMethods(names []string, roots Roots, runcBinary string) ([]Method, error) {
	return NewMethodsWith(names, roots, runcBinary, Engines{})
}

// NewMethodsWith is NewMethods with the engines' clients for docker-pause
// and containerd-pause.
func NewMethodsWith(names []string, roots Roots, runcBinary string, eng Engines) ([]Method, error) {
	var out []Method
	for _, n := range names {
		switch n {
		case MethodV1Freezer:
			out = append(out, v1Freezer{})
		case MethodV2Freeze:
			out = append(out, v2Freeze{})
		case MethodRuncPause:
			out = append(out, runcPause{binary: runcBinary, root: roots.RuncRoot})
		case MethodDockerPause, MethodContainerdPause:
			out = append(out, newEngineMethod(n, eng))
		default:
			return nil, fmt.Errorf("unknown freeze method %q (known: %s)", n, strings.Join(KnownMethods(), ", "))
		}
	}
	return out, nil
}

// Freeze freezes t with the first applicable method and returns it. A
// method that fails for another reason than the container having exited
// is followed by the next applicable one; the errors are joined.
func Freeze(ctx context.Context, methods []Method, t *Target) (Method, error) {
	r, err := FreezeReport(ctx, methods, t)
	return r.Method, err
}

// Report says how a freeze went.
type Report struct {
	// Method froze the container (nil on failure).
	Method Method
	// Tried are the failures of the methods tried before Method (each
	// wrapped with the method's name), e.g. docker-pause failing on an
	// unreachable engine before the v1 freezer froze.
	Tried []error
	// FrozenAt is when the container was first verified frozen: with an
	// engine method's cgroup2 pre-freeze, before the engine's pause
	// returned.
	FrozenAt time.Time
}

// contained is a method that can tell when it first verified the
// container frozen, before Freeze returns.
type contained interface {
	freeze(ctx context.Context, t *Target) (time.Time, error)
}

// FreezeReport is Freeze with a Report.
func FreezeReport(ctx context.Context, methods []Method, t *Target) (Report, error) {
	var r Report
	for i, m := range methods {
		if !m.Applies(t) {
			continue
		}
		mctx, cancel := ctx, context.CancelFunc(func() {})
		if _, v1 := m.(v1Freezer); v1 && laterApplies(methods[i+1:], t) {
			// A v1 freezer stuck in FREEZING (a task that does not reach
			// the refrigerator) leaves the next method, cgroup2's
			// cgroup.freeze in the default order, half of the time.
			if dl, ok := ctx.Deadline(); ok {
				mctx, cancel = context.WithTimeout(ctx, time.Until(dl)/2)
			}
		}
		var err error
		if c, ok := m.(contained); ok {
			r.FrozenAt, err = c.freeze(mctx, t)
		} else if err = m.Freeze(mctx, t); err == nil {
			r.FrozenAt = time.Now()
		}
		cancel()
		if err == nil {
			r.Method = m
			return r, nil
		}
		r.Tried = append(r.Tried, fmt.Errorf("%s: %w", m.Name(), err))
		if errors.Is(err, ErrExited) || ctx.Err() != nil {
			break
		}
	}
	if len(r.Tried) == 0 {
		return r, fmt.Errorf("%w to %s (freezer v1 %q, cgroup2 %q, runtime %q)", ErrNoMethod, t.ID, t.FreezerV1, t.Cgroup2, t.Runtime)
	}
	return r, errors.Join(r.Tried...)
}

// laterApplies reports whether one of methods applies to t.
func laterApplies(methods []Method, t *Target) bool {
	return slices.ContainsFunc(methods, func(m Method) bool { return m.Applies(t) })
}

// FrozenBy returns the applicable method that reports t frozen and that
// should thaw it, or nil. The cgroup files are read first (cheap); when
// they say thawed, nothing froze it (every pause shows there). When they
// say frozen, or no cgroup method applies, an engine that reports the
// container paused is preferred, since only the engine can make its own
// view agree again (`docker unpause` after a cgroup thaw would still say
// Paused); runc (a process start, 5-20 ms) is asked only when nothing
// else applies.
func FrozenBy(methods []Method, t *Target) Method {
	if frozen, err := cgroupFrozen(t); err == nil && frozen {
		for _, m := range methods {
			if _, eng := m.(engineMethod); eng && m.Applies(t) {
				if ok, err := m.Frozen(t); err == nil && ok {
					return m
				}
			}
		}
	}
	asked := false
	for _, m := range methods {
		if !isFileMethod(m) || !m.Applies(t) {
			continue
		}
		asked = true
		if ok, err := m.Frozen(t); err == nil && ok {
			return m
		}
	}
	if asked {
		return nil
	}
	for _, m := range methods {
		if _, slow := m.(runcPause); slow && m.Applies(t) {
			if ok, err := m.Frozen(t); err == nil && ok {
				return m
			}
		}
	}
	return nil
}

func isFileMethod(m Method) bool {
	switch m.(type) {
	case v1Freezer, v2Freeze:
		return true
	}
	return false
}

// Procs returns the pids in the target's cgroup.
func Procs(t *Target) ([]int, error) {
	f := t.ProcsFile()
	if f == "" {
		return nil, fmt.Errorf("%w: %s has no known cgroup", ErrNotFound, t.ID)
	}
	return readProcs(f)
}

func readProcs(file string) ([]int, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, ioErr(err)
	}
	var pids []int
	for _, f := range bytes.Fields(b) {
		n := 0
		for _, c := range f {
			if c < '0' || c > '9' {
				n = -1
				break
			}
			n = n*10 + int(c-'0')
		}
		if n > 0 {
			pids = append(pids, n)
		}
	}
	return pids, nil
}

// populated fails with ErrExited when file lists no process.
func populated(file string) error {
	pids, err := readProcs(file)
	if err != nil {
		return err
	}
	if len(pids) == 0 {
		return fmt.Errorf("%w: no process left in %s", ErrExited, filepath.Dir(file))
	}
	return nil
}

// ioErr maps a vanished cgroup to ErrExited and anything else to ErrIO.
func ioErr(err error) error {
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("%w: %v", ErrExited, err)
	}
	return fmt.Errorf("%w: %v", ErrIO, err)
}

func writeFile(path, val string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		return ioErr(err)
	}
	_, err = f.WriteString(val)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return ioErr(err)
	}
	return nil
}

// poll calls cond until it reports true, fails, or ctx ends. A freeze is
// usually seen within tens of microseconds (the tasks only need to be
// scheduled once), so the first reads follow each other at once (yielding
// the processor), then it backs off from 10us to 200us. One timer serves
// every wait.
func poll(ctx context.Context, what string, cond func() (bool, error)) error {
	const spins = 8
	wait := 10 * time.Microsecond
	var timer *time.Timer
	for i := 0; ; i++ {
		ok, err := cond()
		if err != nil {
			return err
		}
		if ok {
			return nil
		}
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("%w: %s: %v", ErrTimeout, what, err)
		}
		if i < spins {
			runtime.Gosched()
			continue
		}
		if timer == nil {
			timer = time.NewTimer(wait)
			defer timer.Stop()
		} else {
			timer.Reset(wait)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w: %s: %v", ErrTimeout, what, ctx.Err())
		case <-timer.C:
		}
		wait = min(2*wait, 200*time.Microsecond)
	}
}

// undoTimeout bounds the thaw that undoes a failed freeze: a freezer that
// never reported FROZEN may never report THAWED either, and the next
// method needs the time left. A kernel thaw is seen on the first read.
const undoTimeout = 100 * time.Millisecond

// undo runs a thaw undoing a failed freeze, within undoTimeout.
func undo(thaw func(context.Context) error) {
	ctx, cancel := context.WithTimeout(context.Background(), undoTimeout)
	defer cancel()
	_ = thaw(ctx)
}

// v1Freezer uses the cgroup v1 freezer hierarchy.
type v1Freezer struct{}

func (v1Freezer) Name() string           { return MethodV1Freezer }
func (v1Freezer) Applies(t *Target) bool { return t.FreezerV1 != "" }
func (v1Freezer) Frozen(t *Target) (bool, error) {
	s, err := v1State(t)
	return s == "FROZEN", err
}

func v1State(t *Target) (string, error) {
	b, err := os.ReadFile(filepath.Join(t.FreezerV1, "freezer.state"))
	if err != nil {
		return "", ioErr(err)
	}
	return string(bytes.TrimSpace(b)), nil
}

func (m v1Freezer) Freeze(ctx context.Context, t *Target) error {
	procs := filepath.Join(t.FreezerV1, "cgroup.procs")
	if err := populated(procs); err != nil {
		return err
	}
	if err := m.set(ctx, t, "FROZEN"); err != nil {
		undo(func(ctx context.Context) error { return m.set(ctx, t, "THAWED") })
		return err
	}
	if err := populated(procs); err != nil {
		undo(func(ctx context.Context) error { return m.set(ctx, t, "THAWED") })
		return err
	}
	return nil
}

func (m v1Freezer) Thaw(ctx context.Context, t *Target) error { return m.set(ctx, t, "THAWED") }

func (v1Freezer) set(ctx context.Context, t *Target, state string) error {
	file := filepath.Join(t.FreezerV1, "freezer.state")
	if err := writeFile(file, state); err != nil {
		return err
	}
	if state != "FROZEN" {
		return poll(ctx, "freezer.state "+state, func() (bool, error) {
			s, err := v1State(t)
			return s == state, err
		})
	}
	// FREEZING that lasts: a task the kernel's walk missed (forked during
	// it) is caught by writing FROZEN again; a multi-threaded process
	// caught in exec is not: its exec waits, uninterruptibly, for threads
	// already frozen to exit, so the cgroup stays FREEZING until thawed
	// (every freeze of a container whose runc init is starting its
	// process, or of a Go program exec'ing). A short thaw lets the exec
	// finish, then the freeze starts over; runc's own freeze does both.
	wrote, since := time.Now(), time.Now()
	stuck, pause := v1Stuck, v1StuckPause
	return poll(ctx, "freezer.state FROZEN", func() (bool, error) {
		s, err := v1State(t)
		if err != nil || s != "FREEZING" {
			return s == "FROZEN", err
		}
		now := time.Now()
		switch {
		case now.Sub(since) >= stuck:
			if err := writeFile(file, "THAWED"); err != nil {
				return false, err
			}
			select {
			case <-ctx.Done():
				return false, nil // poll reports the timeout
			case <-time.After(pause):
			}
			stuck, pause = 2*stuck, 2*pause
			since = time.Now()
		case now.Sub(wrote) < v1Rewrite:
			return false, nil
		}
		wrote = time.Now()
		return false, writeFile(file, "FROZEN")
	})
}

// v1Rewrite paces the writes of FROZEN while the v1 freezer reads
// FREEZING; after v1Stuck (doubling) it thaws for v1StuckPause
// (doubling) and freezes again. A freeze is verified within ~0.3 ms on an
// idle host and within tens of milliseconds under heavy load.
const (
	v1Rewrite    = time.Millisecond
	v1Stuck      = 50 * time.Millisecond
	v1StuckPause = time.Millisecond
)

// v2Freeze uses cgroup2's cgroup.freeze.
type v2Freeze struct{}

func (v2Freeze) Name() string           { return MethodV2Freeze }
func (v2Freeze) Applies(t *Target) bool { return t.Cgroup2 != "" }
func (v2Freeze) Frozen(t *Target) (bool, error) {
	b, err := os.ReadFile(filepath.Join(t.Cgroup2, "cgroup.events"))
	if err != nil {
		return false, ioErr(err)
	}
	return eventsFrozen(b), nil
}

// eventsFrozen reads "frozen 1" from cgroup.events.
func eventsFrozen(b []byte) bool {
	for _, line := range bytes.Split(b, []byte{'\n'}) {
		if k, v, ok := bytes.Cut(line, []byte{' '}); ok && string(k) == "frozen" {
			return string(bytes.TrimSpace(v)) == "1"
		}
	}
	return false
}

func (m v2Freeze) Freeze(ctx context.Context, t *Target) error {
	procs := filepath.Join(t.Cgroup2, "cgroup.procs")
	if err := populated(procs); err != nil {
		return err
	}
	if err := m.set(ctx, t, true); err != nil {
		undo(func(ctx context.Context) error { return m.set(ctx, t, false) })
		return err
	}
	if err := populated(procs); err != nil {
		undo(func(ctx context.Context) error { return m.set(ctx, t, false) })
		return err
	}
	return nil
}

func (m v2Freeze) Thaw(ctx context.Context, t *Target) error { return m.set(ctx, t, false) }

func (m v2Freeze) set(ctx context.Context, t *Target, frozen bool) error {
	val := "0"
	if frozen {
		val = "1"
	}
	if err := writeFile(filepath.Join(t.Cgroup2, "cgroup.freeze"), val); err != nil {
		return err
	}
	return poll(ctx, "cgroup.events frozen "+val, func() (bool, error) {
		ok, err := m.Frozen(t)
		return ok == frozen, err
	})
}

// runcPause runs `runc pause` / `runc resume` and checks `runc state`.
type runcPause struct {
	binary string
	root   string
}

func (runcPause) Name() string           { return MethodRuncPause }
func (runcPause) Applies(t *Target) bool { return t.Runtime == "runc" }
func (m runcPause) Frozen(t *Target) (bool, error) {
	s, err := m.status(context.Background(), t)
	return s == "paused", err
}

func (m runcPause) run(ctx context.Context, args ...string) ([]byte, error) {
	bin := m.binary
	if bin == "" {
		bin = "runc"
	}
	if m.root != "" {
		args = append([]string{"--root", m.root}, args...)
	}
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.WaitDelay = time.Second
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		msg := strings.TrimSpace(stderr.String())
		if strings.Contains(msg, "does not exist") || strings.Contains(msg, "not running") || strings.Contains(msg, "stopped") {
			return nil, fmt.Errorf("%w: %s %s: %s", ErrExited, bin, args[len(args)-2], msg)
		}
		return nil, fmt.Errorf("%w: %s %s: %v: %s", ErrIO, bin, strings.Join(args, " "), err, msg)
	}
	return out, nil
}

func (m runcPause) status(ctx context.Context, t *Target) (string, error) {
	out, err := m.run(ctx, "state", t.ID)
	if err != nil {
		return "", err
	}
	var s struct {
		Status string `json:"status"`
	}
	if err := json.Unmarshal(out, &s); err != nil {
		return "", fmt.Errorf("%w: runc state %s: %v", ErrIO, t.ID, err)
	}
	return s.Status, nil
}

func (m runcPause) Freeze(ctx context.Context, t *Target) error {
	if s, err := m.status(ctx, t); err != nil {
		return err
	} else if s != "running" && s != "paused" {
		return fmt.Errorf("%w: runc reports %s", ErrExited, s)
	}
	if _, err := m.run(ctx, "pause", t.ID); err != nil {
		return err
	}
	return poll(ctx, "runc state paused", func() (bool, error) { return m.Frozen(t) })
}

func (m runcPause) Thaw(ctx context.Context, t *Target) error {
	if _, err := m.run(ctx, "resume", t.ID); err != nil {
		return err
	}
	return poll(ctx, "runc state running", func() (bool, error) {
		s, err := m.status(ctx, t)
		return s == "running", err
	})
}
