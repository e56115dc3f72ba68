package enricher

import (
	"strings"
	"testing"

	"github.com/containsec/contain/schemas/containv1"
)

// TestIdentitySpoofedLabels: labels an image author controls
// (io.contain.image.digest, a ref) never override the runtime's identity,
// and a later label-only record keeps a runtime-identified container where
// it is.
func TestIdentitySpoofedLabels(t *testing.T) {
	real := "sha256:" + strings.Repeat("a", 64)
	fake := "sha256:" + strings.Repeat("f", 64)
	spoof := map[string]string{"io.contain.image.digest": fake, "io.contain.image.ref": "evil/fresh:1", "io.contain.critical": "true"}

	id := IdentityOf(&containv1.ContainerInfo{ImageRef: "shop/web:1", ImageDigest: real, Name: "web", Labels: spoof}, "ev-name")
	if id.Digest != real || id.Ref != "shop/web:1" || id.Name != "web" || id.Source != IdentityRuntime || !id.Conflict {
		t.Fatalf("runtime identity with spoofed labels: %+v", id)
	}
	// A bad runtime digest is dropped, and still not replaced by a label.
	id = IdentityOf(&containv1.ContainerInfo{ImageRef: "shop/web:1", ImageDigest: "sha256:zz", Labels: spoof}, "")
	if id.Digest != "" || id.Source != IdentityRuntime {
		t.Fatalf("bad runtime digest: %+v", id)
	}
	// A legacy collector (no runtime fields): labels, marked as such.
	id = IdentityOf(&containv1.ContainerInfo{Labels: map[string]string{"io.contain.image.digest": real}}, "n")
	if id.Digest != real || id.Source != IdentityLabels {
		t.Fatalf("legacy: %+v", id)
	}
	if id := IdentityOf(nil, "n"); id.Source != "" || id.Digest != "" {
		t.Fatalf("nil: %+v", id)
	}

	old := ContainerImage{ImageRef: "shop/web:1", ImageDigest: real, Name: "web", IdentitySource: IdentityRuntime}
	next := ContainerImage{ImageRef: "evil/fresh:1", ImageDigest: fake, Name: "x", IdentitySource: IdentityLabels}
	if got := keepRuntimeIdentity(old, next); got.ImageDigest != real || got.ImageRef != "shop/web:1" || got.IdentitySource != IdentityRuntime {
		t.Fatalf("label-only record moved a runtime-identified container: %+v", got)
	}
	newer := ContainerImage{ImageRef: "shop/web:2", ImageDigest: fake, IdentitySource: IdentityRuntime}
	if got := keepRuntimeIdentity(old, newer); got.ImageDigest != fake {
		t.Fatalf("the runtime's own update was not taken: %+v", got)
	}
}
