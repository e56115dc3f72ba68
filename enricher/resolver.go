package enricher

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/containsec/contain/internal/compose"
	"github.com/containsec/contain/internal/dockerfile"
	"github.com/containsec/contain/internal/imagecfg"
	"github.com/containsec/contain/internal/logfields"
	"github.com/containsec/contain/internal/metrics"
	"github.com/containsec/contain/schemas/kvdoc"
)

// resolver turns container images into declarations and profiles in the
// background, off the event path.
type resolver struct {
	e        *Enricher
	sources  imagecfg.Sources
	queue    chan ContainerImage
	projects []*compose.Project

	mu       sync.Mutex
	attempts map[string]time.Time // resolution key -> last attempt
}

func sourcesOf(reg RegistryConfig, src ImageSourcesConfig) imagecfg.Sources {
	return imagecfg.Sources{
		OCILayouts: src.OCILayouts,
		Tarballs:   src.Tarballs,
		Registry:   reg.Enabled,
		Insecure:   reg.Insecure,
		Keychain:   reg.Keychain,
	}
}

func newResolver(e *Enricher) (*resolver, error) {
	r := &resolver{
		e:        e,
		sources:  sourcesOf(e.cfg.Registry, e.cfg.ImageSources),
		queue:    make(chan ContainerImage, e.cfg.ResolveQueue),
		attempts: make(map[string]time.Time),
	}
	// A bad compose file is counted and logged; containers are still
	// monitored, without its declarations.
	for _, f := range e.cfg.ComposeFiles {
		p, err := compose.Load(context.Background(), f)
		if err != nil {
			e.m.Errors.WithLabelValues(metrics.StageEnricher, errCompose).Inc()
			e.log.Error("compose file ignored", logfields.File, f, logfields.Err, err)
			continue
		}
		r.projects = append(r.projects, p)
	}
	return r, nil
}

func (r *resolver) start(ctx context.Context, wg *sync.WaitGroup) {
	for range r.e.cfg.Workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-ctx.Done():
					return
				case rec := <-r.queue:
					r.resolve(ctx, rec)
				}
			}
		}()
	}
}

func resolveKey(rec ContainerImage) string {
	return rec.ImageRef + "|" + rec.ImageDigest + "|" + rec.ComposeProject + "|" + rec.ComposeService + "|" + rec.Dockerfile
}

// request queues rec unless it was tried within ResolveRetry; it never
// blocks the event path.
func (r *resolver) request(rec ContainerImage) {
	if rec.ImageRef == "" && rec.ImageDigest == "" {
		return
	}
	k := resolveKey(rec)
	r.mu.Lock()
	if t, ok := r.attempts[k]; ok && time.Since(t) < r.e.cfg.ResolveRetry {
		r.mu.Unlock()
		return
	}
	r.attempts[k] = time.Now()
	r.mu.Unlock()
	select {
	case r.queue <- rec:
	default:
		r.mu.Lock()
		delete(r.attempts, k)
		r.mu.Unlock()
		r.e.m.Dropped.WithLabelValues(metrics.StageEnricher, "resolve_queue_full").Inc()
	}
}

// resolve makes rec's declaration and profile, stores them and attaches
// the profile reference to the container's future events.
func (r *resolver) resolve(ctx context.Context, rec ContainerImage) {
	ctx, cancel := context.WithTimeout(ctx, r.e.cfg.ResolveTimeout)
	defer cancel()
	e := r.e
	decl, source, err := r.declaration(ctx, rec)
	if err != nil {
		e.em.resolutions.WithLabelValues(sourceLabel(err), "error").Inc()
		e.m.Errors.WithLabelValues(metrics.StageEnricher, errResolve).Inc()
		e.log.Warn("image declaration unavailable; container monitored without it",
			logfields.Image, rec.ImageRef, logfields.Digest, rec.ImageDigest, logfields.Err, err)
		return
	}
	e.em.resolutions.WithLabelValues(source, "ok").Inc()
	df := r.dockerfile(rec)
	svc, project := r.service(rec)
	// The image profile (keyed by digest) always; a service profile too
	// when the container belongs to a compose service.
	// The service profile goes first: setProfile keeps it over the image's.
	var profiles []*Profile
	if svc != nil {
		profiles = append(profiles, DeriveProfile(decl, df, svc, project))
	}
	profiles = append(profiles, DeriveProfile(decl, df, nil, ""))
	for _, p := range profiles {
		if p.ComposeService != "" {
			// With its peers' addresses, re-published as they change.
			if err := e.publishServiceProfile(ctx, rec, p); err != nil {
				e.m.Errors.WithLabelValues(metrics.StageEnricher, errProfile).Inc()
				e.log.Warn("storing profile", logfields.Err, err)
				return
			}
			continue
		}
		if err := storeProfile(ctx, e.profilesKV, p); err != nil {
			e.m.Errors.WithLabelValues(metrics.StageEnricher, errProfile).Inc()
			e.log.Warn("storing profile", logfields.Err, err)
			return
		}
		e.setProfile(rec, decl.Digest, p.Ref(), p.ComposeService != "")
	}
}

func sourceLabel(err error) string {
	var se *imagecfg.SourceError
	if errors.As(err, &se) {
		return se.Source
	}
	if errors.Is(err, imagecfg.ErrNotFound) {
		return "none"
	}
	return "config"
}

// declaration returns the image's declaration from the images bucket, or
// fetches it and stores it there.
func (r *resolver) declaration(ctx context.Context, rec ContainerImage) (*imagecfg.Declaration, string, error) {
	e := r.e
	if rec.ImageDigest != "" {
		if kve, err := e.imagesKV.Get(ctx, kvdoc.DigestKey(rec.ImageDigest)); err == nil {
			var d imagecfg.Declaration
			if err := json.Unmarshal(kve.Value(), &d); err == nil && d.Digest == rec.ImageDigest {
				return &d, "kv", nil
			}
			e.m.Malformed.WithLabelValues(metrics.StageEnricher).Inc()
		} else if !errors.Is(err, jetstream.ErrKeyNotFound) {
			e.m.Errors.WithLabelValues(metrics.StageEnricher, errKV).Inc()
		}
	}
	img, source, err := r.sources.Fetch(ctx, rec.ImageRef, rec.ImageDigest)
	if err != nil {
		return nil, "", err
	}
	d, err := imagecfg.Declare(img, imagecfg.Options{ListFiles: e.cfg.Registry.LayerFiles || source != imagecfg.SourceRegistry, MaxLayerBytes: e.cfg.Registry.MaxLayerBytes})
	if err != nil {
		if errors.Is(err, imagecfg.ErrBadConfig) {
			e.m.Errors.WithLabelValues(metrics.StageEnricher, errConfig).Inc()
		}
		return nil, "", &imagecfg.SourceError{Source: source, Err: err}
	}
	d.Ref, d.Source = rec.ImageRef, source
	if data, err := json.Marshal(d); err == nil {
		if _, err := e.imagesKV.Put(ctx, kvdoc.DigestKey(d.Digest), data); err != nil {
			e.m.Errors.WithLabelValues(metrics.StageEnricher, errKV).Inc()
		}
	}
	return d, source, nil
}

// dockerfile parses the Dockerfile named for rec, if any; a bad one is
// counted and ignored.
func (r *resolver) dockerfile(rec ContainerImage) *dockerfile.Dockerfile {
	path := r.e.cfg.Dockerfiles[rec.ImageRef]
	if path == "" {
		path = rec.Dockerfile
	}
	if path == "" {
		return nil
	}
	df, err := readDockerfile(path)
	if err != nil {
		r.e.m.Errors.WithLabelValues(metrics.StageEnricher, errDockerfile).Inc()
		r.e.log.Warn("dockerfile ignored", logfields.Path, path, logfields.Err, err)
		return nil
	}
	return df
}

func readDockerfile(path string) (*dockerfile.Dockerfile, error) {
	src, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading dockerfile: %w", err)
	}
	return dockerfile.Parse(src)
}

// service finds rec's compose service: by the compose labels, else the
// only service whose image is rec's reference.
func (r *resolver) service(rec ContainerImage) (*compose.Service, string) {
	var found *compose.Service
	project, n := "", 0
	for _, p := range r.projects {
		if rec.ComposeService != "" {
			if s := p.Services[rec.ComposeService]; s != nil && (rec.ComposeProject == "" || rec.ComposeProject == p.Name) {
				return s, p.Name
			}
			continue
		}
		for _, s := range p.Services {
			if s.Image != "" && s.Image == rec.ImageRef {
				found, project, n = s, p.Name, n+1
			}
		}
	}
	if n == 1 {
		return found, project
	}
	return nil, ""
}

// setProfile attaches a resolved profile to the containers running the
// image (a service profile only to that service's containers).
func (e *Enricher) setProfile(rec ContainerImage, digest, ref string, service bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if rec.ImageRef != "" && rec.ImageDigest == "" {
		e.digests[rec.ImageRef] = digest
	}
	if !service {
		e.profiles[digest] = ref
	}
	for k, en := range e.cache {
		match := en.rec.ImageDigest == digest || en.rec.ImageDigest == "" && en.rec.ImageRef == rec.ImageRef
		if !match {
			continue
		}
		if service && (en.rec.ComposeService != rec.ComposeService || en.rec.ComposeProject != rec.ComposeProject) {
			continue
		}
		if !service && en.rec.ComposeService != "" && en.profileRef != "" {
			continue // keep the more specific service profile
		}
		nr := en.rec
		nr.ImageDigest = validUTF8(digest)
		e.cache[k] = newEntry(nr, validUTF8(ref)) // UTF-8: see store
	}
}
