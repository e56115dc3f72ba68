package kvdoc

import (
	"errors"
	"strings"
)

// EscapeKey makes s a NATS KV key token with one rule: bytes in
// [A-Za-z0-9_-] are kept, so is a '/' that is neither first, last nor
// after another '/', and every other byte is written "=XX" (upper-case
// hex). The empty string is "=". UnescapeKey reverses it.
//
// Keys written before this package (the enricher's container keys and the
// analyzer's baseline keys) are unchanged by it: container ids and host
// names hold no '/', and no baseline key is empty.
func EscapeKey(s string) string {
	const hexdigits = "0123456789ABCDEF"
	if s == "" {
		return "="
	}
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); i++ {
		c := s[i]
		if keptByte(c) || c == '/' && i > 0 && i < len(s)-1 && s[i-1] != '/' {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('=')
		b.WriteByte(hexdigits[c>>4])
		b.WriteByte(hexdigits[c&0xf])
	}
	return b.String()
}

func keptByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-'
}

// ErrBadKey is returned by UnescapeKey for a key EscapeKey cannot have
// written.
var ErrBadKey = errors.New("kv key: not escaped")

// UnescapeKey is the inverse of EscapeKey; a key EscapeKey cannot have
// written (a bad escape, a byte it escapes left bare) is ErrBadKey.
func UnescapeKey(k string) (string, error) {
	if k == "=" {
		return "", nil
	}
	var b strings.Builder
	b.Grow(len(k))
	for i := 0; i < len(k); i++ {
		c := k[i]
		switch {
		case c == '=':
			if i+2 >= len(k) {
				return "", ErrBadKey
			}
			hi, ok1 := unhex(k[i+1])
			lo, ok2 := unhex(k[i+2])
			if !ok1 || !ok2 {
				return "", ErrBadKey
			}
			b.WriteByte(hi<<4 | lo)
			i += 2
		case keptByte(c), c == '/':
			b.WriteByte(c)
		default:
			return "", ErrBadKey
		}
	}
	s := b.String()
	if EscapeKey(s) != k {
		return "", ErrBadKey // e.g. "=41" for "A", or a bare leading '/'
	}
	return s, nil
}

func unhex(c byte) (byte, bool) {
	switch {
	case c >= '0' && c <= '9':
		return c - '0', true
	case c >= 'A' && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

// ContainerKey is the contain_containers key of (host, container id):
// each part escaped, joined by a dot.
func ContainerKey(host, id string) string { return EscapeKey(host) + "." + EscapeKey(id) }

// DigestKey is the KV key of an image digest: "sha256:ab.." becomes
// "sha256_ab..". digest must be valid (ValidDigest).
func DigestKey(digest string) string { return strings.Replace(digest, ":", "_", 1) }

// DigestOfKey is the inverse of DigestKey for an image profile's or
// declaration's key; a versioned key ("<key>.<version>") or one that is
// not a digest's reports false.
func DigestOfKey(key string) (string, bool) {
	if strings.Contains(key, ".") {
		return "", false
	}
	alg, hex, ok := strings.Cut(key, "_")
	if !ok || alg == "" || hex == "" {
		return "", false
	}
	return alg + ":" + hex, true
}

// ProfileKey is the key of one profile version: "<DigestKey>.<version>".
func ProfileKey(digest, version string) string { return DigestKey(digest) + "." + EscapeKey(version) }

// ValidDigest reports whether d looks like an OCI digest: sha256:<64 hex>
// or sha512:<128 hex> (other registered algorithms: alg:hex, hex >= 32).
func ValidDigest(d string) bool {
	alg, hex, ok := strings.Cut(d, ":")
	if !ok || alg == "" || len(alg) > 32 {
		return false
	}
	switch alg {
	case "sha256":
		if len(hex) != 64 {
			return false
		}
	case "sha512":
		if len(hex) != 128 {
			return false
		}
	default:
		if len(hex) < 32 || len(hex) > 256 {
			return false
		}
	}
	for i := 0; i < len(alg); i++ {
		c := alg[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '+' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	for i := 0; i < len(hex); i++ {
		c := hex[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}
