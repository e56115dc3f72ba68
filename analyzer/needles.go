package analyzer

import (
	"math/bits"
	"strings"
)

// needleSet finds lower-case ASCII needles in strings, ignoring ASCII
// case, in one pass over each string for all of them: for each group of
// needles, the answer of strings.Contains(strings.ToLower(s), needle)
// for some needle of the group, without lower-casing s or scanning it
// once per needle. A string holding a non-ASCII byte is answered by that
// reference (Unicode lower-casing can make ASCII of other bytes: the
// Kelvin sign is a k). FuzzNeedleSet checks the two agree.
type needleSet struct {
	needles []string
	group   []uint8 // needle i's group, as a bit
	all     uint8   // every group's bit
	// first and second have bit i set for the first and the second
	// byte of needle i (either case of a letter): a position whose two
	// bytes start no needle is passed over without a compare.
	first, second [256]uint32
}

// newNeedleSet makes a set of up to 8 groups (group i answers as bit
// 1<<i) of 32 needles in all, each at least 2 bytes of lower-case ASCII.
func newNeedleSet(groups ...[]string) *needleSet {
	s := &needleSet{}
	for g, needles := range groups {
		for _, n := range needles {
			if len(n) < 2 || n != strings.ToLower(n) || strings.IndexFunc(n, func(r rune) bool { return r >= 0x80 }) >= 0 {
				panic("needleSet: needle " + n + " is shorter than 2 bytes, not lower case or not ASCII")
			}
			i := len(s.needles)
			for j, t := range []*[256]uint32{&s.first, &s.second} {
				c := n[j]
				t[c] |= 1 << i
				if c >= 'a' && c <= 'z' {
					t[c-'a'+'A'] |= 1 << i
				}
			}
			s.needles = append(s.needles, n)
			s.group = append(s.group, 1<<g)
		}
		s.all |= 1 << g
	}
	if len(s.needles) > 32 || len(groups) > 8 {
		panic("needleSet: more than 32 needles or 8 groups")
	}
	return s
}

// find is the groups of the needles str holds (ASCII case ignored), as
// bits; it stops once it found those of want.
func (s *needleSet) find(str string, want uint8) uint8 {
	if len(str) == 0 {
		return 0
	}
	var found uint8
	for i := 0; i+1 < len(str); i++ {
		c := str[i]
		if c >= 0x80 {
			return s.findLower(strings.ToLower(str))
		}
		for m := s.first[c] & s.second[str[i+1]]; m != 0; m &= m - 1 {
			j := bits.TrailingZeros32(m)
			if found&s.group[j] == 0 && hasPrefixFold(str[i:], s.needles[j]) {
				if found |= s.group[j]; found&want == want {
					return found
				}
			}
		}
	}
	if str[len(str)-1] >= 0x80 {
		return s.findLower(strings.ToLower(str))
	}
	return found
}

// findLower is the reference: each needle searched in lower, which is
// already lower-cased.
func (s *needleSet) findLower(lower string) uint8 {
	var found uint8
	for i, n := range s.needles {
		if found&s.group[i] == 0 && strings.Contains(lower, n) {
			found |= s.group[i]
		}
	}
	return found
}

// inArgv is the groups of the needles the arguments of argv hold.
func (s *needleSet) inArgv(argv []string) uint8 {
	var found uint8
	for _, a := range argv {
		if found |= s.find(a, s.all&^found); found == s.all {
			break
		}
	}
	return found
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
