package enricher

import (
	"fmt"
	"testing"
)

// TestEntrySeen: what is put is got until forget; keys that share a
// slot are told apart by id and host; a key whose slots are all taken is
// not remembered (and the others still are); clear forgets everything.
func TestEntrySeen(t *testing.T) {
	var s entrySeen
	ens := map[string]*entry{}
	for i := range 100 {
		id := fmt.Sprintf("%064x", i*7919)
		if i%10 == 0 {
			id = fmt.Sprint("c", i) // short ids hash differently
		}
		ens[id] = &entry{}
		s.put("h1", id, ens[id])
	}
	remembered := 0
	for id, en := range ens {
		got, ok := s.get("h1", id)
		if ok && got != en {
			t.Fatalf("%s: another key's entry", id)
		}
		if ok {
			remembered++
		}
		if _, ok := s.get("h2", id); ok {
			t.Fatalf("%s on another host found", id)
		}
	}
	if remembered < 90 {
		t.Errorf("%d of 100 remembered in %d slots", remembered, seenSlots)
	}
	s.forget()
	for id := range ens {
		if _, ok := s.get("h1", id); ok {
			t.Fatalf("%s found after forget", id)
		}
	}
	// Every key on one slot: seenProbes are remembered, no more.
	s.clear()
	var same []string
	for i := 0; len(same) < seenProbes+3; i++ {
		if id := fmt.Sprintf("%064x", i); seenHash(id)%seenSlots == 5 {
			same = append(same, id)
		}
	}
	for _, id := range same {
		s.put("h1", id, ens["c0"])
	}
	for i, id := range same {
		if _, ok := s.get("h1", id); ok != (i < seenProbes) {
			t.Errorf("key %d of one slot remembered %v", i, ok)
		}
	}
	s.gen = 1<<32 - 3
	s.forget()
	if s.gen != 0 {
		t.Errorf("generation %d after the last: not cleared", s.gen)
	}
}
