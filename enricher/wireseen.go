package enricher

// entrySeen is the cache entries of the containers of one batch, found
// since e.mu was last read-locked: an open-addressed table by container
// id, cheaper than the cache's map (whose key compares a host and an id
// cold in memory) for the events after a container's first.
type entrySeen struct {
	gen   uint32 // a slot of another generation is free
	slots [seenSlots]seenSlot
}

type seenSlot struct {
	gen      uint32
	host, id string
	en       *entry
}

// seenSlots is a power of two; seenProbes the slots a key may take.
const (
	seenSlots  = 128
	seenProbes = 8
)

// get is the entry put for (host, id) since the last forget.
func (s *entrySeen) get(host, id string) (*entry, bool) {
	i := seenHash(id)
	for range seenProbes {
		sl := &s.slots[i&(seenSlots-1)]
		if sl.gen != s.gen+1 {
			return nil, false
		}
		if sl.id == id && sl.host == host {
			return sl.en, true
		}
		i++
	}
	return nil, false
}

// put remembers en for (host, id), unless its slots are taken.
func (s *entrySeen) put(host, id string, en *entry) {
	i := seenHash(id)
	for range seenProbes {
		sl := &s.slots[i&(seenSlots-1)]
		if sl.gen != s.gen+1 {
			*sl = seenSlot{gen: s.gen + 1, host: host, id: id, en: en}
			return
		}
		i++
	}
}

// forget drops every entry: the cache may have changed.
func (s *entrySeen) forget() {
	s.gen++
	if s.gen == 1<<32-2 {
		s.clear()
	}
}

// clear drops every entry and what it points to.
func (s *entrySeen) clear() {
	*s = entrySeen{}
}

// seenHash is the slot a container id starts at: ids are random hex, so
// a few of their bytes spread them.
func seenHash(id string) uint {
	x := uint64(len(id))
	if len(id) >= 8 {
		x ^= le64(id) ^ le64(id[len(id)-8:])<<1
	} else {
		for i := range len(id) {
			x = x<<8 | uint64(id[i])
		}
	}
	return uint((x * 0x9E3779B97F4A7C15) >> 57)
}

// le64 is the little-endian value of s's first 8 bytes.
func le64(s string) uint64 {
	_ = s[7]
	return uint64(s[0]) | uint64(s[1])<<8 | uint64(s[2])<<16 | uint64(s[3])<<24 |
		uint64(s[4])<<32 | uint64(s[5])<<40 | uint64(s[6])<<48 | uint64(s[7])<<56
}
