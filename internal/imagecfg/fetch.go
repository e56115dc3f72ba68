package imagecfg

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// Source names where an image was found.
const (
	SourceRegistry  = "registry"
	SourceOCILayout = "oci_layout"
	SourceTarball   = "tarball"
)

// ErrNotFound says no configured source has the image.
var ErrNotFound = errors.New("image not found in any source")

// Sources are the places images are looked up, in order: OCI layouts,
// tarballs, then the registry.
type Sources struct {
	OCILayouts []string
	Tarballs   []string
	// Registry allows pulls from the registry named by the reference.
	Registry bool
	// Insecure registries (host[:port]) are reached over plain HTTP.
	Insecure []string
	// Keychain uses the default keychain (docker config, helpers).
	Keychain bool
	// Transport overrides the HTTP transport (tests, proxies).
	Transport http.RoundTripper
}

// SourceError is a failure of one source; Source says which.
type SourceError struct {
	Source string
	Err    error
}

func (e *SourceError) Error() string { return e.Source + ": " + e.Err.Error() }
func (e *SourceError) Unwrap() error { return e.Err }

// Fetch finds the image named by ref (a reference, possibly with a digest)
// and/or digest (manifest digest). Local sources are tried first; the
// first source that has it wins. Errors of every source tried are joined.
func (s Sources) Fetch(ctx context.Context, ref, digest string) (v1.Image, string, error) {
	var errs []error
	for _, dir := range s.OCILayouts {
		img, err := fromLayout(dir, ref, digest)
		if err == nil {
			return img, SourceOCILayout, nil
		}
		if !errors.Is(err, ErrNotFound) {
			errs = append(errs, &SourceError{SourceOCILayout, fmt.Errorf("%s: %w", dir, err)})
		}
	}
	for _, p := range s.Tarballs {
		img, err := fromTarball(p, ref, digest)
		if err == nil {
			return img, SourceTarball, nil
		}
		if !errors.Is(err, ErrNotFound) {
			errs = append(errs, &SourceError{SourceTarball, fmt.Errorf("%s: %w", p, err)})
		}
	}
	if s.Registry && ref != "" {
		img, err := s.fromRegistry(ctx, ref, digest)
		if err == nil {
			return img, SourceRegistry, nil
		}
		errs = append(errs, &SourceError{SourceRegistry, err})
	}
	if len(errs) == 0 {
		return nil, "", fmt.Errorf("%s (digest %q): %w", ref, digest, ErrNotFound)
	}
	return nil, "", errors.Join(errs...)
}

func (s Sources) parse(ref string) (name.Reference, error) {
	r, err := name.ParseReference(ref)
	if err != nil {
		return nil, err
	}
	if slices.Contains(s.Insecure, r.Context().RegistryStr()) {
		return name.ParseReference(ref, name.Insecure)
	}
	return r, nil
}

func (s Sources) fromRegistry(ctx context.Context, ref, digest string) (v1.Image, error) {
	r, err := s.parse(ref)
	if err != nil {
		return nil, fmt.Errorf("reference %q: %w", ref, err)
	}
	if digest != "" {
		// Pin the exact manifest the container runs.
		if d, err := name.NewDigest(r.Context().Name()+"@"+digest, insecureOpt(s, r)...); err == nil {
			r = d
		}
	}
	opts := []remote.Option{remote.WithContext(ctx)}
	if s.Keychain {
		opts = append(opts, remote.WithAuthFromKeychain(authn.DefaultKeychain))
	}
	if s.Transport != nil {
		opts = append(opts, remote.WithTransport(s.Transport))
	}
	img, err := remote.Image(r, opts...)
	if err != nil {
		return nil, fmt.Errorf("pulling %s: %w", r, err)
	}
	return img, nil
}

func insecureOpt(s Sources, r name.Reference) []name.Option {
	if slices.Contains(s.Insecure, r.Context().RegistryStr()) {
		return []name.Option{name.Insecure}
	}
	return nil
}

// fromLayout finds an image in an OCI layout by manifest digest or by its
// org.opencontainers.image.ref.name annotation (the full reference or its
// tag).
func fromLayout(dir, ref, digest string) (v1.Image, error) {
	p, err := layout.FromPath(dir)
	if err != nil {
		return nil, err
	}
	idx, err := p.ImageIndex()
	if err != nil {
		return nil, err
	}
	im, err := idx.IndexManifest()
	if err != nil {
		return nil, err
	}
	tag := ""
	if r, err := name.ParseReference(ref); err == nil {
		if t, ok := r.(name.Tag); ok {
			tag = t.TagStr()
		}
	}
	for _, desc := range im.Manifests {
		if !desc.MediaType.IsImage() {
			continue
		}
		ann := desc.Annotations["org.opencontainers.image.ref.name"]
		if digest != "" && desc.Digest.String() == digest ||
			digest == "" && ref != "" && (ann == ref || tag != "" && ann == tag) {
			return p.Image(desc.Digest)
		}
	}
	return nil, ErrNotFound
}

// fromTarball finds an image in a `docker save` tarball by one of its
// RepoTags or by manifest digest.
func fromTarball(path, ref, digest string) (v1.Image, error) {
	m, err := tarball.LoadManifest(func() (ioReadCloser, error) { return openFile(path) })
	if err != nil {
		return nil, err
	}
	for _, desc := range m {
		for _, t := range desc.RepoTags {
			tag, err := name.NewTag(t)
			if err != nil {
				continue
			}
			if ref != "" && (t == ref || tag.Name() == normalize(ref)) {
				return tarball.ImageFromPath(path, &tag)
			}
			if digest != "" {
				img, err := tarball.ImageFromPath(path, &tag)
				if err != nil {
					return nil, err
				}
				if d, err := img.Digest(); err == nil && d.String() == digest {
					return img, nil
				}
			}
		}
	}
	if len(m) == 1 && digest != "" {
		img, err := tarball.ImageFromPath(path, nil)
		if err == nil {
			if d, err := img.Digest(); err == nil && d.String() == digest {
				return img, nil
			}
		}
	}
	return nil, ErrNotFound
}

func normalize(ref string) string {
	r, err := name.ParseReference(ref)
	if err != nil {
		return ref
	}
	return r.Name()
}
