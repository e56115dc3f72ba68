package analyzer

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"github.com/containsec/contain/schemas/kvdoc"
)

func TestDecodeDeclaredFromEnricherProfile(t *testing.T) {
	d := kvdoc.Profile{
		SchemaVersion: kvdoc.ProfileSchemaVersion, Version: "p1-0011223344556677",
		ImageDigest: "sha256:" + strings.Repeat("a", 64), ListenPorts: []kvdoc.Port{{Port: 8080, Protocol: "tcp"}, {Port: 53, Protocol: "UDP"}},
		MainProcess: []string{"/bin/httpd", "-f"}, User: "1000", UID: 1000,
		WritablePaths: []string{"/data"}, ReadOnlyRootfs: true, Executables: []string{"/bin/httpd"},
		Peers: []kvdoc.Peer{{Service: "db", Via: []string{"link"}}},
	}
	raw, err := json.Marshal(d)
	if err != nil {
		t.Fatal(err)
	}
	p, err := DecodeDeclared(raw)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(p.ListenPorts, []string{"8080/tcp", "53/udp"}) || !slices.Equal(p.WritablePaths, []string{"/data"}) ||
		!slices.Equal(p.Users, []uint32{1000}) || p.Ref != "sha256:"+strings.Repeat("a", 64)+"@p1-0011223344556677" || p.Peers != nil {
		t.Fatalf("seed %+v", p)
	}
	// The seed must be usable by the engine's own decoder rules.
	if s := compileProfile(p); s == nil || !s.allowsWrite("/data/x") || s.allowsWrite("/etc/passwd") {
		t.Fatalf("compiled seed %+v", s)
	}

	// Writable rootfs, named user, no EXPOSE: writes and users declare
	// nothing, ports declare none.
	d.ReadOnlyRootfs, d.User, d.UID, d.ListenPorts = false, "app", -1, nil
	raw, _ = json.Marshal(d)
	if p, err = DecodeDeclared(raw); err != nil {
		t.Fatal(err)
	}
	if p.WritablePaths != nil || p.Users != nil || p.ListenPorts == nil || len(p.ListenPorts) != 0 {
		t.Fatalf("seed %+v", p)
	}
	if _, err := DecodeDeclared([]byte(`{"schema_version":99}`)); err == nil {
		t.Fatal("a newer profile schema was accepted")
	}
}
