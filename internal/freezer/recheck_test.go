package freezer

import (
	"errors"
	"os"
	"testing"

	"github.com/containsec/contain/internal/testenv"
)

// TestRecheck: a proof of a real runc container holds on re-check, and
// stops holding when the init's start time, its cgroup or the protected
// set differ from the proof, and when the container is gone.
func TestRecheck(t *testing.T) {
	testenv.RequireRoot(t)
	roots := Roots{FreezerV1: testenv.FreezerV1Root, Cgroup2: testenv.Cgroup2Root, RuncRoot: "/run/runc"}
	for _, r := range []*string{&roots.FreezerV1, &roots.Cgroup2} {
		if _, err := os.Stat(*r); err != nil {
			*r = ""
		}
	}
	self := Protected{Pids: []int{os.Getpid()}}
	c := testenv.RunContainer(t, "recheck", testenv.ContainerSpec{})
	tg, err := Locate(roots, c.ID)
	if err != nil {
		t.Fatal(err)
	}
	if err := Prove(roots, tg, self); err != nil {
		t.Fatal(err)
	}
	pr := NewProof(tg, self)
	if pr == nil {
		t.Fatal("no proof of a runc container (it records its init's start time)")
	}
	if err := Recheck(roots, pr, self); err != nil {
		t.Fatalf("re-check of a fresh proof: %v", err)
	}
	stale := func(what string, pr *Proof, p Protected) {
		t.Helper()
		if err := Recheck(roots, pr, p); !errors.Is(err, ErrStale) {
			t.Errorf("%s: Recheck = %v, want ErrStale", what, err)
		}
	}
	reused := *tg
	reused.InitStart++
	stale("init start time", NewProof(&reused, self), self)
	moved := *tg
	// Another cgroup that exists: the hierarchy's root, which does not
	// list the container's init.
	if moved.FreezerV1 != "" {
		moved.FreezerV1 = roots.FreezerV1
	} else {
		moved.Cgroup2 = roots.Cgroup2
	}
	stale("cgroup", NewProof(&moved, self), self)
	stale("protected set", pr, Protected{Pids: []int{os.Getpid(), tg.InitPid}})
	if NewProof(&Target{ID: "x", InitPid: 1}, self) != nil {
		t.Error("a proof without the init's start time (a reused pid would go unseen)")
	}
	c.Remove()
	if err := Recheck(roots, pr, self); !errors.Is(err, ErrExited) {
		t.Errorf("re-check of a removed container: %v, want ErrExited", err)
	}
}
