package analyzer

// A container's per-process state (the executable of each process, each
// thread's effective uid) is read several times per event (the applet
// check, the actor of each behaviour, the syscall classifier, the euid
// update) and almost always for the processes of the container's
// previous events (the process, its parent at an exec): the accessors
// below keep the last two keys looked up in each table (a memo) in front
// of its map, so that a run of one process's events costs no map lookup.
// The maps, their bounds (maxProcs, cleared when full) and every answer
// are as before; each write goes through the accessors, which keep the
// memo equal to the map (TestProcMemoMatchesMaps).

// procMemo holds the last lookups of a uint32-keyed table, two keys.
type procMemo[V comparable] struct {
	e    [2]memoEntry[V]
	next uint8 // the entry a new key replaces
}

type memoEntry[V comparable] struct {
	key   uint32
	val   V
	ok    bool
	valid bool
}

// get is the memo's answer for key; hit false when it has none.
func (m *procMemo[V]) get(key uint32) (val V, ok, hit bool) {
	for i := range m.e {
		if e := &m.e[i]; e.valid && e.key == key {
			return e.val, e.ok, true
		}
	}
	return val, false, false
}

// put records the table's answer for key.
func (m *procMemo[V]) put(key uint32, val V, ok bool) {
	for i := range m.e {
		if e := &m.e[i]; e.valid && e.key == key {
			e.val, e.ok = val, ok
			return
		}
	}
	m.e[m.next] = memoEntry[V]{key: key, val: val, ok: ok, valid: true}
	m.next ^= 1
}

// exe is the executable of process tgid (c.procs).
func (c *container) exe(tgid uint32) (string, bool) {
	if v, ok, hit := c.exeMemo.get(tgid); hit {
		return v, ok
	}
	v, ok := c.procs[tgid]
	c.exeMemo.put(tgid, v, ok)
	return v, ok
}

// setExe records process tgid's executable, clearing the table first
// when it is full.
func (c *container) setExe(tgid uint32, exe string) {
	if len(c.procs) >= maxProcs {
		clear(c.procs)
		c.exeMemo = procMemo[string]{}
	}
	c.procs[tgid] = exe
	c.exeMemo.put(tgid, exe, true)
}

// forgetExe forgets process tgid's executable (it exited).
func (c *container) forgetExe(tgid uint32) {
	if _, ok, hit := c.exeMemo.get(tgid); hit && !ok {
		return // not in the table
	}
	delete(c.procs, tgid)
	c.exeMemo.put(tgid, "", false)
}

// euidOf is thread pid's effective uid after its latest event (c.euid).
func (c *container) euidOf(pid uint32) (uint32, bool) {
	if v, ok, hit := c.euidMemo.get(pid); hit {
		return v, ok
	}
	v, ok := c.euid[pid]
	c.euidMemo.put(pid, v, ok)
	return v, ok
}

// setEuid records thread pid's effective uid, clearing the table first
// when it is full.
func (c *container) setEuid(pid, euid uint32) {
	if len(c.euid) >= maxProcs {
		clear(c.euid)
		c.euidMemo = procMemo[uint32]{}
	} else if v, ok := c.euidOf(pid); ok && v == euid {
		return // a lookup is cheaper than a store
	}
	c.euid[pid] = euid
	c.euidMemo.put(pid, euid, true)
}
