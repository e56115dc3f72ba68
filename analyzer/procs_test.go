package analyzer

import (
	"math/rand/v2"
	"strconv"
	"testing"
)

// procRef is a container's process state as three plain maps, written as
// engine.go and observe.go wrote them at main 415b90e (before procTable):
// the reference the table must answer as.
type procRef struct {
	procs    map[uint32]string
	euid     map[uint32]uint32
	execMono map[uint32]uint64
}

func newProcRef() *procRef {
	return &procRef{procs: map[uint32]string{}, euid: map[uint32]uint32{}, execMono: map[uint32]uint64{}}
}

// check fails unless c's table holds exactly what r's maps hold.
func (r *procRef) check(t *testing.T, op int, c *container) {
	t.Helper()
	tb := &c.procs
	if tb.nExe != len(r.procs) || tb.nEuid != len(r.euid) || tb.nMono != len(r.execMono) {
		t.Fatalf("op %d: counts %d/%d/%d, want %d/%d/%d", op, tb.nExe, tb.nEuid, tb.nMono, len(r.procs), len(r.euid), len(r.execMono))
	}
	checkMemo(t, op, tb)
	used, nExe, nEuid, nMono := 0, 0, 0, 0
	for i := range tb.slots {
		s := &tb.slots[i]
		if s.has == 0 {
			if *s != (procSlot{}) {
				t.Fatalf("op %d: empty slot %d holds %+v", op, i, *s)
			}
			continue
		}
		used++
		if tb.find(s.key) != i {
			t.Fatalf("op %d: key %d in slot %d, found at %d", op, s.key, i, tb.find(s.key))
		}
		exe, ok := r.procs[s.key]
		if ok != (s.has&hasExe != 0) || exe != s.exe {
			t.Fatalf("op %d: pid %d exe %q %v, want %q %v", op, s.key, s.exe, s.has&hasExe != 0, exe, ok)
		}
		euid, ok := r.euid[s.key]
		if ok != (s.has&hasEuid != 0) || euid != s.euid {
			t.Fatalf("op %d: pid %d euid %d %v, want %d %v", op, s.key, s.euid, s.has&hasEuid != 0, euid, ok)
		}
		mono, ok := r.execMono[s.key]
		if ok != (s.has&hasMono != 0) || mono != s.mono {
			t.Fatalf("op %d: pid %d mono %d %v, want %d %v", op, s.key, s.mono, s.has&hasMono != 0, mono, ok)
		}
		if ok {
			nMono++
		}
		if s.has&hasExe != 0 {
			nExe++
		}
		if s.has&hasEuid != 0 {
			nEuid++
		}
	}
	if used != tb.used || nExe != len(r.procs) || nEuid != len(r.euid) || nMono != len(r.execMono) {
		t.Fatalf("op %d: %d slots used (table says %d), values %d/%d/%d, want %d/%d/%d",
			op, used, tb.used, nExe, nEuid, nMono, len(r.procs), len(r.euid), len(r.execMono))
	}
}

// checkMemo fails unless tb's memo is a copy of its key's slot.
func checkMemo(t *testing.T, op int, tb *procTable) {
	t.Helper()
	if !tb.memoOK {
		return
	}
	want := procSlot{key: tb.memo.key}
	if i := tb.find(tb.memo.key); i >= 0 {
		want = tb.slots[i]
	}
	if tb.memo != want {
		t.Fatalf("op %d: memo %+v, slot %+v", op, tb.memo, want)
	}
}

// TestProcTableMatchesMaps: random forks, exits, execs, euid updates and
// exec times (over more processes than maxProcs, so that each value
// fills and is cleared) through the accessors answer every lookup as the
// three plain maps written as before (procRef) do, and leave the same
// contents; slots removed by exits keep every other key findable.
func TestProcTableMatchesMaps(t *testing.T) {
	for seed := range uint64(4) {
		rnd := rand.New(rand.NewPCG(3, 4+seed))
		c := &container{}
		r := newProcRef()
		var clears [3]int
		wide := []int{3 * maxProcs, 64, 1 << 20, 3 * maxProcs}[seed]
		pid := func() uint32 {
			if rnd.IntN(4) == 0 {
				return uint32(rnd.IntN(wide))
			}
			return uint32(rnd.IntN(8)) // runs of a few processes
		}
		for i := range 200_000 {
			p, q := pid(), pid()
			switch rnd.IntN(8) {
			case 0: // fork (observeProcess)
				if exe, ok := r.procs[p]; ok && q != 0 {
					if len(r.procs) >= maxProcs {
						clear(r.procs)
						clears[0]++
					}
					r.procs[q] = exe
				}
				if exe, ok := c.exe(p); ok && q != 0 {
					c.setExe(q, exe)
				}
			case 1, 2: // exit
				delete(r.procs, p)
				c.forgetExe(p)
			case 3: // exec (observeExec, then observe's exec time)
				fn := "/bin/x" + strconv.Itoa(rnd.IntN(3))
				if len(r.procs) >= maxProcs {
					clear(r.procs)
					clears[0]++
				}
				if old, ok := r.procs[p]; !ok || old != fn {
					r.procs[p] = fn
				}
				if old, ok := c.exe(p); !ok || old != fn {
					c.setExe(p, fn)
				} else if c.exeCount() >= maxProcs {
					c.setExe(p, old)
				}
				mono := uint64(1 + rnd.IntN(1000))
				if len(r.execMono) >= maxProcs {
					clear(r.execMono)
					clears[2]++
				}
				r.execMono[p] = mono
				c.setExecMono(p, mono)
			case 4: // the euid update of every event
				e := uint32(rnd.IntN(2))
				if len(r.euid) >= maxProcs {
					clear(r.euid)
					clears[1]++
				}
				if v, ok := r.euid[p]; !ok || v != e {
					r.euid[p] = e
				}
				c.setEuid(p, e)
			default: // lookups
				wantExe, wantOK := r.procs[p]
				if exe, ok := c.exe(p); exe != wantExe || ok != wantOK {
					t.Fatalf("op %d: exe(%d) = %q %v, want %q %v", i, p, exe, ok, wantExe, wantOK)
				}
				wantEuid, wantOK := r.euid[q]
				if e, ok := c.euidOf(q); e != wantEuid || ok != wantOK {
					t.Fatalf("op %d: euidOf(%d) = %d %v, want %d %v", i, q, e, ok, wantEuid, wantOK)
				}
				wantMono, wantOK := r.execMono[p]
				if m, ok := c.execMono(p); m != wantMono || ok != wantOK {
					t.Fatalf("op %d: execMono(%d) = %d %v, want %d %v", i, p, m, ok, wantMono, wantOK)
				}
			}
			checkMemo(t, i, &c.procs)
			if i%1_007 == 0 {
				r.check(t, i, c)
			}
		}
		r.check(t, -1, c)
		t.Logf("seed %d: clears (exe, euid, exec time) %v, %d slots", seed, clears, len(c.procs.slots))
		if wide > maxProcs && (clears[1] == 0 || clears[2] == 0) {
			t.Errorf("seed %d: euid or exec times never filled (%v)", seed, clears)
		}
	}

	// A full value is cleared alone: the others stay.
	c := &container{}
	r := newProcRef()
	for pid := range uint32(maxProcs) {
		c.setExe(pid, "/bin/x")
		c.setEuid(pid, 7)
		c.setExecMono(pid, 9)
		r.procs[pid], r.euid[pid], r.execMono[pid] = "/bin/x", 7, 9
	}
	c.setExe(maxProcs, "/bin/y")
	clear(r.procs)
	r.procs[maxProcs] = "/bin/y"
	r.check(t, 0, c)
	if _, ok := c.exe(1); ok {
		t.Error("exe(1) known after the executables were cleared")
	}
	if e, ok := c.euidOf(1); e != 7 || !ok {
		t.Errorf("euidOf(1) = %d %v after the executables were cleared, want 7", e, ok)
	}
	c.setEuid(maxProcs+1, 8)
	clear(r.euid)
	r.euid[maxProcs+1] = 8
	r.check(t, 1, c)
	c.setExecMono(maxProcs+2, 10)
	clear(r.execMono)
	r.execMono[maxProcs+2] = 10
	r.check(t, 2, c)
	if c.procs.used != 3 {
		t.Errorf("%d slots used after the three clears, want 3", c.procs.used)
	}
}

// BenchmarkProcTable is the process-state work of a fleet event (an
// exe and euid lookup and the euid update of one process) over 3,000
// containers' tables of 30 processes, against the plain maps of before.
func BenchmarkProcTable(b *testing.B) {
	const ctrs, procs = 3000, 30
	rnd := rand.New(rand.NewPCG(5, 6))
	keys := make([]uint32, 1<<16)
	which := make([]int, len(keys))
	for i := range keys {
		keys[i], which[i] = uint32(10_000+rnd.IntN(procs)), rnd.IntN(ctrs)
	}
	b.Run("maps", func(b *testing.B) {
		refs := make([]*procRef, ctrs)
		for i := range refs {
			refs[i] = newProcRef()
			for p := range uint32(procs) {
				refs[i].procs[10_000+p], refs[i].euid[10_000+p] = "/usr/local/bin/app", 1000
			}
		}
		b.ResetTimer()
		for i := range b.N {
			r, k := refs[which[i&(len(keys)-1)]], keys[i&(len(keys)-1)]
			_, _ = r.procs[k]
			if v, ok := r.euid[k]; !ok || v != 1000 {
				r.euid[k] = 1000
			}
		}
	})
	b.Run("table", func(b *testing.B) {
		cs := make([]*container, ctrs)
		for i := range cs {
			cs[i] = &container{}
			for p := range uint32(procs) {
				cs[i].setExe(10_000+p, "/usr/local/bin/app")
				cs[i].setEuid(10_000+p, 1000)
			}
		}
		b.ResetTimer()
		for i := range b.N {
			c, k := cs[which[i&(len(keys)-1)]], keys[i&(len(keys)-1)]
			c.exe(k)
			c.setEuid(k, 1000)
		}
	})
}
