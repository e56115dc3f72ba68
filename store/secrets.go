package store

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/containsec/contain/internal/runtime"
)

// maxSecretBytes bounds a password file.
const maxSecretBytes = 4096

// password is the ClickHouse password: Password, else the file
// PasswordFile (trailing newline dropped), else the environment variable
// PasswordEnv. Only one may be set (Validate).
func (c Config) password() (string, error) {
	switch {
	case c.PasswordFile != "":
		b, err := runtime.ReadFileBounded(c.PasswordFile, maxSecretBytes)
		if err != nil {
			return "", fmt.Errorf("store.password_file: %w", err)
		}
		return strings.TrimRight(string(b), "\r\n"), nil
	case c.PasswordEnv != "":
		v, ok := os.LookupEnv(c.PasswordEnv)
		if !ok {
			return "", fmt.Errorf("store.password_env: $%s is not set", c.PasswordEnv)
		}
		return v, nil
	}
	return c.Password, nil
}

// validateSecrets checks the password sources and the TLS settings.
func (c Config) validateSecrets() error {
	n := 0
	for _, s := range []string{c.Password, c.PasswordFile, c.PasswordEnv} {
		if s != "" {
			n++
		}
	}
	if n > 1 {
		return errors.New("store.password, store.password_file, store.password_env: set at most one")
	}
	if _, err := c.password(); err != nil {
		return err
	}
	return c.TLS.Validate("store.tls")
}

// tlsClient is the TLS configuration for the native protocol, or nil.
func (c Config) tlsClient() (*tls.Config, error) { return c.TLS.Client("store.tls") }

// isTLSVerify reports a certificate verification failure: a setup error,
// not a server that is down.
func isTLSVerify(err error) bool {
	var ua x509.UnknownAuthorityError
	var hn x509.HostnameError
	var ci x509.CertificateInvalidError
	var ve *tls.CertificateVerificationError
	return errors.As(err, &ua) || errors.As(err, &hn) || errors.As(err, &ci) || errors.As(err, &ve)
}
