package analyzer

// A container's per-process state (the executable of each process, each
// thread's effective uid) is read several times per event (the applet
// check, the actor of each behaviour, the syscall classifier, the euid
// update) and almost always for the process of the container's previous
// event: the accessors below keep the last lookup of each table (a memo)
// in front of its map, so that a run of one process's events costs no map
// lookup. The maps, their bounds (maxProcs, cleared when full) and every
// answer are as before; each write goes through the accessors, which keep
// the memo equal to the map (TestProcMemoMatchesMaps).

// procMemo is the last lookup of a uint32-keyed table.
type procMemo[V comparable] struct {
	key   uint32
	val   V
	ok    bool
	valid bool
}

// exe is the executable of process tgid (c.procs).
func (c *container) exe(tgid uint32) (string, bool) {
	m := &c.exeMemo
	if !m.valid || m.key != tgid {
		m.val, m.ok = c.procs[tgid]
		m.key, m.valid = tgid, true
	}
	return m.val, m.ok
}

// setExe records process tgid's executable, clearing the table first
// when it is full.
func (c *container) setExe(tgid uint32, exe string) {
	if len(c.procs) >= maxProcs {
		clear(c.procs)
	}
	c.procs[tgid] = exe
	c.exeMemo = procMemo[string]{key: tgid, val: exe, ok: true, valid: true}
}

// forgetExe forgets process tgid's executable (it exited).
func (c *container) forgetExe(tgid uint32) {
	delete(c.procs, tgid)
	c.exeMemo = procMemo[string]{key: tgid, valid: true}
}

// euidOf is thread pid's effective uid after its latest event (c.euid).
func (c *container) euidOf(pid uint32) (uint32, bool) {
	m := &c.euidMemo
	if !m.valid || m.key != pid {
		m.val, m.ok = c.euid[pid]
		m.key, m.valid = pid, true
	}
	return m.val, m.ok
}

// setEuid records thread pid's effective uid, clearing the table first
// when it is full.
func (c *container) setEuid(pid, euid uint32) {
	if len(c.euid) >= maxProcs {
		clear(c.euid)
	} else if v, ok := c.euidOf(pid); ok && v == euid {
		return // a lookup is cheaper than a store
	}
	c.euid[pid] = euid
	c.euidMemo = procMemo[uint32]{key: pid, val: euid, ok: true, valid: true}
}
