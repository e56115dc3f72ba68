package enricher

import (
	"slices"
	"strings"

	"github.com/containsec/contain/schemas/kvdoc"
)

// Label and annotation keys the enricher reads from ContainerInfo.labels,
// in order of preference.
var (
	// RefLabels name the image reference a container was started from.
	RefLabels = []string{
		"io.contain.image.ref",
		"org.opencontainers.image.ref.name",
		"io.kubernetes.cri.image-name",
		"io.kubernetes.cri-o.ImageName",
		"com.docker.image.name",
		"nerdctl/image",
	}
	// DigestLabels name the image's manifest digest.
	DigestLabels = []string{
		"io.contain.image.digest",
		"org.opencontainers.image.digest",
		"io.kubernetes.cri.image-ref",
		"io.kubernetes.cri-o.ImageRef",
	}
)

// Labels that tie a container to a compose service.
const (
	LabelComposeProject = "com.docker.compose.project"
	LabelComposeService = "com.docker.compose.service"
	LabelDockerfile     = "io.contain.dockerfile"
)

// ContainerImage is what the enricher knows about one container. It is
// stored as JSON in the containers bucket (see schemas/profile.md).
type ContainerImage struct {
	Host           string `json:"host"`
	ContainerID    string `json:"container_id"`
	Name           string `json:"name,omitempty"`
	ImageRef       string `json:"image_ref,omitempty"`
	ImageDigest    string `json:"image_digest,omitempty"`
	ComposeProject string `json:"compose_project,omitempty"`
	ComposeService string `json:"compose_service,omitempty"`
	Dockerfile     string `json:"dockerfile,omitempty"`
	// Addresses are the container's IP addresses as the collector read
	// them (ContainerInfo.addresses); HostNetwork says they are the
	// host's.
	Addresses   []string `json:"addresses,omitempty"`
	HostNetwork bool     `json:"host_network,omitempty"`
	// IdentitySource says where ImageRef/ImageDigest/Name came from:
	// IdentityRuntime or IdentityLabels ("" when unknown).
	IdentitySource string `json:"identity_source,omitempty"`
	// SeenWallNs is the wall time of the container event that made it.
	SeenWallNs int64 `json:"seen_wall_ns,omitempty"`
	// Group is the analyzer's baseline group of the container (Router),
	// set only when the enricher routes events to partitions.
	Group string `json:"group,omitempty"`
}

// clone copies every string of c (which may point into a message's
// payload: bus.DecodeAliased).
func (c ContainerImage) clone() ContainerImage {
	c.Host, c.ContainerID, c.Name = strings.Clone(c.Host), strings.Clone(c.ContainerID), strings.Clone(c.Name)
	c.ImageRef, c.ImageDigest = strings.Clone(c.ImageRef), strings.Clone(c.ImageDigest)
	c.ComposeProject, c.ComposeService = strings.Clone(c.ComposeProject), strings.Clone(c.ComposeService)
	c.Dockerfile, c.IdentitySource, c.Group = strings.Clone(c.Dockerfile), strings.Clone(c.IdentitySource), strings.Clone(c.Group)
	if c.Addresses != nil {
		addrs := make([]string, len(c.Addresses))
		for i, a := range c.Addresses {
			addrs[i] = strings.Clone(a)
		}
		c.Addresses = addrs
	}
	return c
}

const maxLabelValue = 1024

// ImageFromLabels reads the image reference and digest from a container's
// labels (OCI annotations of a runc bundle, CRI annotations, docker
// labels). A digest inside the reference (repo@sha256:...) is used when no
// digest label is present. Values are hostile: over-long ones and digests
// that are not algorithm:hex are ignored.
func ImageFromLabels(labels map[string]string) (ref, digest string) {
	for _, k := range RefLabels {
		if v := strings.TrimSpace(labels[k]); v != "" && len(v) <= maxLabelValue {
			ref = v
			break
		}
	}
	for _, k := range DigestLabels {
		v := strings.TrimSpace(labels[k])
		if v == "" || len(v) > maxLabelValue {
			continue
		}
		// CRI image-ref is repo@sha256:...; take the digest part.
		if i := strings.LastIndexByte(v, '@'); i >= 0 {
			v = v[i+1:]
		}
		if kvdoc.ValidDigest(v) {
			digest = v
			break
		}
	}
	if digest == "" && ref != "" {
		if i := strings.LastIndexByte(ref, '@'); i >= 0 && kvdoc.ValidDigest(ref[i+1:]) {
			digest = ref[i+1:]
		}
	}
	return ref, digest
}

// ValidDigest reports whether d looks like an OCI digest
// (kvdoc.ValidDigest).
//
// Deprecated: use kvdoc.ValidDigest.
func ValidDigest(d string) bool { return kvdoc.ValidDigest(d) }

// containerFromLabels builds a record from a KIND_CONTAINER event's labels.
func containerFromLabels(host, id, name string, labels map[string]string, wallNs int64) ContainerImage {
	ref, digest := ImageFromLabels(labels)
	c := ContainerImage{
		Host:        host,
		ContainerID: id,
		Name:        name,
		ImageRef:    ref,
		ImageDigest: digest,
		SeenWallNs:  wallNs,
	}
	if v := labels[LabelComposeProject]; len(v) <= maxLabelValue {
		c.ComposeProject = v
	}
	if v := labels[LabelComposeService]; len(v) <= maxLabelValue {
		c.ComposeService = v
	}
	if v := labels[LabelDockerfile]; len(v) <= maxLabelValue {
		c.Dockerfile = v
	}
	return c
}

// sameImage reports whether two records carry the same enrichment.
func sameImage(a, b ContainerImage) bool {
	return a.ImageRef == b.ImageRef && a.ImageDigest == b.ImageDigest && a.Name == b.Name && a.IdentitySource == b.IdentitySource &&
		a.ComposeProject == b.ComposeProject && a.ComposeService == b.ComposeService && a.Dockerfile == b.Dockerfile &&
		slices.Equal(a.Addresses, b.Addresses) && a.HostNetwork == b.HostNetwork && a.Group == b.Group
}
