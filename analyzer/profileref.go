package analyzer

import (
	"context"
	"errors"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/containsec/contain/internal/logfields"
	"github.com/containsec/contain/schemas/containv1"
	"github.com/containsec/contain/schemas/kvdoc"
)

// maxRefProfiles bounds the profiles kept by reference.
const maxRefProfiles = 65536

// refMissRecheck is how long a profile reference that was not in the
// bucket is not looked up again.
const refMissRecheck = time.Second

// getRef returns the profile an event's profile_ref names, nil when it is
// not loaded (yet). It is the engine's RefProfileFunc.
func (p *profileCache) getRef(ref string) *Profile {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.refs[ref]
}

// putRef keeps pr under its reference.
func (p *profileCache) putRef(pr *Profile) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, ok := p.refs[pr.Ref]; !ok && len(p.refs) >= maxRefProfiles {
		clear(p.refs) // reloaded on demand by ensure
	}
	p.refs[pr.Ref] = pr
	delete(p.missed, pr.Ref)
}

// putVersioned keeps a versioned profile ("<digest key>.<version>") seen
// by the bucket watch.
func (p *profileCache) putVersioned(e jetstream.KeyValueEntry, bad func()) {
	if e.Operation() != jetstream.KeyValuePut {
		return
	}
	pr, err := DecodeDeclared(e.Value())
	if err != nil {
		bad()
		p.log.Warn("ignoring undecodable profile", logfields.Key, e.Key(), logfields.Err, err)
		return
	}
	p.putRef(pr)
}

// ensure loads, before the events are scored, the profiles they name that
// the watch has not delivered yet: an event's profile_ref may be newer
// than the mirror (the enricher stores a profile version just before it
// sets it on events). A reference not found is not asked again for
// refMissRecheck. Errors are returned for counting; scoring goes on
// without the profile.
func (p *profileCache) ensure(ctx context.Context, refs []string) error {
	var firstErr error
	for _, ref := range refs {
		p.mu.Lock()
		_, have := p.refs[ref]
		missedAt, missed := p.missed[ref]
		p.mu.Unlock()
		if have || missed && time.Since(missedAt) < refMissRecheck {
			continue
		}
		pr, err := p.load(ctx, ref)
		if err != nil {
			if errors.Is(err, kvdoc.ErrNoProfile) {
				p.mu.Lock()
				if len(p.missed) >= maxRefProfiles {
					clear(p.missed)
				}
				p.missed[strings.Clone(ref)] = time.Now() // ref may point into a payload
				p.mu.Unlock()
			} else if firstErr == nil {
				firstErr = err
			}
			continue
		}
		p.putRef(pr)
	}
	return firstErr
}

// load reads the profile ref names from the bucket.
func (p *profileCache) load(ctx context.Context, ref string) (*Profile, error) {
	digest, version, ok := strings.Cut(ref, "@")
	if !ok || !kvdoc.ValidDigest(digest) || version == "" {
		return nil, kvdoc.ErrNoProfile
	}
	if p.kv == nil {
		kv, err := p.js.KeyValue(ctx, p.bucket)
		if err != nil {
			if errors.Is(err, jetstream.ErrBucketNotFound) {
				return nil, kvdoc.ErrNoProfile
			}
			return nil, err
		}
		p.kv = kv // only the consuming goroutine calls load
	}
	e, err := p.kv.Get(ctx, kvdoc.ProfileKey(digest, version))
	if err != nil {
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			return nil, kvdoc.ErrNoProfile
		}
		return nil, err
	}
	pr, err := DecodeDeclared(e.Value())
	if err != nil {
		return nil, errors.Join(kvdoc.ErrNoProfile, err) // asked again after refMissRecheck
	}
	if pr.Ref != ref {
		return nil, kvdoc.ErrNoProfile
	}
	return pr, nil
}

// profileRefs are the distinct profile references the batches' events
// name.
func profileRefs(batches []*containv1.Batch) []string {
	var refs []string
	last := ""
	for _, b := range batches {
		for _, ev := range b.Events {
			if r := ev.GetProfileRef(); r != "" && r != last && !slices.Contains(refs, r) {
				refs = append(refs, r)
			}
			last = ev.GetProfileRef()
		}
	}
	return refs
}
