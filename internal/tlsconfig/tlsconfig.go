// Package tlsconfig builds the client TLS configuration contain uses to
// reach an external NATS server and ClickHouse from a small, validated
// config: a CA file, an optional client certificate and key, a server
// name. Verification is never skipped unless InsecureSkipVerify is set
// explicitly. Nothing here logs.
package tlsconfig

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
)

// Config is a client's TLS settings; the zero value disables TLS.
type Config struct {
	// Enabled turns TLS on; setting any file or the server name turns it
	// on too.
	Enabled bool `config:"enabled"`
	// CAFile holds the PEM certificates the server's chain must lead to;
	// empty: the system's roots.
	CAFile string `config:"ca_file"`
	// CertFile and KeyFile are the client's PEM certificate and key (mutual
	// TLS); both or neither.
	CertFile string `config:"cert_file"`
	KeyFile  string `config:"key_file"`
	// ServerName is the name checked in the server's certificate; empty:
	// the host of the address dialled.
	ServerName string `config:"server_name"`
	// InsecureSkipVerify accepts any server certificate. Never implied:
	// only this explicit setting turns verification off.
	InsecureSkipVerify bool `config:"insecure_skip_verify"`
}

// On reports whether TLS is to be used.
func (c Config) On() bool {
	return c.Enabled || c.CAFile != "" || c.CertFile != "" || c.KeyFile != "" || c.ServerName != "" || c.InsecureSkipVerify
}

// Validate reports the first invalid field under key (e.g. "nats.tls"):
// files must be readable, a certificate needs its key, and verification
// cannot be both skipped and pinned to a CA.
func (c Config) Validate(key string) error {
	if !c.On() {
		return nil
	}
	if (c.CertFile == "") != (c.KeyFile == "") {
		return fmt.Errorf("%s.cert_file, %s.key_file: set both or neither", key, key)
	}
	if c.InsecureSkipVerify && c.CAFile != "" {
		return fmt.Errorf("%s.insecure_skip_verify: contradicts %s.ca_file (drop one)", key, key)
	}
	for _, f := range []struct{ k, p string }{{"ca_file", c.CAFile}, {"cert_file", c.CertFile}, {"key_file", c.KeyFile}} {
		if f.p == "" {
			continue
		}
		if _, err := os.Stat(f.p); err != nil {
			return fmt.Errorf("%s.%s: %w", key, f.k, err)
		}
	}
	return nil
}

// Client builds the tls.Config, or nil when TLS is off. key names the
// config section in errors.
func (c Config) Client(key string) (*tls.Config, error) {
	if !c.On() {
		return nil, nil
	}
	if err := c.Validate(key); err != nil {
		return nil, err
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: c.ServerName, InsecureSkipVerify: c.InsecureSkipVerify} //nolint:gosec // explicit only
	if c.CAFile != "" {
		pem, err := os.ReadFile(c.CAFile)
		if err != nil {
			return nil, fmt.Errorf("%s.ca_file: %w", key, err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%s.ca_file: %s holds no PEM certificate", key, c.CAFile)
		}
		tc.RootCAs = pool
	}
	if c.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("%s.cert_file, %s.key_file: %w", key, key, err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return tc, nil
}

// ErrUnknownAuthority is what a handshake failing on the CA wraps; Explain
// uses it.
var ErrUnknownAuthority = errors.New("the server's certificate is not signed by the configured CA (check ca_file)")

// Explain rewrites a TLS verification failure into a clear error naming
// the config key; other errors are returned as they are.
func Explain(key string, err error) error {
	if err == nil {
		return nil
	}
	var ua x509.UnknownAuthorityError
	var hn x509.HostnameError
	var ci x509.CertificateInvalidError
	switch {
	case errors.As(err, &ua):
		return fmt.Errorf("%s: %w: %v", key, ErrUnknownAuthority, err)
	case errors.As(err, &hn):
		return fmt.Errorf("%s.server_name: the server's certificate does not name it: %w", key, err)
	case errors.As(err, &ci):
		return fmt.Errorf("%s: the server's certificate is invalid: %w", key, err)
	}
	return err
}
