package analyzer

import (
	"strings"
	"testing"
)

// argvContains is the reference the needle sets replace: each argument
// lower-cased, then searched for each needle.
func argvContains(argv []string, needles ...string) bool {
	for _, a := range argv {
		la := strings.ToLower(a)
		for _, n := range needles {
			if strings.Contains(la, n) {
				return true
			}
		}
	}
	return false
}

func TestNeedleSet(t *testing.T) {
	for _, tc := range []struct {
		argv []string
		want bool
	}{
		{[]string{"xmrig", "-o", "STRATUM+TCP://pool:3333"}, true},
		{[]string{"/usr/local/bin/app", "--config", "/etc/app/config.yaml"}, false},
		{[]string{"curl", "http://169.254.169.254/latest/meta-data/"}, true},
		{[]string{"app", "--Donate-Level=1"}, true},
		{[]string{"app", "randomX"}, true},
		{[]string{"app", "rando"}, false},
		{[]string{"curl", "http://metadata.google.internal/computeMetadata/v1/"}, true},
		{[]string{"curl", "/latest/api/to\u212aen"}, true}, // the Kelvin sign lower-cases to k
		{[]string{"app", "é", "cryptonighté"}, true},
		{nil, false},
	} {
		got := minerArgs.inArgv(tc.argv) || metadataArgs.inArgv(tc.argv)
		ref := argvContains(tc.argv, minerNeedles...) || argvContains(tc.argv, metadataNeedles...)
		if got != tc.want || ref != tc.want {
			t.Errorf("%q: needle sets %v, reference %v, want %v", tc.argv, got, ref, tc.want)
		}
	}
}

// FuzzNeedleSet: the one-pass needle sets answer as the reference
// (lower-case each argument, search it for each needle).
func FuzzNeedleSet(f *testing.F) {
	for _, s := range []string{"STRATUM+TCP://x", "--coin=Monero", "http://169.254.169.254/", "/latest/api/to\u212aen",
		"\xff\xfe", "İ", "fd00:EC2::254", "metadata.GOOGLE.internal", "random", "/computemetadata/"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		for _, set := range []struct {
			s       *needleSet
			needles []string
		}{{minerArgs, minerNeedles}, {metadataArgs, metadataNeedles}} {
			if got, want := set.s.contains(s), argvContains([]string{s}, set.needles...); got != want {
				t.Fatalf("%q: contains %v, reference %v", s, got, want)
			}
		}
	})
}
