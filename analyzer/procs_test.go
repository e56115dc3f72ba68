package analyzer

import (
	"maps"
	"math/rand/v2"
	"strconv"
	"testing"
)

// TestProcMemoMatchesMaps: random forks, exits, execs and euid updates
// (over more processes than maxProcs, so the tables fill and are
// cleared) through the accessors answer every lookup as the plain maps
// written as before the memo (engine.go, observe.go at main 445d285) do,
// and leave the same maps.
func TestProcMemoMatchesMaps(t *testing.T) {
	rnd := rand.New(rand.NewPCG(3, 4))
	c := &container{}
	refProcs, refEuid := map[uint32]string{}, map[uint32]uint32{}
	pid := func() uint32 {
		if rnd.IntN(4) == 0 {
			return uint32(rnd.IntN(3 * maxProcs))
		}
		return uint32(rnd.IntN(8)) // runs of a few processes
	}
	for i := range 200_000 {
		p, q := pid(), pid()
		switch rnd.IntN(6) {
		case 0: // fork (observeProcess)
			if exe, ok := refProcs[p]; ok && q != 0 {
				if len(refProcs) >= maxProcs {
					clear(refProcs)
				}
				refProcs[q] = exe
			}
			if exe, ok := c.exe(p); ok && q != 0 {
				c.setExe(q, exe)
			}
		case 1: // exit
			delete(refProcs, p)
			c.forgetExe(p)
		case 2: // exec (observeExec)
			fn := "/bin/x" + strconv.Itoa(rnd.IntN(3))
			if len(refProcs) >= maxProcs {
				clear(refProcs)
			}
			if old, ok := refProcs[p]; !ok || old != fn {
				refProcs[p] = fn
			}
			if old, ok := c.exe(p); !ok || old != fn {
				c.setExe(p, fn)
			} else if c.procs.size() >= maxProcs {
				c.setExe(p, old)
			}
		case 3: // the euid update of every event
			e := uint32(rnd.IntN(2))
			if len(refEuid) >= maxProcs {
				clear(refEuid)
			}
			if v, ok := refEuid[p]; !ok || v != e {
				refEuid[p] = e
			}
			c.setEuid(p, e)
		default: // lookups
			if c.procs.size() != len(refProcs) || c.euid.size() != len(refEuid) {
				t.Fatalf("op %d: sizes %d/%d, want %d/%d", i, c.procs.size(), c.euid.size(), len(refProcs), len(refEuid))
			}
			wantExe, wantOK := refProcs[p]
			if exe, ok := c.exe(p); exe != wantExe || ok != wantOK {
				t.Fatalf("op %d: exe(%d) = %q %v, want %q %v", i, p, exe, ok, wantExe, wantOK)
			}
			wantEuid, wantOK := refEuid[q]
			if e, ok := c.euidOf(q); e != wantEuid || ok != wantOK {
				t.Fatalf("op %d: euidOf(%d) = %d %v, want %d %v", i, q, e, ok, wantEuid, wantOK)
			}
		}
	}
	if c.procs.size() != len(c.procs.m) || c.euid.size() != len(c.euid.m) {
		t.Fatalf("sizes %d/%d, maps hold %d/%d", c.procs.size(), c.euid.size(), len(c.procs.m), len(c.euid.m))
	}
	if !maps.Equal(c.procs.m, refProcs) || !maps.Equal(c.euid.m, refEuid) {
		t.Fatalf("tables differ: %d/%d processes, %d/%d threads", c.procs.size(), len(refProcs), c.euid.size(), len(refEuid))
	}

	// A full table is cleared: what the memo held is forgotten with it
	// (either key the latest looked up).
	for _, order := range [][]uint32{{1, 2}, {2, 1}} {
		c := &container{}
		for pid := range uint32(maxProcs) {
			c.setExe(pid, "/bin/x")
			c.setEuid(pid, 7)
		}
		for _, pid := range order {
			c.exe(pid)
			c.euidOf(pid)
		}
		c.setExe(maxProcs, "/bin/y")
		c.setEuid(maxProcs, 8)
		for _, pid := range []uint32{order[1], order[0]} { // the latest first: still in the memo
			if exe, ok := c.exe(pid); ok {
				t.Errorf("exe(%d) = %q after the table was cleared", pid, exe)
			}
			if e, ok := c.euidOf(pid); ok {
				t.Errorf("euidOf(%d) = %d after the table was cleared", pid, e)
			}
		}
		if exe, _ := c.exe(maxProcs); exe != "/bin/y" || c.procs.size() != 1 || c.euid.size() != 1 {
			t.Errorf("after the clear: exe %q, %d processes, %d threads", exe, c.procs.size(), c.euid.size())
		}
	}
}
