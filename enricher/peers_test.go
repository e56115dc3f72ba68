package enricher

import (
	"context"
	"encoding/json"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/containsec/contain/internal/bus"
	"github.com/containsec/contain/internal/imagecfg"
	"github.com/containsec/contain/internal/metrics"
	"github.com/containsec/contain/internal/testenv"
	"github.com/containsec/contain/schemas/containv1"
)

// PutDeclaration stores an image declaration as the resolver does, so that
// a test resolves images without a registry.
func putDeclaration(t *testing.T, js jetstream.JetStream, d *imagecfg.Declaration) {
	t.Helper()
	ctx := context.Background()
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: DefaultImagesBucket, History: 1})
	if err != nil {
		t.Fatal(err)
	}
	data, _ := json.Marshal(d)
	if _, err := kv.Put(ctx, DigestKey(d.Digest), data); err != nil {
		t.Fatal(err)
	}
}

func addrs(ss ...string) [][]byte {
	var out [][]byte
	for _, s := range ss {
		b := netip.MustParseAddr(s).As16()
		out = append(out, b[:])
	}
	return out
}

func TestAddressStrings(t *testing.T) {
	raw := append(addrs("10.231.0.3", "fd00::3", "10.231.0.3"), []byte{10, 0, 0, 1}, []byte{1, 2, 3}, make([]byte, 16))
	got, bad := addressStrings(raw)
	if want := []string{"10.0.0.1", "10.231.0.3", "fd00::3"}; !slices.Equal(got, want) || bad != 2 {
		t.Errorf("addressStrings = %v (%d bad), want %v (2 bad)", got, bad, want)
	}
}

// TestServicePeerAddresses: web depends_on db in a compose file; web's
// service profile lists db's container addresses in peer_addresses, empty
// until a db container is known, and a new profile version (carried by
// web's next events) once it is. A db of another project does not count.
func TestServicePeerAddresses(t *testing.T) {
	_, _, js := testenv.NATS(t)
	const digest = testDigest
	putDeclaration(t, js, &imagecfg.Declaration{Digest: digest, Ref: "shop/app:1", Source: "oci_layout"})
	composeFile := filepath.Join(t.TempDir(), "compose.yaml")
	if err := os.WriteFile(composeFile, []byte("name: shop\nservices:\n  web:\n    image: shop/app:1\n    depends_on: [db]\n  db:\n    image: shop/app:1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := testConfig()
	cfg.Workers = 1
	cfg.Registry.Enabled = false
	cfg.ComposeFiles = []string{composeFile}
	startEnricher(t, cfg, js, metrics.New())
	out := newEventsReader(t, js)
	p := bus.NewProducer("h1", metrics.StageCollector)
	labels := func(project, service string) map[string]string {
		return map[string]string{"io.contain.image.ref": "shop/app:1", "io.contain.image.digest": digest,
			LabelComposeProject: project, LabelComposeService: service}
	}
	withAddrs := func(ev *containv1.Event, a ...string) *containv1.Event {
		ev.GetContainer().Addresses = addrs(a...)
		return ev
	}
	// webRef sends web events until their profile_ref satisfies ok.
	mono := uint64(1)
	webProfile := func(what string, ok func(*Profile) bool) *Profile {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for time.Now().Before(deadline) {
			mono++
			publishRaw(t, js, p, execEvent("h1", "web1", mono))
			ev := out.next(1)[0].Events[0]
			if ev.ProfileRef != "" {
				pr, err := LoadProfileRef(context.Background(), js, ev.ProfileRef)
				if err != nil {
					t.Fatal(err)
				}
				if ok(pr) {
					return pr
				}
			}
			time.Sleep(20 * time.Millisecond)
		}
		t.Fatalf("timed out waiting for web's profile: %s", what)
		return nil
	}
	publishRaw(t, js, p, withAddrs(containerEvent("h1", "web1", labels("shop", "web")), "10.231.0.2"),
		withAddrs(containerEvent("h1", "db9", labels("other", "db")), "10.231.0.9"))
	out.next(1)
	first := webProfile("service profile", func(pr *Profile) bool { return pr.ComposeService == "web" })
	if first.PeerAddresses == nil || len(first.PeerAddresses) != 0 || len(first.Peers) != 1 || first.Peers[0].Service != "db" {
		t.Errorf("before db: peers %+v peer_addresses %#v, want [db] and []", first.Peers, first.PeerAddresses)
	}
	publishRaw(t, js, p, withAddrs(containerEvent("h1", "db1", labels("shop", "db")), "10.231.0.3", "fd00:231::3"))
	out.next(1)
	second := webProfile("db's addresses", func(pr *Profile) bool { return len(pr.PeerAddresses) > 0 })
	if want := []string{"10.231.0.3", "fd00:231::3"}; !slices.Equal(second.PeerAddresses, want) || second.Version == first.Version {
		t.Errorf("after db: peer_addresses %v version %s (was %s), want %v and a new version", second.PeerAddresses, second.Version, first.Version, want)
	}
	// The stored JSON decodes (peer_addresses validated).
	if dp, err := DecodeProfile(mustProfileJSON(t, js, second)); err != nil || dp.ImageDigest != digest {
		t.Errorf("stored profile does not decode: %v", err)
	}
}

func mustProfileJSON(t *testing.T, js jetstream.JetStream, p *Profile) []byte {
	t.Helper()
	kv, err := js.KeyValue(context.Background(), DefaultProfilesBucket)
	if err != nil {
		t.Fatal(err)
	}
	kve, err := kv.Get(context.Background(), ProfileKey(p.ImageDigest, p.Version))
	if err != nil {
		t.Fatal(err)
	}
	return kve.Value()
}
