package kvdoc

import (
	"encoding/json"
	"errors"
	"net/netip"
	"strings"
	"testing"
)

var testDigest = "sha256:" + strings.Repeat("ab", 32)

func TestProfileSealAndDecode(t *testing.T) {
	p := &Profile{ImageDigest: testDigest, ListenPorts: []Port{{Port: 80, Protocol: "tcp"}}, UID: -1}
	p.Seal()
	if p.SchemaVersion != ProfileSchemaVersion || !strings.HasPrefix(p.Version, "p1-") || len(p.Version) != 19 {
		t.Fatalf("sealed %+v", p)
	}
	v := p.Version
	p.Seal()
	if p.Version != v {
		t.Fatalf("sealing twice: %s then %s", v, p.Version)
	}
	raw, _ := json.Marshal(p)
	got, err := DecodeProfile(raw)
	if err != nil {
		t.Fatal(err)
	}
	if got.Ref() != testDigest+"@"+v || got.ListenPorts[0] != (Port{Port: 80, Protocol: "tcp"}) || got.UID != -1 {
		t.Fatalf("decoded %+v", got)
	}
	for name, raw := range map[string]string{
		"newer schema": `{"schema_version":2,"version":"x","image_digest":"` + testDigest + `"}`,
		"no schema":    `{"version":"x","image_digest":"` + testDigest + `"}`,
		"bad digest":   `{"schema_version":1,"version":"x","image_digest":"sha256:1"}`,
		"no version":   `{"schema_version":1,"image_digest":"` + testDigest + `"}`,
		"bad peer":     `{"schema_version":1,"version":"x","image_digest":"` + testDigest + `","peer_addresses":["db"]}`,
		"not json":     `{`,
	} {
		if _, err := DecodeProfile([]byte(raw)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if !errors.Is(ErrNoProfile, ErrNoProfile) || ErrNoProfile.Error() != "no declared profile" {
		t.Fatal(ErrNoProfile)
	}
}

// FuzzDecodeProfile: profiles from KV are parsed safely.
func FuzzDecodeProfile(f *testing.F) {
	p := &Profile{ImageDigest: testDigest, ListenPorts: []Port{{Port: 80, Protocol: "tcp"}}}
	p.Seal()
	good, _ := json.Marshal(p)
	f.Add(good)
	f.Add([]byte(`{"schema_version":1,"version":"x","image_digest":"sha256:1"}`))
	f.Add([]byte(`null`))
	sp := &Profile{ImageDigest: testDigest, ComposeService: "web", Peers: []Peer{{Service: "db", Via: []string{"depends_on"}}}, PeerAddresses: []string{"10.231.0.3", "fd00::3"}}
	sp.Seal()
	withPeers, _ := json.Marshal(sp)
	f.Add(withPeers)
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := DecodeProfile(b)
		if err != nil {
			return
		}
		if p.Version == "" || !ValidDigest(p.ImageDigest) || p.SchemaVersion < 1 || p.SchemaVersion > ProfileSchemaVersion {
			t.Fatalf("accepted bad profile %+v", p)
		}
		for _, a := range p.PeerAddresses {
			if _, err := netip.ParseAddr(a); err != nil {
				t.Fatalf("accepted peer address %q", a)
			}
		}
	})
}
