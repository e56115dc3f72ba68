package kvdoc

import (
	"strings"
	"testing"
)

// TestEscapeKeyStoredKeys pins the keys already stored in NATS KV: the
// enricher's container keys and profile versions and the analyzer's
// baseline keys were written by two encoders before this package; the one
// rule must give the same bytes for every key they wrote.
func TestEscapeKeyStoredKeys(t *testing.T) {
	digest := "sha256:" + strings.Repeat("ab", 32)
	for in, want := range map[string]string{
		// contain_baselines (analyzer.KVKey).
		digest:                             "sha256=3A" + strings.Repeat("ab", 32),
		"registry.local:5000/shop/web:1.2": "registry=2Elocal=3A5000/shop/web=3A1=2E2",
		"container:c1":                     "container=3Ac1",
		"compose:shop/web":                 "compose=3Ashop/web",
		"repo:docker.io/library/nginx":     "repo=3Adocker=2Eio/library/nginx",
		"k8s:default/deployment/web":       "k8s=3Adefault/deployment/web",
		"a//b":                             "a/=2Fb",
		"/x/":                              "=2Fx=2F",
		"é":                                "=C3=A9",
		// contain_containers and profile versions (enricher.escapeKey).
		"node-1":                 "node-1",
		"host.example":           "host=2Eexample",
		strings.Repeat("0f", 32): strings.Repeat("0f", 32),
		"p1-0011223344556677":    "p1-0011223344556677",
		"ünï":                    "=C3=BCn=C3=AF",
		"sha256:abc*>\x00":       "sha256=3Aabc=2A=3E=00",
		"":                       "=",
	} {
		if got := EscapeKey(in); got != want {
			t.Errorf("EscapeKey(%q) = %q, want %q", in, got, want)
		}
	}
	if got, want := ContainerKey("host.example", strings.Repeat("0f", 32)), "host=2Eexample."+strings.Repeat("0f", 32); got != want {
		t.Errorf("ContainerKey = %q, want %q", got, want)
	}
	if got, want := ContainerKey("", "x"), "=.x"; got != want {
		t.Errorf("ContainerKey = %q, want %q", got, want)
	}
	if got, want := DigestKey(digest), "sha256_"+strings.Repeat("ab", 32); got != want {
		t.Errorf("DigestKey = %q, want %q", got, want)
	}
	if got, want := ProfileKey(digest, "p1-0011223344556677"), "sha256_"+strings.Repeat("ab", 32)+".p1-0011223344556677"; got != want {
		t.Errorf("ProfileKey = %q, want %q", got, want)
	}
}

func TestUnescapeKey(t *testing.T) {
	for _, k := range []string{"", "sha256:abcd", "demo:1", "registry.local:5000/shop/web:1.2", "a..b", "/x/", "a//b", "é", "\x00\xff"} {
		enc := EscapeKey(k)
		got, err := UnescapeKey(enc)
		if err != nil || got != k {
			t.Errorf("%q -> %q -> %q, %v", k, enc, got, err)
		}
	}
	for _, bad := range []string{"", "=4", "=zz", "=41", "a.b", "/a", "a/", "a//b", "=3a"} {
		if got, err := UnescapeKey(bad); err == nil {
			t.Errorf("UnescapeKey(%q) = %q, want an error", bad, got)
		}
	}
}

func TestDigestOfKey(t *testing.T) {
	for key, want := range map[string]string{"sha256_ab12": "sha256:ab12", "sha256_ab12.p1-00": "", "nounderscore": "", "_x": ""} {
		got, ok := DigestOfKey(key)
		if got != want || ok != (want != "") {
			t.Errorf("DigestOfKey(%q) = %q %v, want %q", key, got, ok, want)
		}
	}
}

func TestValidDigest(t *testing.T) {
	for d, want := range map[string]bool{
		"sha256:" + strings.Repeat("a", 64):  true,
		"sha512:" + strings.Repeat("0", 128): true,
		"blake3:" + strings.Repeat("1", 32):  true,
		"sha256:" + strings.Repeat("a", 63):  false,
		"sha256:" + strings.Repeat("A", 64):  false,
		"Sha256:" + strings.Repeat("a", 64):  false,
		"sha256":                             false,
		":" + strings.Repeat("a", 64):        false,
	} {
		if ValidDigest(d) != want {
			t.Errorf("ValidDigest(%q) = %v", d, !want)
		}
	}
}

// FuzzEscapeKey: any string escapes to a valid NATS KV key token that
// unescapes to it.
func FuzzEscapeKey(f *testing.F) {
	for _, s := range []string{"", "sha256:abcd", "a//b", "/x/", "é", "=41", "a.b*>"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		k := EscapeKey(s)
		if k == "" {
			t.Fatalf("EscapeKey(%q) is empty", s)
		}
		for i := 0; i < len(k); i++ {
			c := k[i]
			if !keptByte(c) && c != '=' && c != '/' {
				t.Fatalf("EscapeKey(%q) = %q has %q", s, k, c)
			}
		}
		if strings.HasPrefix(k, "/") || strings.HasSuffix(k, "/") || strings.Contains(k, "//") {
			t.Fatalf("EscapeKey(%q) = %q: an empty token", s, k)
		}
		if got, err := UnescapeKey(k); err != nil || got != s {
			t.Fatalf("UnescapeKey(EscapeKey(%q)) = %q, %v", s, got, err)
		}
		if u, err := UnescapeKey(s); err == nil && EscapeKey(u) != s {
			t.Fatalf("UnescapeKey(%q) = %q escapes to %q", s, u, EscapeKey(u))
		}
	})
}
