package engines

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"runtime"

	content "github.com/containerd/containerd/api/services/content/v1"
	images "github.com/containerd/containerd/api/services/images/v1"
)

// Image is what containerd says about an image.
type Image struct {
	// Digest is the image's target: its manifest (or index) digest, the
	// digest a registry reference pins ("name@sha256:...").
	Digest string
	// ID is the digest of the image's config (docker's image id) when the
	// manifest could be read from containerd's content store.
	ID string
}

// maxManifest bounds a manifest or index read from the content store.
const maxManifest = 4 << 20

// OCI and docker media types of indexes (a manifest list names one
// manifest per platform).
var indexTypes = map[string]bool{
	"application/vnd.oci.image.index.v1+json":                   true,
	"application/vnd.docker.distribution.manifest.list.v2+json": true,
}

// Image reads image name of namespace ns: its target digest and, from the
// manifest in the content store, its config digest (for an index, the
// manifest of this host's platform, else the first).
func (c *Containerd) Image(ctx context.Context, ns, name string) (Image, error) {
	cctx, cancel := c.ctx(ctx, ns)
	defer cancel()
	r, err := images.NewImagesClient(c.conn).Get(cctx, &images.GetImageRequest{Name: name})
	if err != nil {
		return Image{}, c.err("image get", ns, name, err)
	}
	target := r.GetImage().GetTarget()
	out := Image{Digest: target.GetDigest()}
	dg, mt := target.GetDigest(), target.GetMediaType()
	for range 2 { // an index, then its manifest
		b, err := c.readBlob(cctx, dg)
		if err != nil {
			return out, c.err("content read", ns, dg, err)
		}
		config, next, nextType, err := ParseManifest(b, mt)
		if err != nil {
			return out, fmt.Errorf("containerd %s: manifest %s: %w", c.address, dg, err)
		}
		if next == "" {
			out.ID = config
			return out, nil
		}
		dg, mt = next, nextType
	}
	return out, nil
}

// ParseManifest parses an OCI or docker image manifest or index of media
// type mediaType (or the one the document states). For a manifest it
// returns the config digest; for an index, the manifest of this host's
// platform (else the first) as next and nextType; for an empty index,
// nothing.
func ParseManifest(b []byte, mediaType string) (config, next, nextType string, err error) {
	var m struct {
		MediaType string `json:"mediaType"`
		Config    struct {
			Digest string `json:"digest"`
		} `json:"config"`
		Manifests []struct {
			MediaType string `json:"mediaType"`
			Digest    string `json:"digest"`
			Platform  *struct {
				OS           string `json:"os"`
				Architecture string `json:"architecture"`
			} `json:"platform"`
		} `json:"manifests"`
	}
	if err := json.Unmarshal(b, &m); err != nil {
		return "", "", "", err
	}
	if !indexTypes[mediaType] && !indexTypes[m.MediaType] {
		return m.Config.Digest, "", "", nil
	}
	if len(m.Manifests) == 0 {
		return "", "", "", nil
	}
	pick := m.Manifests[0]
	for _, d := range m.Manifests {
		if p := d.Platform; p != nil && p.OS == runtime.GOOS && p.Architecture == runtime.GOARCH {
			pick = d
			break
		}
	}
	if pick.Digest == "" {
		return "", "", "", errors.New("index entry without a digest")
	}
	return "", pick.Digest, pick.MediaType, nil
}

// readBlob reads a content-store blob of at most maxManifest bytes.
func (c *Containerd) readBlob(ctx context.Context, dg string) ([]byte, error) {
	stream, err := content.NewContentClient(c.conn).Read(ctx, &content.ReadContentRequest{Digest: dg, Size: maxManifest + 1})
	if err != nil {
		return nil, err
	}
	var b []byte
	for {
		r, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return b, nil
		}
		if err != nil {
			return nil, err
		}
		b = append(b, r.GetData()...)
		if len(b) > maxManifest {
			return nil, fmt.Errorf("blob %s: larger than %d bytes", dg, maxManifest)
		}
	}
}
