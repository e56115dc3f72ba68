package console

import (
	"errors"
	"fmt"
	"net/netip"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// Roles of console users.
const (
	RoleOperator = "operator" // reads, releases, locks baselines
	RoleAnalyst  = "analyst"  // reads only
)

// Authentication modes.
const (
	AuthPassword = "password" // users and bcrypt hashes from the config
	AuthHeader   = "header"   // an identity-aware proxy names the user
)

// Config is the console's configuration (key prefix console.).
type Config struct {
	// Listen is the address served ("127.0.0.1:9443"); empty disables the
	// console inside `contain run`.
	Listen string `config:"listen"`
	// TLSCert and TLSKey serve HTTPS (and mark cookies Secure).
	TLSCert string `config:"tls_cert"`
	TLSKey  string `config:"tls_key"`
	// Auth is "password" (Users) or "header" (Header, behind a proxy).
	Auth   string       `config:"auth"`
	Users  []User       `config:"users"`
	Header HeaderConfig `config:"header"`
	// SessionTTL bounds a login.
	SessionTTL time.Duration `config:"session_ttl"`
	// ReleaseApprovals is 1 (one operator releases) or 2 (a second,
	// different operator must approve a release).
	ReleaseApprovals int `config:"release_approvals"`
	// Hosts whose responders are asked what they hold frozen, besides the
	// hosts seen in actions.
	Hosts []string `config:"hosts"`
	// MaxAlerts and MaxActions are kept in memory for the views.
	MaxAlerts  int `config:"max_alerts"`
	MaxActions int `config:"max_actions"`
}

// User is a console login (Auth "password").
type User struct {
	Name string `config:"name"`
	Role string `config:"role"`
	// PasswordHash is a bcrypt hash (`contain console hash-password`).
	PasswordHash string `config:"password_hash"`
}

// HeaderConfig trusts an identity-aware proxy's headers.
type HeaderConfig struct {
	// User names the header carrying the user name (X-Forwarded-User).
	User string `config:"user"`
	// Role names the header carrying the role; absent or unknown roles
	// are analysts.
	Role string `config:"role"`
	// TrustedProxies are the addresses or prefixes the headers are
	// accepted from; from any other peer they are ignored.
	TrustedProxies []string `config:"trusted_proxies"`
}

// DefaultConfig is the console's default configuration.
func DefaultConfig() Config {
	return Config{
		Auth:             AuthPassword,
		SessionTTL:       8 * time.Hour,
		ReleaseApprovals: 1,
		MaxAlerts:        10000,
		MaxActions:       2000,
		Header:           HeaderConfig{User: "X-Forwarded-User", Role: "X-Forwarded-Role"},
	}
}

// Validate names the first wrong key.
func (c Config) Validate() error {
	switch c.Auth {
	case AuthPassword:
		if len(c.Users) == 0 {
			return errors.New("console.users: password login needs at least one user")
		}
		seen := map[string]bool{}
		for i, u := range c.Users {
			switch {
			case u.Name == "":
				return fmt.Errorf("console.users[%d].name: empty", i)
			case seen[u.Name]:
				return fmt.Errorf("console.users[%d].name: %q listed twice", i, u.Name)
			case u.Role != RoleOperator && u.Role != RoleAnalyst:
				return fmt.Errorf("console.users[%d].role: %q is not operator or analyst", i, u.Role)
			}
			if _, err := bcrypt.Cost([]byte(u.PasswordHash)); err != nil {
				return fmt.Errorf("console.users[%d].password_hash: not a bcrypt hash (make one with `contain console hash-password`)", i)
			}
			seen[u.Name] = true
		}
	case AuthHeader:
		if c.Header.User == "" {
			return errors.New("console.header.user: header login needs the user header's name")
		}
		if len(c.Header.TrustedProxies) == 0 {
			return errors.New("console.header.trusted_proxies: header login needs the proxy's addresses")
		}
		if _, err := c.proxies(); err != nil {
			return err
		}
	default:
		return fmt.Errorf("console.auth: %q is not password or header", c.Auth)
	}
	if (c.TLSCert == "") != (c.TLSKey == "") {
		return errors.New("console.tls_cert, console.tls_key: set both or neither")
	}
	if c.SessionTTL <= 0 {
		return fmt.Errorf("console.session_ttl: %s must be > 0", c.SessionTTL)
	}
	if c.ReleaseApprovals != 1 && c.ReleaseApprovals != 2 {
		return fmt.Errorf("console.release_approvals: %d must be 1 or 2", c.ReleaseApprovals)
	}
	if c.MaxAlerts <= 0 || c.MaxActions <= 0 {
		return errors.New("console.max_alerts, console.max_actions: must be > 0")
	}
	return nil
}

func (c Config) proxies() ([]netip.Prefix, error) {
	var out []netip.Prefix
	for i, s := range c.Header.TrustedProxies {
		if p, err := netip.ParsePrefix(s); err == nil {
			out = append(out, p.Masked())
			continue
		}
		a, err := netip.ParseAddr(s)
		if err != nil {
			return nil, fmt.Errorf("console.header.trusted_proxies[%d]: %q is not an address or prefix", i, s)
		}
		out = append(out, netip.PrefixFrom(a, a.BitLen()))
	}
	return out, nil
}

// HashPassword returns a bcrypt hash for console.users[].password_hash.
func HashPassword(pw string) (string, error) {
	if len(pw) < 8 {
		return "", errors.New("a console password needs at least 8 characters")
	}
	h, err := bcrypt.GenerateFromPassword([]byte(pw), bcrypt.DefaultCost)
	return string(h), err
}
