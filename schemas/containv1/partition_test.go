package containv1

import "testing"

// The partition of a key is a wire contract between the enricher and the
// analyzer: these values must never change.
func TestPartitionStable(t *testing.T) {
	for _, c := range []struct {
		key  string
		n, p int
	}{
		{"sha256:" + "aa", 1, 0},
		{"", 16, Partition("", 16)},
	} {
		if got := Partition(c.key, c.n); got != c.p {
			t.Errorf("Partition(%q, %d) = %d, want %d", c.key, c.n, got, c.p)
		}
	}
	// FNV-1a 32 of "a" is 0xe40c292c.
	if got := Partition("a", 1000); got != int(uint32(0xe40c292c)%1000) {
		t.Fatalf("Partition(a, 1000) = %d", got)
	}
	seen := map[int]int{}
	for i := range 1000 {
		seen[Partition("sha256:"+string(rune('a'+i%26))+string(rune('a'+i/26)), 8)]++
	}
	if len(seen) != 8 {
		t.Fatalf("1000 keys over 8 partitions hit %d", len(seen))
	}
}

func TestPartitionSubjects(t *testing.T) {
	if s := EventsPartitionSubject("h.1", 3); s != "contain.v1.events.h_1.p3" {
		t.Fatal(s)
	}
	if f := EventsPartitionFilter(12); f != "contain.v1.events.*.p12" {
		t.Fatal(f)
	}
	for tok, want := range map[string]int{"p0": 0, "p7": 7, "p1023": 1023} {
		if p, ok := ParsePartitionToken(tok); !ok || p != want {
			t.Errorf("%s: %d %v", tok, p, ok)
		}
	}
	for _, tok := range []string{"", "p", "p01", "p1024", "p-1", "p+1", "q1", "p1a", "p99999"} {
		if _, ok := ParsePartitionToken(tok); ok {
			t.Errorf("%q accepted", tok)
		}
	}
}

func FuzzParsePartitionToken(f *testing.F) {
	for _, s := range []string{"p0", "p12", "p01", "x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, tok string) {
		p, ok := ParsePartitionToken(tok)
		if ok && PartitionToken(p) != tok {
			t.Fatalf("%q parsed as %d which formats as %q", tok, p, PartitionToken(p))
		}
	})
}
