package analyzer

// A container's per-process state (the executable of each process, each
// thread's effective uid) is read several times per event (the applet
// check, the actor of each behaviour, the syscall classifier, the euid
// update) and almost always for the processes of the container's
// previous events (the process, its parent at an exec): a procTable keeps
// the last two keys looked up (a memo) in front of its map, so that a
// run of one process's events costs no map lookup. The map is private to
// the table: its methods are the only way to read or write it, and each
// write keeps the memo equal to the map (TestProcMemoMatchesMaps). The
// bounds (maxProcs, cleared when full) and every answer are those of the
// plain maps.

// procTable is a uint32-keyed table (tgid or pid) with its memo. The
// zero value is an empty table.
type procTable[V comparable] struct {
	m    map[uint32]V
	memo procMemo[V]
	// n is len(m), kept by each write: reading it does not touch the
	// map (a cache miss when the container's state is cold).
	n int
}

// get is the value of key.
func (t *procTable[V]) get(key uint32) (V, bool) {
	if v, ok, hit := t.memo.get(key); hit {
		return v, ok
	}
	v, ok := t.m[key]
	t.memo.put(key, v, ok)
	return v, ok
}

// set stores val for key, clearing the table first when it is full.
func (t *procTable[V]) set(key uint32, val V) {
	if t.m == nil {
		t.m = map[uint32]V{}
	}
	if len(t.m) >= maxProcs {
		clear(t.m)
		t.memo = procMemo[V]{}
	}
	t.m[key] = val
	t.n = len(t.m)
	t.memo.put(key, val, true)
}

// del forgets key.
func (t *procTable[V]) del(key uint32) {
	if _, ok, hit := t.memo.get(key); hit && !ok {
		return // not in the table
	}
	delete(t.m, key)
	t.n = len(t.m)
	var zero V
	t.memo.put(key, zero, false)
}

// size is the number of keys the table holds.
func (t *procTable[V]) size() int { return t.n }

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

// exe is the executable of process tgid.
func (c *container) exe(tgid uint32) (string, bool) { return c.procs.get(tgid) }

// setExe records process tgid's executable, clearing the table first
// when it is full.
func (c *container) setExe(tgid uint32, exe string) { c.procs.set(tgid, exe) }

// forgetExe forgets process tgid's executable (it exited).
func (c *container) forgetExe(tgid uint32) { c.procs.del(tgid) }

// euidOf is thread pid's effective uid after its latest event.
func (c *container) euidOf(pid uint32) (uint32, bool) { return c.euid.get(pid) }

// setEuid records thread pid's effective uid, clearing the table first
// when it is full.
func (c *container) setEuid(pid, euid uint32) {
	if c.euid.size() < maxProcs {
		if v, ok := c.euid.get(pid); ok && v == euid {
			return // a lookup is cheaper than a store
		}
	}
	c.euid.set(pid, euid)
}
