package analyzer

import "math/bits"

// seqTable is the sequence model's hash table: open addressing with
// linear probing over parallel key and value slices (16 bytes a slot, no
// per-group metadata), at most 3/4 full, grown by half. Keys are exact
// (SeqModel's packed grams), so no collision is possible; seqFree marks a
// free slot (no gram has length 15).
type seqTable struct {
	keys []uint64
	vals []seqStat
	n    int
}

const seqFree = ^uint64(0)

func (t *seqTable) home(k uint64) int {
	hi, _ := bits.Mul64(k*0x9e3779b97f4a7c15, uint64(len(t.keys)))
	return int(hi)
}

// get returns k's stats and whether k is held.
func (t *seqTable) get(k uint64) (seqStat, bool) {
	if len(t.keys) == 0 {
		return seqStat{}, false
	}
	for i := t.home(k); ; {
		switch t.keys[i] {
		case k:
			return t.vals[i], true
		case seqFree:
			return seqStat{}, false
		}
		if i++; i == len(t.keys) {
			i = 0
		}
	}
}

// put sets k's stats, adding k if needed.
func (t *seqTable) put(k uint64, v seqStat) {
	if 4*(t.n+1) > 3*len(t.keys) {
		t.resize(max(16, len(t.keys)+len(t.keys)/2))
	}
	for i := t.home(k); ; {
		switch t.keys[i] {
		case k:
			t.vals[i] = v
			return
		case seqFree:
			t.keys[i], t.vals[i] = k, v
			t.n++
			return
		}
		if i++; i == len(t.keys) {
			i = 0
		}
	}
}

func (t *seqTable) resize(size int) {
	old := *t
	t.keys, t.vals, t.n = make([]uint64, size), make([]seqStat, size), 0
	for i := range t.keys {
		t.keys[i] = seqFree
	}
	for i, k := range old.keys {
		if k != seqFree {
			t.put(k, old.vals[i])
		}
	}
}

// each calls f for every key held.
func (t *seqTable) each(f func(k uint64, v seqStat)) {
	for i, k := range t.keys {
		if k != seqFree {
			f(k, t.vals[i])
		}
	}
}
