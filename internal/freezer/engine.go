package freezer

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/containsec/contain/internal/engines"
)

// Engine method names.
const (
	// MethodDockerPause pauses through the Docker Engine API, so `docker
	// ps` shows the container Paused and `docker unpause` works.
	MethodDockerPause = "docker-pause"
	// MethodContainerdPause pauses the container's task through
	// containerd's task service (`ctr tasks ls` shows PAUSED).
	MethodContainerdPause = "containerd-pause"
)

// Engines are the clients the engine methods use; a nil client leaves its
// method never applying.
type Engines struct {
	Docker     *engines.Docker
	Containerd *engines.Containerd
	// Timeout bounds an engine method's whole freeze or thaw (the engine
	// call and the verification), so a hung engine leaves time for the
	// next method. Default 1 s.
	Timeout time.Duration
	// PreFreeze: on a hybrid host (the target has a v1 freezer and a
	// cgroup2 directory; the runtimes pause through the v1 freezer), the
	// engine methods first freeze the cgroup2 directory (cgroup.freeze,
	// ~0.1 ms), then ask the engine to pause, then thaw cgroup2, leaving
	// the container paused by its engine only. The container is contained
	// from the first step, not after the engine's ~5-10 ms. Measured here:
	// runc pauses through the v1 freezer while cgroup2 holds the tasks
	// frozen, and `docker unpause` works afterwards.
	PreFreeze bool
}

func (e Engines) timeout() time.Duration {
	if e.Timeout <= 0 {
		return time.Second
	}
	return e.Timeout
}

// KnownMethods lists every method name.
func KnownMethods() []string {
	return append(MethodNames(), MethodDockerPause, MethodContainerdPause)
}

// DefaultMethods is the default order for a runtime's containers: the
// engine's own pause first (so the engine agrees with what was done), the
// cgroup files as the fallback; other runtimes get MethodNames().
func DefaultMethods(runtime string) []string {
	switch runtime {
	case RuntimeDocker:
		return []string{MethodDockerPause, MethodV1Freezer, MethodV2Freeze}
	case RuntimeContainerd:
		return []string{MethodContainerdPause, MethodV1Freezer, MethodV2Freeze}
	}
	return MethodNames()
}

// MethodRuntime is the runtime an engine method is limited to, or "" for
// the cgroup methods, which act on any container; runc-pause acts on
// RuntimeRunc containers only.
func MethodRuntime(name string) string {
	switch name {
	case MethodDockerPause:
		return RuntimeDocker
	case MethodContainerdPause:
		return RuntimeContainerd
	case MethodRuncPause:
		return RuntimeRunc
	}
	return ""
}

// engine is what the two engine methods share: pause, resume and read the
// engine's view of one target.
type engine interface {
	pause(ctx context.Context, t *Target) error
	resume(ctx context.Context, t *Target) error
	// state reads whether the engine reports t paused, and running.
	state(ctx context.Context, t *Target) (paused, running bool, err error)
}

// engineMethod freezes through an engine and verifies both the engine's
// view and the cgroup.
type engineMethod struct {
	name      string
	runtime   string
	eng       engine // nil: never applies
	timeout   time.Duration
	preFreeze bool
}

func (m engineMethod) Name() string { return m.name }

func (m engineMethod) Applies(t *Target) bool {
	return m.eng != nil && t.Runtime == m.runtime && (t.FreezerV1 != "" || t.Cgroup2 != "") &&
		(m.runtime != RuntimeContainerd || t.Namespace != "")
}

// Frozen reads the engine's view: paused.
func (m engineMethod) Frozen(t *Target) (bool, error) {
	ctx, cancel := context.WithTimeout(context.Background(), m.timeout)
	defer cancel()
	paused, _, err := m.eng.state(ctx, t)
	if err != nil {
		return false, m.mapErr(t, err)
	}
	return paused, nil
}

func (m engineMethod) Freeze(ctx context.Context, t *Target) error {
	_, err := m.freeze(ctx, t)
	return err
}

// freeze freezes t and returns when it was first verified frozen: at the
// cgroup2 pre-freeze when there is one, else at the engine's verified
// pause.
func (m engineMethod) freeze(ctx context.Context, t *Target) (contained time.Time, err error) {
	ctx, cancel := context.WithTimeout(ctx, m.timeout)
	defer cancel()
	procs := t.ProcsFile()
	if err := populated(procs); err != nil {
		return time.Time{}, err
	}
	if m.preFreeze && t.FreezerV1 != "" && t.Cgroup2 != "" {
		v2 := v2Freeze{}
		defer func() {
			// The engine's pause holds it now (or it failed and was
			// undone): cgroup2 lets go either way.
			tctx, tcancel := context.WithTimeout(context.Background(), m.timeout)
			defer tcancel()
			if terr := v2.set(tctx, t, false); terr != nil && err == nil {
				m.undo(t)
				contained, err = time.Time{}, fmt.Errorf("thawing the cgroup2 pre-freeze: %w", terr)
			}
		}()
		if err := v2.set(ctx, t, true); err != nil {
			return time.Time{}, err
		}
		if err := populated(procs); err != nil {
			return time.Time{}, err
		}
		contained = time.Now()
	}
	if err := m.eng.pause(ctx, t); err != nil {
		return time.Time{}, m.mapErr(t, err)
	}
	err = poll(ctx, m.name+" paused and cgroup frozen", func() (bool, error) {
		paused, _, err := m.eng.state(ctx, t)
		if err != nil {
			return false, m.mapErr(t, err)
		}
		if !paused {
			return false, nil
		}
		return cgroupFrozen(t)
	})
	if err == nil {
		err = populated(procs)
	}
	if err != nil {
		m.undo(t)
		return time.Time{}, err
	}
	if contained.IsZero() {
		contained = time.Now()
	}
	return contained, nil
}

func (m engineMethod) undo(t *Target) {
	uctx, ucancel := context.WithTimeout(context.Background(), m.timeout)
	defer ucancel()
	_ = m.eng.resume(uctx, t)
}

func (m engineMethod) Thaw(ctx context.Context, t *Target) error {
	ctx, cancel := context.WithTimeout(ctx, m.timeout)
	defer cancel()
	if m.preFreeze && t.FreezerV1 != "" && t.Cgroup2 != "" {
		// A pre-freeze left behind (a crash between it and its thaw)
		// would keep the container stopped under a resumed engine.
		if frozen, err := (v2Freeze{}).Frozen(t); err == nil && frozen {
			if err := (v2Freeze{}).set(ctx, t, false); err != nil {
				return err
			}
		}
	}
	perr := m.eng.resume(ctx, t)
	err := poll(ctx, m.name+" running and cgroup thawed", func() (bool, error) {
		paused, running, err := m.eng.state(ctx, t)
		if err != nil {
			return false, m.mapErr(t, err)
		}
		if paused || !running {
			if perr != nil {
				return false, m.mapErr(t, perr) // not resumed: say why
			}
			return false, nil
		}
		frozen, err := cgroupFrozen(t)
		return !frozen, err
	})
	return err
}

// mapErr maps an engine error: the container's cgroup empty or gone is
// ErrExited, anything else ErrEngine (the cgroup still holds processes,
// so another method may act).
func (m engineMethod) mapErr(t *Target, err error) error {
	if perr := populated(t.ProcsFile()); errors.Is(perr, ErrExited) {
		return fmt.Errorf("%w (%s: %v)", perr, m.name, err)
	}
	return fmt.Errorf("%w: %v", ErrEngine, err)
}

// cgroupFrozen reads the hierarchy the runtimes freeze through: the v1
// freezer when the target has one (runc uses it on a hybrid host), else
// cgroup2's cgroup.events.
func cgroupFrozen(t *Target) (bool, error) {
	if t.FreezerV1 != "" {
		s, err := v1State(t)
		return s == "FROZEN", err
	}
	b, err := os.ReadFile(filepath.Join(t.Cgroup2, "cgroup.events"))
	if err != nil {
		return false, ioErr(err)
	}
	return eventsFrozen(b), nil
}

type dockerEngine struct{ d *engines.Docker }

func (e dockerEngine) pause(ctx context.Context, t *Target) error  { return e.d.Pause(ctx, t.ID) }
func (e dockerEngine) resume(ctx context.Context, t *Target) error { return e.d.Unpause(ctx, t.ID) }
func (e dockerEngine) state(ctx context.Context, t *Target) (bool, bool, error) {
	c, err := e.d.Inspect(ctx, t.ID)
	return c.Paused, c.Running, err
}

type containerdEngine struct{ c *engines.Containerd }

func (e containerdEngine) pause(ctx context.Context, t *Target) error {
	return e.c.Pause(ctx, t.Namespace, t.ID)
}
func (e containerdEngine) resume(ctx context.Context, t *Target) error {
	return e.c.Resume(ctx, t.Namespace, t.ID)
}
func (e containerdEngine) state(ctx context.Context, t *Target) (bool, bool, error) {
	s, err := e.c.TaskStatus(ctx, t.Namespace, t.ID)
	return s == "PAUSED" || s == "PAUSING", s == "RUNNING", err
}

func newEngineMethod(name string, eng Engines) engineMethod {
	m := engineMethod{name: name, runtime: MethodRuntime(name), timeout: eng.timeout(), preFreeze: eng.PreFreeze}
	switch {
	case name == MethodDockerPause && eng.Docker != nil:
		m.eng = dockerEngine{eng.Docker}
	case name == MethodContainerdPause && eng.Containerd != nil:
		m.eng = containerdEngine{eng.Containerd}
	}
	return m
}
