package bus

import (
	"github.com/nats-io/nats.go"

	"github.com/containsec/contain/internal/tlsconfig"
)

// TLSOption is the nats.Option that dials an external NATS server over TLS
// as c says (CA, client certificate, server name), or nil when c leaves
// TLS off. key names the config section in errors (e.g. "nats.tls").
func TLSOption(c tlsconfig.Config, key string) (nats.Option, error) {
	tc, err := c.Client(key)
	if err != nil || tc == nil {
		return nil, err
	}
	return nats.Secure(tc), nil
}
