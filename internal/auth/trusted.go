package auth

import (
	"fmt"
	"strings"

	"github.com/nats-io/nkeys"
)

// ParseTrusted reads a list of trusted operator keys, each "name:UKEY"
// (or a bare public user key, named "operator"), into public key -> name.
// key names the config key in errors.
func ParseTrusted(key string, list []string) (map[string]string, error) {
	out := make(map[string]string, len(list))
	for _, e := range list {
		name, pub, ok := strings.Cut(strings.TrimSpace(e), ":")
		if !ok {
			name, pub = RoleOperator, name
		}
		if name == "" || !nkeys.IsValidPublicUserKey(pub) {
			return nil, fmt.Errorf("%s: %q is not name:<public user nkey U...>", key, e)
		}
		out[pub] = name
	}
	return out, nil
}

// FormatTrusted is the inverse of ParseTrusted for one key.
func FormatTrusted(name, pub string) string { return name + ":" + pub }
