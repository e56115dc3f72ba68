package enricher

import (
	"github.com/containsec/contain/schemas/containv1"
	"github.com/containsec/contain/schemas/kvdoc"
)

// Where a container record's image identity came from.
const (
	// IdentityRuntime: ContainerInfo.image_ref/image_digest/name, which the
	// collector reads from the runtime's state or the engine's API only.
	IdentityRuntime = "runtime"
	// IdentityLabels: the container's labels (a collector that predates
	// the runtime fields put the runtime's identity there as
	// io.contain.image.*; an image author can write labels too).
	IdentityLabels = "labels"
)

// Identity is a container's image as the enricher takes it.
type Identity struct {
	Ref, Digest, Name, Source string
	// Conflict: the labels name another digest than the runtime's (a
	// spoofed io.contain.image.digest, say); the runtime's is kept.
	Conflict bool
}

// IdentityOf decides a container's image identity from its KIND_CONTAINER
// info. The runtime's fields win whenever set: a label never overrides the
// runtime's digest. Without them the labels are read (ImageFromLabels),
// as a legacy collector's output; a digest that is not algorithm:hex is
// dropped either way. Pure.
func IdentityOf(ci *containv1.ContainerInfo, eventName string) Identity {
	var labels map[string]string
	if ci != nil {
		labels = ci.Labels
	}
	lref, ldigest := ImageFromLabels(labels)
	id := Identity{Name: eventName}
	if ci != nil && (ci.ImageDigest != "" || ci.ImageRef != "" || ci.ImageId != "") {
		id.Source = IdentityRuntime
		id.Ref = ci.ImageRef
		if kvdoc.ValidDigest(ci.ImageDigest) {
			id.Digest = ci.ImageDigest
		}
		if ci.Name != "" {
			id.Name = ci.Name
		}
		id.Conflict = ldigest != "" && ldigest != id.Digest
		return id
	}
	id.Ref, id.Digest = lref, ldigest
	if id.Ref != "" || id.Digest != "" {
		id.Source = IdentityLabels
	}
	return id
}

// keepRuntimeIdentity: a record whose identity came from the runtime keeps
// it when a later record only has labels (a label cannot move a known
// container to a fresh baseline and its learning window). Pure.
func keepRuntimeIdentity(old, rec ContainerImage) ContainerImage {
	if old.IdentitySource == IdentityRuntime && rec.IdentitySource != IdentityRuntime {
		rec.ImageRef, rec.ImageDigest, rec.Name, rec.IdentitySource = old.ImageRef, old.ImageDigest, old.Name, old.IdentitySource
	}
	return rec
}

// truncateLabel is the (bounded) digest label for a log line.
func truncateLabel(labels map[string]string) string {
	_, d := ImageFromLabels(labels)
	return d
}
