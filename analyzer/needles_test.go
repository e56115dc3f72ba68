package analyzer

import (
	"strings"
	"testing"
)

// argvContains is the reference the needle set replaces: each argument
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

// argvNeedlesRef is execNeedles.inArgv by the reference.
func argvNeedlesRef(argv []string) uint8 {
	var g uint8
	if argvContains(argv, minerNeedles...) {
		g |= needleMiner
	}
	if argvContains(argv, metadataNeedles...) {
		g |= needleMetadata
	}
	return g
}

func TestNeedleSet(t *testing.T) {
	for _, tc := range []struct {
		argv []string
		want uint8
	}{
		{[]string{"xmrig", "-o", "STRATUM+TCP://pool:3333"}, needleMiner},
		{[]string{"/usr/local/bin/app", "--config", "/etc/app/config.yaml"}, 0},
		{[]string{"curl", "http://169.254.169.254/latest/meta-data/"}, needleMetadata},
		{[]string{"app", "--Donate-Level=1", "http://METADATA.google.internal/"}, needleMiner | needleMetadata},
		{[]string{"app", "randomX"}, needleMiner},
		{[]string{"app", "rando"}, 0},
		{[]string{"curl", "http://metadata.google.internal/computeMetadata/v1/"}, needleMetadata},
		{[]string{"curl", "/latest/api/to\u212aen"}, needleMetadata}, // the Kelvin sign lower-cases to k
		{[]string{"app", "é", "cryptonighté"}, needleMiner},
		{[]string{"cryptonight randomx stratum+tcp://"}, needleMiner},
		{nil, 0},
	} {
		got, ref := execNeedles.inArgv(tc.argv), argvNeedlesRef(tc.argv)
		if got != tc.want || ref != tc.want {
			t.Errorf("%q: needle set %b, reference %b, want %b", tc.argv, got, ref, tc.want)
		}
	}
}

// FuzzNeedleSet: the one-pass needle set answers as the reference
// (lower-case each argument, search it for each needle), for one
// argument and for two.
func FuzzNeedleSet(f *testing.F) {
	for _, s := range []string{"STRATUM+TCP://x", "--coin=Monero", "http://169.254.169.254/", "/latest/api/to\u212aen",
		"\xff\xfe", "İ", "fd00:EC2::254", "metadata.GOOGLE.internal", "random", "/computemetadata/", "randomx169.254.170.2"} {
		f.Add(s, "-c")
	}
	f.Fuzz(func(t *testing.T, a, b string) {
		for _, argv := range [][]string{{a}, {a, b}} {
			if got, want := execNeedles.inArgv(argv), argvNeedlesRef(argv); got != want {
				t.Fatalf("%q: needle set %b, reference %b", argv, got, want)
			}
		}
	})
}

// BenchmarkArgvNeedles is the miner and metadata searches of one exec's
// command line (the fleet mix's), by the needle set and by the
// reference it replaces. Per op: one command line.
//
//	go test ./analyzer -run '^$' -bench ArgvNeedles -count 5
func BenchmarkArgvNeedles(b *testing.B) {
	b.Run("reference", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			if argvNeedlesRef(fleetExecs[i%len(fleetExecs)]) != 0 {
				b.Fatal("matched")
			}
		}
	})
	b.Run("set", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			if execNeedles.inArgv(fleetExecs[i%len(fleetExecs)]) != 0 {
				b.Fatal("matched")
			}
		}
	})
}
