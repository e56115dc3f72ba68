package analyzer

import (
	"math/bits"
	"strings"
)

// needleSet finds any of up to 32 lower-case ASCII needles in a string,
// ignoring ASCII case, in one pass over the string: the answer of
// strings.Contains(strings.ToLower(s), needle) for some needle, without
// lower-casing s or scanning it once per needle. A string holding a
// non-ASCII byte and no match in the bytes before it is answered by that
// reference (Unicode lower-casing can make ASCII of other bytes: the
// Kelvin sign is a k). FuzzNeedleSet checks the two agree.
type needleSet struct {
	needles []string
	// first has bit i set for the bytes needle i starts with (either
	// case of a letter).
	first [256]uint32
}

func newNeedleSet(needles ...string) *needleSet {
	if len(needles) > 32 {
		panic("needleSet: more than 32 needles")
	}
	s := &needleSet{needles: needles}
	for i, n := range needles {
		if n == "" || n != strings.ToLower(n) {
			panic("needleSet: needle " + n + " is empty or not lower case")
		}
		for j := 0; j < len(n); j++ {
			if n[j] >= 0x80 {
				panic("needleSet: needle " + n + " is not ASCII")
			}
		}
		c := n[0]
		s.first[c] |= 1 << i
		if c >= 'a' && c <= 'z' {
			s.first[c-'a'+'A'] |= 1 << i
		}
	}
	return s
}

// contains reports whether s holds a needle, ASCII case ignored.
func (s *needleSet) contains(str string) bool {
	for i := 0; i < len(str); i++ {
		c := str[i]
		if c >= 0x80 {
			return s.containsLower(strings.ToLower(str))
		}
		for m := s.first[c]; m != 0; m &= m - 1 {
			if n := s.needles[bits.TrailingZeros32(m)]; hasPrefixFold(str[i:], n) {
				return true
			}
		}
	}
	return false
}

// containsLower is the reference: s already lower-cased.
func (s *needleSet) containsLower(lower string) bool {
	for _, n := range s.needles {
		if strings.Contains(lower, n) {
			return true
		}
	}
	return false
}

// inArgv reports whether an argument of argv holds a needle, ASCII case
// ignored.
func (s *needleSet) inArgv(argv []string) bool {
	for _, a := range argv {
		if s.contains(a) {
			return true
		}
	}
	return false
}

// hasPrefixFold reports whether s starts with the lower-case ASCII n,
// ignoring the ASCII case of s.
func hasPrefixFold(s, n string) bool {
	if len(s) < len(n) {
		return false
	}
	for i := 0; i < len(n); i++ {
		c := s[i]
		if c >= 'A' && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != n[i] {
			return false
		}
	}
	return true
}
