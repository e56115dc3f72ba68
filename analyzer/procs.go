package analyzer

// A container's per-process state is read and written at nearly every
// event: the executable of each process (by tgid: the applet check, each
// behaviour's actor, the syscall classifier, an exec's parent), each
// thread's effective uid after its latest event (by pid), and each
// process's latest exec (monotonic ns, by tgid). They were three Go maps
// (design 031: with a memo of the last two keys in front of two of them);
// an event of a container whose state had left the cache then missed on
// each map's header, control word and slot. procTable holds the three in
// one open-addressed table of slots keyed by the pid, each slot holding
// whichever of the three values that pid has (design 034): the process of
// an event (tgid == pid for a single-threaded process) is one slot, one
// cache line, for all three.
//
// Every answer and bound is that of the three maps: each value has its
// own count, and a table that is full for one of them (maxProcs values)
// forgets all values of that one, at the same moments the map was
// cleared (TestProcTableMatchesMaps replays random forks, exits, execs,
// euid and exec-time updates against the plain maps).

// procTable is a container's process state by pid. The zero value is an
// empty table.
type procTable struct {
	// slots is a power of two long (or nil); linear probing from the
	// slot the key hashes to, no tombstones (a removal shifts back).
	slots []procSlot
	used  int // slots holding a key
	// nExe, nEuid and nMono count the keys holding each value (the
	// lengths of the three maps it replaces).
	nExe, nEuid, nMono int
	// memo is a copy of the slot of the key last looked up or written
	// (has 0: the key holds nothing), valid when memoOK: it lies in the
	// container's first cache lines, and a run of one process's events
	// (the usual case) then reads and updates its euid without touching
	// the slots. Every write keeps it equal to the slot.
	memo   procSlot
	memoOK bool
}

// procSlot is one pid's values; has says which it holds (0: an empty
// slot).
type procSlot struct {
	exe  string // executable (the process's, by tgid)
	mono uint64 // latest exec, monotonic ns (by tgid)
	key  uint32
	euid uint32 // effective uid (the thread's, by pid)
	has  uint8
}

// Values of procSlot.has.
const (
	hasExe uint8 = 1 << iota
	hasEuid
	hasMono
)

// minProcSlots is a table's first size.
const minProcSlots = 8

// home is the slot key hashes to (Fibonacci hashing: pids are mostly
// consecutive).
func (t *procTable) home(key uint32) int {
	return int((uint64(key) * 0x9e3779b97f4a7c15) >> 32 & uint64(len(t.slots)-1))
}

// find is the index of the slot holding key, or -1.
func (t *procTable) find(key uint32) int {
	if len(t.slots) == 0 {
		return -1
	}
	mask := len(t.slots) - 1
	for i := t.home(key); ; i = (i + 1) & mask {
		s := &t.slots[i]
		if s.has == 0 {
			return -1
		}
		if s.key == key {
			return i
		}
	}
}

// load is key's values (a copy: has 0 when it holds none), from the memo
// when it holds key.
func (t *procTable) load(key uint32) *procSlot {
	if t.memoOK && t.memo.key == key {
		return &t.memo
	}
	if i := t.find(key); i >= 0 {
		t.memo = t.slots[i]
	} else {
		t.memo = procSlot{key: key}
	}
	t.memoOK = true
	return &t.memo
}

// put is the slot of key for value v, which the caller sets, then
// remembers (t.memo = *s): the values v are forgotten first when
// maxProcs keys hold one (a full map's clear), and the slot is counted
// as holding v.
func (t *procTable) put(key uint32, v uint8) *procSlot {
	n := &t.nExe
	switch v {
	case hasEuid:
		n = &t.nEuid
	case hasMono:
		n = &t.nMono
	}
	if *n >= maxProcs {
		t.clearValue(v)
	}
	s := t.slot(key)
	if s.has&v == 0 {
		*n++
		s.has |= v
	}
	return s
}

// remember makes s's copy the memo.
func (t *procTable) remember(s *procSlot) {
	t.memo, t.memoOK = *s, true
}

// slot is the slot holding key, a new empty one (has 0) when none does.
// It invalidates pointers to other slots.
func (t *procTable) slot(key uint32) *procSlot {
	if (t.used+1)*4 > len(t.slots)*3 {
		t.resize(max(minProcSlots, 2*len(t.slots)), 0)
	}
	mask := len(t.slots) - 1
	for i := t.home(key); ; i = (i + 1) & mask {
		s := &t.slots[i]
		if s.has == 0 {
			s.key = key
			t.used++
			return s
		}
		if s.key == key {
			return s
		}
	}
}

// resize moves the slots into a new array of n slots, dropping the
// values of drop.
func (t *procTable) resize(n int, drop uint8) {
	old := t.slots
	t.slots, t.used = make([]procSlot, n), 0
	for i := range old {
		s := &old[i]
		if s.has&^drop == 0 {
			continue
		}
		v := *s
		if drop&hasExe != 0 {
			v.exe = ""
		}
		if drop&hasMono != 0 {
			v.mono = 0
		}
		if drop&hasEuid != 0 {
			v.euid = 0
		}
		v.has &^= drop
		*t.slot(v.key) = v
	}
}

// clearValue forgets every value of kind v (a full map's clear); the
// table keeps its size, as a cleared map does.
func (t *procTable) clearValue(v uint8) {
	switch v {
	case hasExe:
		t.nExe = 0
	case hasEuid:
		t.nEuid = 0
	default:
		t.nMono = 0
	}
	t.resize(len(t.slots), v)
	t.memoOK = false
}

// drop clears value v of slot i and removes the slot when it holds
// nothing else.
func (t *procTable) drop(i int, v uint8) {
	s := &t.slots[i]
	s.has &^= v
	if s.has != 0 {
		return
	}
	// Backward-shift deletion: a later slot of the probe run moves into
	// the hole when the hole lies between its home and it.
	mask := len(t.slots) - 1
	for j := (i + 1) & mask; t.slots[j].has != 0; j = (j + 1) & mask {
		if h := t.home(t.slots[j].key); (j-h)&mask >= (j-i)&mask {
			t.slots[i] = t.slots[j]
			i = j
		}
	}
	t.slots[i] = procSlot{}
	t.used--
}

// exe is the executable of process tgid.
func (c *container) exe(tgid uint32) (string, bool) {
	s := c.procs.load(tgid)
	return s.exe, s.has&hasExe != 0
}

// setExe records process tgid's executable, forgetting every process's
// first when maxProcs are known.
func (c *container) setExe(tgid uint32, exe string) {
	s := c.procs.put(tgid, hasExe)
	s.exe = exe
	c.procs.remember(s)
}

// exeCount is the number of processes whose executable is known.
func (c *container) exeCount() int { return c.procs.nExe }

// forgetExe forgets process tgid's executable (it exited).
func (c *container) forgetExe(tgid uint32) {
	t := &c.procs
	if t.memoOK && t.memo.key == tgid && t.memo.has&hasExe == 0 {
		return // not in the table
	}
	i := t.find(tgid)
	if i < 0 || t.slots[i].has&hasExe == 0 {
		return
	}
	t.slots[i].exe = ""
	t.nExe--
	t.drop(i, hasExe)
	if t.memoOK && t.memo.key == tgid {
		t.memo.exe = ""
		t.memo.has &^= hasExe
	}
}

// euidOf is thread pid's effective uid after its latest event.
func (c *container) euidOf(pid uint32) (uint32, bool) {
	s := c.procs.load(pid)
	return s.euid, s.has&hasEuid != 0
}

// setEuid records thread pid's effective uid, forgetting every thread's
// first when maxProcs are known.
func (c *container) setEuid(pid, euid uint32) {
	t := &c.procs
	if t.nEuid < maxProcs {
		if m := t.load(pid); m.has&hasEuid != 0 && m.euid == euid {
			return // a lookup is cheaper than a store
		}
	}
	s := t.put(pid, hasEuid)
	s.euid = euid
	t.remember(s)
}

// execMono is the monotonic time of process tgid's latest exec.
func (c *container) execMono(tgid uint32) (uint64, bool) {
	s := c.procs.load(tgid)
	return s.mono, s.has&hasMono != 0
}

// setExecMono records the monotonic time of process tgid's exec,
// forgetting every process's first when maxProcs are known.
func (c *container) setExecMono(tgid uint32, mono uint64) {
	s := c.procs.put(tgid, hasMono)
	s.mono = mono
	c.procs.remember(s)
}
