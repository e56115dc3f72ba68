package freezer

import (
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"slices"
)

// ErrStale: a proof made earlier no longer holds for the target as it was
// proven (its init pid, the init's start time, its cgroup or the protected
// set changed); prove it again from the runtime's state.
var ErrStale = errors.New("proof is stale")

// Proof is what Prove established about a target, kept to re-check it
// cheaply (Recheck) on a later alert about the same container.
type Proof struct {
	Target *Target
	// pids and cgroups are the protected set the proof was made against.
	pids    []int
	cgroups []string
}

// NewProof records that t was proven against p. A target whose runtime
// recorded no init start time cannot be re-checked (a reused pid would go
// unnoticed): NewProof returns nil for it.
func NewProof(t *Target, p Protected) *Proof {
	if t == nil || t.InitPid <= 0 || t.InitStart == 0 {
		return nil
	}
	return &Proof{Target: t, pids: slices.Clone(p.Pids), cgroups: slices.Clone(p.Cgroups)}
}

// Recheck re-checks a proof with a few file reads instead of the runtime
// state and the protected processes' cgroups that Prove reads: the
// protected set is the one proven against, each proven cgroup still lists
// the init pid (and no protected process) in cgroup.procs, and the init
// runs with the start time the runtime recorded (a re-created container
// has another init: a new proof). It returns nil when the proof holds, an error
// wrapping ErrExited when the init or the cgroup is gone, and one wrapping
// ErrStale otherwise (prove again).
func Recheck(roots Roots, pr *Proof, p Protected) error {
	if pr == nil || pr.Target == nil {
		return fmt.Errorf("%w: no proof", ErrStale)
	}
	t := pr.Target
	if !slices.Equal(pr.pids, p.Pids) || !slices.Equal(pr.cgroups, p.Cgroups) {
		return fmt.Errorf("%w: %s: the protected set changed", ErrStale, t.ID)
	}
	procRoot := p.ProcRoot
	if procRoot == "" {
		procRoot = "/proc"
	}
	for _, d := range []string{t.FreezerV1, t.Cgroup2} {
		if d == "" {
			continue
		}
		pids, err := readProcs(filepath.Join(d, "cgroup.procs"))
		if err != nil {
			return err // ErrExited when gone
		}
		if len(pids) == 0 {
			return fmt.Errorf("%w: no process left in %s", ErrExited, d)
		}
		if !slices.Contains(pids, t.InitPid) {
			return fmt.Errorf("%w: %s: init %d is no longer in %s", ErrStale, t.ID, t.InitPid, d)
		}
		for _, pp := range p.Pids {
			if slices.Contains(pids, pp) {
				return fmt.Errorf("%w: %s: protected process %d is in %s", ErrStale, t.ID, pp, d)
			}
		}
	}
	start, err := procStart(procRoot, t.InitPid)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("%w: init pid %d is gone", ErrExited, t.InitPid)
		}
		return fmt.Errorf("%w: %s: %v", ErrStale, t.ID, err)
	}
	if start != t.InitStart {
		return fmt.Errorf("%w: %s: pid %d started at %d, proven at %d", ErrStale, t.ID, t.InitPid, start, t.InitStart)
	}
	return nil
}

// RollBack undoes a freeze that did not complete (a responder stopped
// between its write and the verification): a v1 freezer left FREEZING is
// thawed, a cgroup2 cgroup.freeze left 1 while cgroup.events does not say
// frozen is set to 0. A completed freeze is left alone. It reports whether
// it wrote anything.
func RollBack(t *Target) (bool, error) {
	wrote := false
	if t.FreezerV1 != "" {
		s, err := v1State(t)
		if err != nil {
			return wrote, err
		}
		if s == "FREEZING" {
			if err := writeFile(filepath.Join(t.FreezerV1, "freezer.state"), "THAWED"); err != nil {
				return wrote, err
			}
			wrote = true
		}
	}
	if t.Cgroup2 != "" {
		b, err := readBounded(filepath.Join(t.Cgroup2, "cgroup.freeze"))
		if err != nil {
			return wrote, ioErr(err)
		}
		if frozen, err := (v2Freeze{}).Frozen(t); err == nil && !frozen && len(b) > 0 && b[0] == '1' {
			if err := writeFile(filepath.Join(t.Cgroup2, "cgroup.freeze"), "0"); err != nil {
				return wrote, err
			}
			wrote = true
		}
	}
	return wrote, nil
}
