package analyzer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/containsec/contain/internal/auth"
	"github.com/containsec/contain/internal/logfields"
	"github.com/containsec/contain/internal/metrics"
	"github.com/containsec/contain/schemas/kvdoc"
)

// Store keeps baselines in a NATS KV bucket, one key per image, with the
// last versions in the bucket's history.
type Store struct {
	kv jetstream.KeyValue
	// ops verifies manual operations found at load; refused counts them.
	// Set by the analyzer; nil for the operator's commands.
	ops     *auth.Verifier
	refused func(reason string)
}

// storeHistory is how many versions of a baseline the bucket keeps.
const storeHistory = 16

// OpenStore opens (creating if needed) the baselines bucket.
func OpenStore(ctx context.Context, js jetstream.JetStream, bucket string) (*Store, error) {
	return openStore(ctx, js, bucket, 1)
}

// openStore is OpenStore with replicas (a clustered JetStream).
func openStore(ctx context.Context, js jetstream.JetStream, bucket string, replicas int) (*Store, error) {
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      bucket,
		Description: "contain analyzer baselines (" + DocFormat + ")",
		History:     storeHistory,
		Replicas:    max(replicas, 1),
	})
	if err != nil {
		return nil, fmt.Errorf("baselines bucket %s: %w", bucket, err)
	}
	return &Store{kv: kv}, nil
}

// Save writes d (the analyzer's own state, or a manual operation when
// d.Op is set) and returns the new revision.
func (s *Store) Save(ctx context.Context, d *Doc) (uint64, error) {
	raw, err := MarshalJSONDoc(d)
	if err != nil {
		return 0, err
	}
	rev, err := s.kv.Put(ctx, kvdoc.EscapeKey(d.Key), raw)
	if err != nil {
		return 0, fmt.Errorf("saving baseline %s: %w", d.Key, err)
	}
	return rev, nil
}

// Get reads and verifies the baseline of an image key.
func (s *Store) Get(ctx context.Context, key string) (*Doc, error) {
	e, err := s.kv.Get(ctx, kvdoc.EscapeKey(key))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, fmt.Errorf("%w for %q", ErrNoBaseline, key)
	}
	if err != nil {
		return nil, fmt.Errorf("reading baseline %s: %w", key, err)
	}
	return UnmarshalJSONDoc(e.Value())
}

// History returns the stored versions of key, oldest first; corrupt ones
// are skipped and counted in bad.
func (s *Store) History(ctx context.Context, key string) (docs []*Doc, bad int, err error) {
	entries, err := s.kv.History(ctx, kvdoc.EscapeKey(key))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, 0, fmt.Errorf("%w for %q", ErrNoBaseline, key)
	}
	if err != nil {
		return nil, 0, fmt.Errorf("history of baseline %s: %w", key, err)
	}
	for _, e := range entries {
		if e.Operation() != jetstream.KeyValuePut {
			continue
		}
		d, err := UnmarshalJSONDoc(e.Value())
		if err != nil {
			bad++
			continue
		}
		docs = append(docs, d)
	}
	return docs, bad, nil
}

// Summary is one line of `contain baseline list`.
type Summary struct {
	Key       string    `json:"key"`
	Image     string    `json:"image"`
	Phase     string    `json:"phase"`
	Version   uint64    `json:"version"`
	Items     int       `json:"items"`
	First     time.Time `json:"first"`
	Converged time.Time `json:"converged,omitzero"`
	// Err is set for a corrupt entry.
	Err string `json:"error,omitempty"`
}

// List summarizes every stored baseline; a corrupt one is listed with its
// error.
func (s *Store) List(ctx context.Context) ([]Summary, error) {
	lister, err := s.kv.ListKeys(ctx)
	if err != nil {
		return nil, fmt.Errorf("listing baselines: %w", err)
	}
	var out []Summary
	for k := range lister.Keys() {
		e, err := s.kv.Get(ctx, k)
		if err != nil {
			out = append(out, Summary{Key: k, Err: err.Error()})
			continue
		}
		d, err := UnmarshalJSONDoc(e.Value())
		if err != nil {
			out = append(out, Summary{Key: k, Err: err.Error()})
			continue
		}
		b, _ := docBaseline(d)
		out = append(out, Summary{Key: d.Key, Image: d.Image, Phase: d.Phase, Version: d.Version, Items: b.Size(), First: d.First, Converged: d.Converged})
	}
	return out, nil
}

// Delete removes a baseline and its history.
func (s *Store) Delete(ctx context.Context, key string) error {
	if err := s.kv.Purge(ctx, kvdoc.EscapeKey(key)); err != nil {
		return fmt.Errorf("deleting baseline %s: %w", key, err)
	}
	return nil
}

// persist writes the baselines changed since the last write; the number
// that failed (kept dirty, retried at the next write).
func (a *Analyzer) persist(ctx context.Context) (failed int) {
	// One write at a time: a partition handed over must find no write of
	// its baselines still in flight.
	a.persistMu.Lock()
	defer a.persistMu.Unlock()
	a.mu.Lock()
	docs := a.engine.Dirty()
	a.mu.Unlock()
	for _, d := range docs {
		if _, err := a.store.Save(ctx, d); err != nil {
			failed++
			a.m.Errors.WithLabelValues(metrics.StageAnalyzer, "baseline_save").Inc()
			a.log.Warn("saving baseline; will retry", logfields.Key, d.Key, logfields.Err, err)
			a.mu.Lock()
			if b := a.engine.images[d.Key]; b != nil {
				b.dirty = true
			}
			a.mu.Unlock()
		}
	}
	return failed
}

func (a *Analyzer) persistLoop(ctx context.Context) {
	t := time.NewTicker(a.cfg.PersistInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			a.persist(ctx)
		}
	}
}

// watchControl applies manual operations (lock, unlock, reset, import)
// written to the bucket while the analyzer runs.
func (a *Analyzer) watchControl(ctx context.Context) {
	w, err := a.store.kv.WatchAll(ctx, jetstream.UpdatesOnly())
	if err != nil {
		a.log.Warn("watching baselines bucket; manual operations apply at restart", logfields.Err, err)
		return
	}
	defer w.Stop()
	refusedLogged := map[string]bool{}
	for {
		select {
		case <-ctx.Done():
			return
		case e, ok := <-w.Updates():
			if !ok {
				return
			}
			if e == nil || e.Operation() != jetstream.KeyValuePut {
				continue
			}
			d, err := UnmarshalJSONDoc(e.Value())
			if err != nil {
				a.m.Errors.WithLabelValues(metrics.StageAnalyzer, "baseline_corrupt").Inc()
				a.log.Error("ignoring corrupt baseline update", logfields.KVKey, e.Key(), logfields.Err, err)
				continue
			}
			if d.Op == "" {
				continue
			}
			if a.parts != nil && !a.parts.owns(d.Key) {
				continue // the instance holding its partition applies it
			}
			actor, err := verifyOp(a.operators, d, true)
			if err != nil {
				reason := auth.Reason(err)
				a.m.Refused.WithLabelValues(metrics.StageAnalyzer, reason).Inc()
				if !refusedLogged[reason] {
					refusedLogged[reason] = true
					a.log.Error("refusing baseline operation (logged once per reason; see contain_refused_total)",
						logfields.Key, d.Key, logfields.Op, d.Op, logfields.ClaimedActor, d.OpActor, logfields.Reason, reason, logfields.Err, err)
				}
				// The analyzer's own version goes back over the refused one.
				a.mu.Lock()
				if b := a.engine.images[d.Key]; b != nil {
					b.dirty = true
				}
				a.mu.Unlock()
				a.persist(ctx)
				continue
			}
			a.mu.Lock()
			err = a.engine.ApplyOp(d)
			a.mu.Unlock()
			if err != nil {
				a.m.Errors.WithLabelValues(metrics.StageAnalyzer, "baseline_op").Inc()
				a.log.Error("applying baseline operation", logfields.Key, d.Key, logfields.Op, d.Op, logfields.Err, err)
				continue
			}
			a.log.Info("baseline operation applied", logfields.Key, d.Key, logfields.Op, d.Op, logfields.Actor, actor)
			a.persist(ctx)
		}
	}
}

// profileCache mirrors the declared-profiles bucket in memory so that the
// engine never waits on the network.
type profileCache struct {
	js     jetstream.JetStream
	bucket string
	log    *slog.Logger
	mu     sync.Mutex
	m      map[string]*Profile
	// refs are the profiles by exact reference ("<digest>@<version>"),
	// compose-service profiles included; missed are references not found
	// in the bucket, with when they were looked up (see profileref.go).
	refs   map[string]*Profile
	missed map[string]time.Time
	kv     jetstream.KeyValue
}

func newProfileCache(js jetstream.JetStream, bucket string, log *slog.Logger) *profileCache {
	return &profileCache{js: js, bucket: bucket, log: log, m: map[string]*Profile{},
		refs: map[string]*Profile{}, missed: map[string]time.Time{}}
}

func (p *profileCache) get(digest string) *Profile {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.m[digest]
}

// decodeSeedProfile parses a baseline's seed profile (JSON) and checks
// that its ports and peers compile. It is pure and safe on any input.
func decodeSeedProfile(raw []byte) (*Profile, error) {
	var p Profile
	if err := json.Unmarshal(raw, &p); err != nil {
		return nil, fmt.Errorf("decoding profile: %w", err)
	}
	for _, lp := range p.ListenPorts {
		if _, err := kvdoc.ParsePort(lp); err != nil {
			return nil, fmt.Errorf("decoding profile: listen_ports: %w", err)
		}
	}
	for _, peer := range p.Peers {
		if _, ok := parsePeerRule(peer); !ok {
			return nil, fmt.Errorf("decoding profile: peers: %q is not addr[:port] or cidr[:port]", peer)
		}
	}
	return &p, nil
}

// run mirrors the bucket until ctx ends, waiting for it to exist, and
// calls apply for each profile that changes.
func (p *profileCache) run(ctx context.Context, apply func(digest string, pr *Profile), bad func()) {
	for ctx.Err() == nil {
		kv, err := p.js.KeyValue(ctx, p.bucket)
		if err != nil {
			select {
			case <-ctx.Done():
				return
			case <-time.After(2 * time.Second):
			}
			continue
		}
		w, err := kv.WatchAll(ctx)
		if err != nil {
			p.log.Warn("watching profiles", logfields.Bucket, p.bucket, logfields.Err, err)
			select {
			case <-ctx.Done():
				return
			case <-time.After(2 * time.Second):
			}
			continue
		}
		for e := range w.Updates() {
			if e == nil {
				continue
			}
			digest, ok := kvdoc.DigestOfKey(e.Key())
			if !ok {
				p.putVersioned(e, bad) // a versioned or compose-service profile
				continue
			}
			var pr *Profile
			if e.Operation() == jetstream.KeyValuePut {
				var err error
				if pr, err = DecodeDeclared(e.Value()); err != nil {
					bad()
					p.log.Warn("ignoring undecodable profile", logfields.Key, digest, logfields.Err, err)
					continue
				}
			}
			p.mu.Lock()
			p.m[digest] = pr
			p.mu.Unlock()
			apply(digest, pr)
		}
		_ = w.Stop()
	}
}

// DecodeDeclared parses the enricher's declared profile (schemas/profile.md)
// into the seed the engine uses. What the profile cannot vouch for stays
// nil ("declares nothing"): writable paths only bind when the rootfs is
// declared read-only, users only when the uid is numeric, and peers only
// when the profile carries the compose peers' addresses (peer_addresses:
// then a connection to any other address is undeclared).
func DecodeDeclared(raw []byte) (*Profile, error) {
	d, err := kvdoc.DecodeProfile(raw)
	if err != nil {
		return nil, err
	}
	p := &Profile{
		Ref:         d.ImageDigest + "@" + d.Version,
		Entrypoint:  d.MainProcess,
		Executables: d.Executables,
	}
	// A resolved image declares its ports: no EXPOSE means none.
	p.ListenPorts = []string{}
	{
		for _, lp := range d.ListenPorts {
			p.ListenPorts = append(p.ListenPorts, fmt.Sprintf("%d/%s", lp.Port, strings.ToLower(lp.Protocol)))
		}
	}
	if d.ReadOnlyRootfs {
		p.WritablePaths = append([]string{}, d.WritablePaths...)
	}
	if d.UID >= 0 && d.User != "" {
		p.Users = []uint32{uint32(d.UID)}
	}
	if d.PeerAddresses != nil {
		p.Peers = append([]string{}, d.PeerAddresses...)
	}
	return p, nil
}
