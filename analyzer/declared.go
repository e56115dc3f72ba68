package analyzer

import (
	"net/netip"
	"path"
	"strconv"
	"strings"

	"github.com/containsec/contain/schemas/containv1"
	"github.com/containsec/contain/schemas/kvdoc"
)

// Profile is what an image declares about itself (from its Dockerfile,
// compose service or Kubernetes workload), as a baseline keeps it
// (kvdoc.SeedProfile; DecodeDeclared derives it from the enricher's
// declared profile). A nil list declares nothing; an empty, non-nil list
// declares "none". Declared behaviour is allowed from the first second,
// and behaviour that contradicts a declaration is scored even while
// learning.
type Profile = kvdoc.SeedProfile

// ProfileFunc returns the declared profile of an image digest, or nil.
// The engine calls it once per new baseline, synchronously.
type ProfileFunc func(imageDigest string) *Profile

// RefProfileFunc returns the profile an event's profile_ref names
// ("<image digest>@<profile version>"), or nil when it is not known (yet).
// The engine calls it synchronously when a container's events name a
// profile it has not applied, again on later events while it returns nil.
type RefProfileFunc func(ref string) *Profile

type peerRule struct {
	prefix netip.Prefix
	port   uint32
}

type seed struct {
	p        *Profile
	ports    map[uint32]bool // proto<<16 | port; proto 0 = any
	peers    []peerRule
	writable []string
	users    map[uint32]bool
}

func compileProfile(p *Profile) *seed {
	if p == nil {
		return nil
	}
	s := &seed{p: p}
	if p.ListenPorts != nil {
		s.ports = map[uint32]bool{}
		for _, lp := range p.ListenPorts {
			num, proto, _ := strings.Cut(lp, "/")
			n, err := strconv.ParseUint(num, 10, 16)
			if err != nil {
				continue
			}
			var pr uint32
			switch strings.ToLower(proto) {
			case "tcp":
				pr = uint32(containv1.Network_PROTOCOL_TCP)
			case "udp":
				pr = uint32(containv1.Network_PROTOCOL_UDP)
			}
			s.ports[pr<<16|uint32(n)] = true
		}
	}
	if p.Peers != nil {
		s.peers = []peerRule{}
		for _, peer := range p.Peers {
			if r, ok := parsePeerRule(peer); ok {
				s.peers = append(s.peers, r)
			}
		}
	}
	if p.WritablePaths != nil {
		s.writable = []string{}
		for _, w := range p.WritablePaths {
			if w = path.Clean(w); strings.HasPrefix(w, "/") {
				s.writable = append(s.writable, w)
			}
		}
	}
	if p.Users != nil {
		s.users = map[uint32]bool{}
		for _, u := range p.Users {
			s.users[u] = true
		}
	}
	return s
}

func parsePeerRule(s string) (peerRule, bool) {
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return peerRule{netip.PrefixFrom(ap.Addr().Unmap(), ap.Addr().Unmap().BitLen()), uint32(ap.Port())}, true
	}
	if a, err := netip.ParseAddr(s); err == nil {
		return peerRule{netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()), 0}, true
	}
	pfx, port := s, uint64(0)
	if i := strings.LastIndexByte(s, ':'); i > 0 && strings.Contains(s[:i], "/") {
		var err error
		if port, err = strconv.ParseUint(s[i+1:], 10, 16); err != nil {
			return peerRule{}, false
		}
		pfx = s[:i]
	}
	p, err := netip.ParsePrefix(pfx)
	if err != nil {
		return peerRule{}, false
	}
	return peerRule{p.Masked(), uint32(port)}, true
}

func (s *seed) allowsPeer(a netip.Addr, port uint32) bool {
	for _, r := range s.peers {
		if r.prefix.Contains(a) && (r.port == 0 || r.port == port) {
			return true
		}
	}
	return false
}

func (s *seed) allowsWrite(p string) bool {
	for _, w := range s.writable {
		if w == "/" || p == w || strings.HasPrefix(p, w+"/") {
			return true
		}
	}
	return false
}

func (s *seed) allowsPort(proto, port uint32) bool {
	return s.ports[proto<<16|port] || s.ports[port]
}

// SetRefProfiles makes the engine prefer, for each container, the profile
// its events' profile_ref names over its image's (f may be nil: image
// profiles only).
func (e *Engine) SetRefProfiles(f RefProfileFunc) { e.refProfiles = f }

// applyRef compiles the profile ref names into c's seed when it is new and
// known.
func (e *Engine) applyRef(c *container, ref string) {
	if ref == "" || ref == c.seedRef || e.refProfiles == nil {
		return
	}
	if p := e.refProfiles(ref); p != nil {
		c.seed, c.seedRef = compileProfile(p), strings.Clone(ref) // ref may point into a payload
	}
}

// seedOf is the declared profile c is judged against: the one its events
// name, else its baseline's.
func seedOf(c *container, b *Baseline) *seed {
	if c.seed != nil {
		return c.seed
	}
	return b.seed
}

func (e *Engine) seedBaseline(b *Baseline, digest string) {
	if e.profiles == nil || digest == "" {
		return
	}
	p := e.profiles(digest)
	if p == nil {
		return
	}
	b.seed = compileProfile(p)
	for _, x := range append(append([]string(nil), p.Entrypoint...), p.Executables...) {
		if strings.HasPrefix(x, "/") {
			b.Exec[x] += 0
		}
	}
}
