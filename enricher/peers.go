package enricher

import (
	"context"
	"net/netip"
	"slices"

	"github.com/containsec/contain/internal/logfields"
	"github.com/containsec/contain/internal/metrics"
)

// maxPeerAddresses bounds a profile's peer_addresses.
const maxPeerAddresses = 1024

// svcKey identifies a compose-service profile: one per image a service
// runs.
type svcKey struct{ project, service, digest string }

// svcProfile is a compose-service profile as derived (no peer
// addresses) and the version last stored with its peer addresses.
type svcProfile struct {
	base *Profile
	// rec is the container record the profile was resolved for: its
	// labels select the service's containers (setProfile).
	rec     ContainerImage
	current string
}

// addressStrings turns ContainerInfo.addresses (16 bytes, IPv4-mapped, or
// 4 bytes) into sorted, unique address strings; other lengths are
// skipped and reported.
func addressStrings(raw [][]byte) (out []string, bad int) {
	for _, b := range raw {
		var a netip.Addr
		switch len(b) {
		case 16:
			a = netip.AddrFrom16([16]byte(b)).Unmap()
		case 4:
			a = netip.AddrFrom4([4]byte(b))
		default:
			bad++
			continue
		}
		if a.IsUnspecified() {
			bad++
			continue
		}
		out = append(out, a.String())
	}
	slices.Sort(out)
	return slices.Compact(out), bad
}

// peerAddresses are the addresses of the known containers of peers'
// services in project, sorted; an empty (non-nil) list when none is
// known yet. The caller holds no lock.
func (e *Enricher) peerAddresses(project string, peers []Peer) []string {
	out := []string{}
	e.mu.RLock()
	for _, en := range e.cache {
		if en.rec.ComposeProject != project || len(en.rec.Addresses) == 0 {
			continue
		}
		if !slices.ContainsFunc(peers, func(p Peer) bool { return p.Service == en.rec.ComposeService }) {
			continue
		}
		out = append(out, en.rec.Addresses...)
	}
	e.mu.RUnlock()
	slices.Sort(out)
	out = slices.Compact(out)
	if len(out) > maxPeerAddresses {
		e.m.Dropped.WithLabelValues(metrics.StageEnricher, "peer_addresses_full").Add(float64(len(out) - maxPeerAddresses))
		out = out[:maxPeerAddresses]
	}
	return out
}

// withPeers is base with its peer services' current addresses, sealed
// (a new version whenever the addresses change). A service that declares
// no peers declares nothing about its connections: PeerAddresses stays
// nil.
func (e *Enricher) withPeers(base *Profile) *Profile {
	if len(base.Peers) == 0 {
		return base
	}
	p := *base
	p.PeerAddresses = e.peerAddresses(base.ComposeProject, base.Peers)
	p.Seal()
	return &p
}

// publishServiceProfile registers base (a compose-service profile as
// derived for the container record rec), stores it with its peers' current addresses when that
// version is new, and attaches it to the service's containers.
func (e *Enricher) publishServiceProfile(ctx context.Context, rec ContainerImage, base *Profile) error {
	k := svcKey{base.ComposeProject, base.ComposeService, base.ImageDigest}
	e.peersMu.Lock()
	defer e.peersMu.Unlock()
	sp := e.services[k]
	if sp == nil {
		if len(e.services) >= e.cfg.MaxContainers {
			e.m.Dropped.WithLabelValues(metrics.StageEnricher, "service_profiles_full").Inc()
			clear(e.services)
		}
		sp = &svcProfile{}
		e.services[k] = sp
	}
	sp.base, sp.rec = base, rec
	return e.storeServiceProfile(ctx, sp)
}

// storeServiceProfile stores sp with its peers' current addresses if that
// version was not stored yet. The caller holds peersMu.
func (e *Enricher) storeServiceProfile(ctx context.Context, sp *svcProfile) error {
	p := e.withPeers(sp.base)
	if p.Version == sp.current {
		return nil
	}
	if err := storeProfile(ctx, e.profilesKV, p); err != nil {
		return err
	}
	sp.current = p.Version
	e.setProfile(sp.rec, p.ImageDigest, p.Ref(), true)
	return nil
}

// refreshPeers re-publishes the service profiles of project that declare
// service as a peer, after one of its containers (and addresses) appeared
// or changed. Failures are counted; the next change retries.
func (e *Enricher) refreshPeers(ctx context.Context, project, service string) {
	if project == "" || service == "" {
		return
	}
	e.peersMu.Lock()
	defer e.peersMu.Unlock()
	for k, sp := range e.services {
		if k.project != project || !slices.ContainsFunc(sp.base.Peers, func(p Peer) bool { return p.Service == service }) {
			continue
		}
		if err := e.storeServiceProfile(ctx, sp); err != nil {
			e.m.Errors.WithLabelValues(metrics.StageEnricher, errProfile).Inc()
			e.log.Warn("storing service profile with peer addresses", logfields.Service, k.service, logfields.Err, err)
		}
	}
}
