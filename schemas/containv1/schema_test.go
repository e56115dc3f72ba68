package containv1

import (
	"strings"
	"testing"
	"unicode/utf8"

	"google.golang.org/protobuf/proto"
)

func TestIDGenUnique(t *testing.T) {
	a, b := NewIDGen(), NewIDGen()
	seen := map[string]bool{}
	for range 1000 {
		for _, g := range []*IDGen{a, b} {
			id := string(g.Next())
			if seen[id] {
				t.Fatal("duplicate id")
			}
			seen[id] = true
		}
	}
	s := FormatID(a.Next())
	if len(s) != 36 || s[14] != '8' {
		t.Fatalf("FormatID = %q, want a version-8 UUID", s)
	}
}

func TestSafeString(t *testing.T) {
	s, ok, tr := SafeString([]byte("/bin/\xff\xfesh"), 0)
	if ok || tr || s != `/bin/\xff\xfesh` {
		t.Fatalf("SafeString = %q %v %v", s, ok, tr)
	}
	s, ok, tr = SafeString([]byte(strings.Repeat("a", 100)), 10)
	if !ok || !tr || s != strings.Repeat("a", 10) {
		t.Fatalf("SafeString bound = %q %v %v", s, ok, tr)
	}
}

func FuzzSafeString(f *testing.F) {
	f.Add([]byte("/usr/bin/ls"), 0)
	f.Add([]byte("\xc3\x28\xa0\xa1"), 3)
	f.Fuzz(func(t *testing.T, b []byte, max int) {
		s, ok, _ := SafeString(b, max)
		if !utf8.ValidString(s) {
			t.Fatalf("invalid UTF-8 out: %q", s)
		}
		if ok != utf8.Valid(b[:min(len(b), boundOr(max, len(b)))]) {
			t.Fatalf("ok=%v disagrees with input validity", ok)
		}
		// The result must always be encodable by protobuf.
		if _, err := proto.Marshal(&Exec{Filename: s, Argv: []string{s}}); err != nil {
			t.Fatal(err)
		}
	})
}

func boundOr(max, n int) int {
	if max <= 0 {
		return n
	}
	return max
}

func TestSubjectToken(t *testing.T) {
	for in, want := range map[string]string{"": "_", "a.b": "a_b", "h*>x y": "h__x_y", "node-1": "node-1",
		"tab\there": "tab_here", "del\x7f": "del_", "héte": "héte", "bad\xffutf8": "bad\uFFFDutf8", "~!": "~!"} {
		if got := SubjectToken(in); got != want {
			t.Errorf("SubjectToken(%q) = %q, want %q", in, got, want)
		}
	}
}

// FuzzSubjectToken: a token is one valid subject token, and a name that
// needs no change is its own token.
func FuzzSubjectToken(f *testing.F) {
	f.Add("node-1")
	f.Add("a.b*c>d e")
	f.Add("\xff\x7f")
	f.Add("@fleet")
	f.Fuzz(func(t *testing.T, s string) {
		tok := SubjectToken(s)
		if tok == "" || strings.ContainsAny(tok, ".*> \t\r\n\x7f") || !utf8.ValidString(tok) {
			t.Fatalf("SubjectToken(%q) = %q: not a subject token", s, tok)
		}
		// '@' never: no host's token is FleetToken (fleet batches' subject).
		if strings.Contains(tok, "@") || tok == FleetToken {
			t.Fatalf("SubjectToken(%q) = %q holds '@': a host could name the fleet batches' subject", s, tok)
		}
		if utf8.ValidString(s) && s != "" && !strings.ContainsFunc(s, func(r rune) bool { return r <= ' ' || r == 0x7f || strings.ContainsRune(".*>@", r) }) && tok != s {
			t.Fatalf("SubjectToken(%q) = %q, want it unchanged", s, tok)
		}
	})
}
