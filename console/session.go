package console

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"sync"
	"time"

	"golang.org/x/crypto/bcrypt"
)

const (
	sessionCookie = "contain_session"
	csrfField     = "csrf"
)

// Identity is who a request acts as.
type Identity struct {
	User string
	Role string
	// CSRF is the session's token every state change must carry.
	CSRF string
}

// CanAct: operators change state, analysts only read.
func (id Identity) CanAct() bool { return id.Role == RoleOperator }

type session struct {
	Identity
	expires time.Time
}

// sessions holds logins in memory: a restart logs everyone out.
type sessions struct {
	mu   sync.Mutex
	byID map[string]*session
	ttl  time.Duration
	now  func() time.Time
}

func newSessions(ttl time.Duration) *sessions {
	return &sessions{byID: map[string]*session{}, ttl: ttl, now: time.Now}
}

func randomToken() string {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic("console: no randomness: " + err.Error())
	}
	return base64.RawURLEncoding.EncodeToString(b[:])
}

func (s *sessions) create(user, role string) (id string, sess *session) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	for k, v := range s.byID { // expired logins go on each login
		if now.After(v.expires) {
			delete(s.byID, k)
		}
	}
	id = randomToken()
	sess = &session{Identity: Identity{User: user, Role: role, CSRF: randomToken()}, expires: now.Add(s.ttl)}
	s.byID[id] = sess
	return id, sess
}

func (s *sessions) get(id string) (Identity, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := s.byID[id]
	if !ok || s.now().After(v.expires) {
		delete(s.byID, id)
		return Identity{}, false
	}
	return v.Identity, true
}

func (s *sessions) drop(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.byID, id)
}

// authenticator decides who a request is.
type authenticator struct {
	cfg      Config
	proxies  []netip.Prefix
	sessions *sessions
	// failures counts failed logins per user, to slow guessing.
	mu       sync.Mutex
	failures map[string]*loginFailures
}

// loginFailures are a user's failed logins since the last success.
type loginFailures struct {
	n    int
	last time.Time
}

// Lockout: after lockoutAfter failed logins a user's name is refused for
// lockoutFor after the last failure, so guessing is slowed without a
// stranger being able to lock an operator out for good.
const (
	lockoutAfter = 10
	lockoutFor   = 5 * time.Minute
)

// checkPassword returns the user's role when name and pw match a
// configured user. Unknown users cost a bcrypt comparison too.
func (a *authenticator) checkPassword(name, pw string) (string, bool) {
	hash, role := dummyHash, ""
	for _, u := range a.cfg.Users {
		if u.Name == name {
			hash, role = u.PasswordHash, u.Role
		}
	}
	ok := bcrypt.CompareHashAndPassword([]byte(hash), []byte(pw)) == nil && role != ""
	a.mu.Lock()
	defer a.mu.Unlock()
	if ok {
		delete(a.failures, name)
	} else {
		f := a.failures[name]
		if f == nil {
			f = &loginFailures{}
			a.failures[name] = f
		}
		f.n++
		f.last = a.sessions.now()
	}
	return role, ok
}

// lockedOut reports whether name is refused for now (see lockoutAfter).
func (a *authenticator) lockedOut(name string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	f := a.failures[name]
	return f != nil && f.n >= lockoutAfter && a.sessions.now().Sub(f.last) < lockoutFor
}

// dummyHash keeps the time of a login for an unknown user like a known one.
var dummyHash = func() string {
	h, _ := bcrypt.GenerateFromPassword([]byte("contain-console-no-such-user"), bcrypt.MinCost)
	return string(h)
}()

// identify returns the request's identity: the proxy's headers (header
// auth, from a trusted peer only) or the session cookie.
func (a *authenticator) identify(r *http.Request) (Identity, bool) {
	if a.cfg.Auth == AuthHeader {
		if !a.fromProxy(r) {
			return Identity{}, false
		}
		user := r.Header.Get(a.cfg.Header.User)
		if user == "" {
			return Identity{}, false
		}
		role := RoleAnalyst
		if a.cfg.Header.Role != "" && r.Header.Get(a.cfg.Header.Role) == RoleOperator {
			role = RoleOperator
		}
		// The CSRF token of a proxied identity is its session's: the
		// session cookie is still issued (on first visit) and required.
		if c, err := r.Cookie(sessionCookie); err == nil {
			if id, ok := a.sessions.get(c.Value); ok && id.User == user && id.Role == role {
				return id, true
			}
		}
		return Identity{User: user, Role: role}, true
	}
	c, err := r.Cookie(sessionCookie)
	if err != nil {
		return Identity{}, false
	}
	return a.sessions.get(c.Value)
}

func (a *authenticator) fromProxy(r *http.Request) bool {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return false
	}
	addr, err := netip.ParseAddr(host)
	if err != nil {
		return false
	}
	addr = addr.Unmap()
	for _, p := range a.proxies {
		if p.Contains(addr) {
			return true
		}
	}
	return false
}

// validCSRF: the form's token is the session's, and the request comes from
// this origin (Origin, else Referer, must name this host).
func validCSRF(r *http.Request, id Identity) bool {
	if id.CSRF == "" {
		return false
	}
	got := r.PostFormValue(csrfField)
	if subtle.ConstantTimeCompare([]byte(got), []byte(id.CSRF)) != 1 {
		return false
	}
	return sameOrigin(r)
}

func sameOrigin(r *http.Request) bool {
	origin := r.Header.Get("Origin")
	if origin == "" || origin == "null" {
		origin = r.Header.Get("Referer")
	}
	u, err := url.Parse(origin)
	if err != nil || origin == "" {
		return false
	}
	return (u.Scheme == "http" || u.Scheme == "https") && u.Host == r.Host
}
