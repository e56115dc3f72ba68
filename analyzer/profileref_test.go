package analyzer

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"github.com/containsec/contain/schemas/containv1"
	"github.com/containsec/contain/schemas/kvdoc"
)

func TestDecodeDeclaredPeerAddresses(t *testing.T) {
	d := kvdoc.Profile{
		SchemaVersion: kvdoc.ProfileSchemaVersion, Version: "p1-0011223344556677",
		ImageDigest: "sha256:" + strings.Repeat("a", 64), ComposeProject: "shop", ComposeService: "web",
		Peers:         []kvdoc.Peer{{Service: "db", Via: []string{"depends_on"}}},
		PeerAddresses: []string{"10.231.0.3", "fd00:231::3"},
	}
	raw, _ := json.Marshal(d)
	p, err := DecodeDeclared(raw)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(p.Peers, []string{"10.231.0.3", "fd00:231::3"}) {
		t.Errorf("peers %v", p.Peers)
	}
	// No peer container known yet: declares no peer (not "nothing").
	d.PeerAddresses = []string{}
	raw, _ = json.Marshal(d)
	if p, err = DecodeDeclared(raw); err != nil || p.Peers == nil || len(p.Peers) != 0 {
		t.Errorf("empty peer_addresses: peers %#v err %v, want []", p.Peers, err)
	}
	raw = []byte(strings.Replace(string(raw), `"peer_addresses":[]`, `"peer_addresses":["db"]`, 1))
	if _, err := DecodeDeclared(raw); err == nil {
		t.Error("a peer address that is not an address was accepted")
	}
}

// TestEngineRefProfilePeers: a container's events name its compose
// service's profile (profile_ref); its peer addresses decide
// net.peer.undeclared, even while learning, over the image profile (which
// declares nothing about peers). Until the named profile is known the
// image's applies.
func TestEngineRefProfilePeers(t *testing.T) {
	refs := map[string]*Profile{}
	e := newEngine(t, testConfig(), func(string) *Profile { return &Profile{Ref: "sha256:aaaa@p1-img"} })
	e.SetRefProfiles(func(ref string) *Profile { return refs[ref] })
	conn := func(ctr string, at float64, addr [4]byte, ref string) []*containv1.Event {
		ev := netEv(ctr, sec(at), containv1.Network_OP_CONNECT, addr, 5432)
		ev.ProfileRef = ref
		return e.Observe(ev)
	}
	const svcRef = "sha256:aaaa@p1-web2"
	// The named profile is not known yet: nothing is declared.
	if out := conn("web1", 0.1, [4]byte{10, 231, 0, 9}, svcRef); len(out) != 0 {
		t.Fatalf("alert before the service profile was known: %v", out)
	}
	refs[svcRef] = &Profile{Ref: svcRef, Peers: []string{"10.231.0.3"}}
	if out := conn("web1", 0.2, [4]byte{10, 231, 0, 3}, svcRef); len(out) != 0 {
		t.Fatalf("alert for a declared peer: %v", out)
	}
	a := alertOf(t, conn("web1", 0.3, [4]byte{10, 231, 0, 4}, svcRef))
	if r := hasCode(a, CodePeerUndeclared); r == nil || !strings.Contains(r.Message, "10.231.0.4:5432") {
		t.Fatalf("reasons %v, want %s for 10.231.0.4:5432", a.Reasons, CodePeerUndeclared)
	}
	// Another container of the same image whose events name no service
	// profile is judged by the image profile: no peer declared, no alert.
	if out := conn("other1", 0.4, [4]byte{10, 231, 0, 4}, ""); len(out) != 0 {
		t.Fatalf("alert for a container without a service profile: %v", out)
	}
}

func TestProfileRefs(t *testing.T) {
	ev := func(ref string) *containv1.Event { return &containv1.Event{ProfileRef: ref} }
	got := profileRefs([]*containv1.Batch{{Events: []*containv1.Event{ev("a"), ev("a"), ev(""), ev("b")}}, {Events: []*containv1.Event{ev("a"), nil}}})
	if !slices.Equal(got, []string{"a", "b"}) {
		t.Errorf("profileRefs = %v", got)
	}
}

// FuzzDecodeDeclared: profiles from the enricher's bucket are decoded
// safely, and peers the seed accepts compile.
func FuzzDecodeDeclared(f *testing.F) {
	f.Add([]byte(`{"schema_version":1,"version":"p1-00","image_digest":"sha256:` + strings.Repeat("a", 64) + `","peers":[{"service":"db","via":["link"]}],"peer_addresses":["10.0.0.3","fd00::3"]}`))
	f.Add([]byte(`{"schema_version":1,"version":"p1-00","image_digest":"sha256:` + strings.Repeat("a", 64) + `","peer_addresses":[]}`))
	f.Fuzz(func(t *testing.T, raw []byte) {
		p, err := DecodeDeclared(raw)
		if err != nil {
			return
		}
		if s := compileProfile(p); p.Peers != nil && len(s.peers) != len(p.Peers) {
			t.Fatalf("peers %v compiled to %d rules", p.Peers, len(s.peers))
		}
	})
}
