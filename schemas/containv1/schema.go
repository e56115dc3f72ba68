package containv1

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"strings"
	"sync/atomic"
	"unicode/utf8"
)

// SchemaVersion is the version of the contain/v1 schema written by this build.
const SchemaVersion = 1

// IDGen makes globally unique 16-byte event ids cheaply: a random 62-bit
// prefix chosen once per generator and a 64-bit counter, laid out as a UUID
// with version 8 (custom) and the RFC 4122 variant. Safe for concurrent use.
type IDGen struct {
	prefix uint64
	n      atomic.Uint64
}

// NewIDGen returns a generator with a fresh random prefix.
func NewIDGen() *IDGen {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic("containv1: no randomness: " + err.Error())
	}
	return &IDGen{prefix: binary.BigEndian.Uint64(b[:])}
}

// Next returns a new id.
func (g *IDGen) Next() []byte {
	id := make([]byte, 16)
	g.Fill(id)
	return id
}

// Fill writes a new id into id, which must be 16 bytes long.
func (g *IDGen) Fill(id []byte) {
	binary.BigEndian.PutUint64(id[0:8], g.prefix)
	binary.BigEndian.PutUint64(id[8:16], g.n.Add(1))
	id[6] = (id[6] & 0x0f) | 0x80 // version 8
	id[8] = (id[8] & 0x3f) | 0x80 // variant 10
}

// FormatID renders a 16-byte id in the canonical UUID text form.
func FormatID(id []byte) string {
	if len(id) != 16 {
		return hex.EncodeToString(id)
	}
	var b [36]byte
	hex.Encode(b[0:8], id[0:4])
	b[8] = '-'
	hex.Encode(b[9:13], id[4:6])
	b[13] = '-'
	hex.Encode(b[14:18], id[6:8])
	b[18] = '-'
	hex.Encode(b[19:23], id[8:10])
	b[23] = '-'
	hex.Encode(b[24:36], id[10:16])
	return string(b[:])
}

// SafeString turns bytes that came from a container into a string that
// protobuf will accept: valid UTF-8 is kept as it is, each invalid byte is
// written as \xNN, and ok is false when that happened. The result is at most
// max bytes of input (truncated reports whether input was cut); max <= 0
// means no bound.
func SafeString(b []byte, max int) (s string, ok, truncated bool) {
	if max > 0 && len(b) > max {
		b, truncated = b[:max], true
	}
	if utf8.Valid(b) {
		return string(b), true, truncated
	}
	var sb strings.Builder
	sb.Grow(len(b) + 16)
	const hexdigits = "0123456789abcdef"
	for len(b) > 0 {
		r, size := utf8.DecodeRune(b)
		if r == utf8.RuneError && size <= 1 {
			sb.WriteString(`\x`)
			sb.WriteByte(hexdigits[b[0]>>4])
			sb.WriteByte(hexdigits[b[0]&0xf])
			b = b[1:]
			continue
		}
		sb.Write(b[:size])
		b = b[size:]
	}
	return sb.String(), false, truncated
}

// SubjectToken makes s usable as one NATS subject token: '.', '*', '>',
// whitespace and control characters become '_'; empty becomes "_". '@'
// becomes '_' too (no host name holds one): FleetToken is no host's.
func SubjectToken(s string) string {
	if s == "" {
		return "_"
	}
	// Most names are plain ASCII that needs no change: no rune walk.
	plain := true
	for i := 0; i < len(s) && plain; i++ {
		c := s[i]
		plain = c > ' ' && c < 0x7f && c != '.' && c != '*' && c != '>' && c != '@'
	}
	if plain {
		return s
	}
	return strings.Map(func(r rune) rune {
		switch {
		case r == '.' || r == '*' || r == '>' || r <= ' ' || r == 0x7f || r == '@':
			return '_'
		}
		return r
	}, s)
}

// NATS subjects and JetStream streams of schema v1. schemas/README.md
// documents them; every stage builds subjects through these functions.
const (
	SubjectPrefix = "contain.v1"

	StreamRaw     = "CONTAIN_RAW"
	StreamEvents  = "CONTAIN_EVENTS"
	StreamAlerts  = "CONTAIN_ALERTS"
	StreamActions = "CONTAIN_ACTIONS"
)

// RawSubject carries the collector's batches for host.
func RawSubject(host string) string { return SubjectPrefix + ".raw." + SubjectToken(host) }

// EventsSubject carries enriched batches for host.
func EventsSubject(host string) string { return SubjectPrefix + ".events." + SubjectToken(host) }

// AlertsSubject carries the analyzer's alerts about containers on host.
func AlertsSubject(host string) string { return SubjectPrefix + ".alerts." + SubjectToken(host) }

// ActionsSubject carries the responder's actions on host.
func ActionsSubject(host string) string { return SubjectPrefix + ".actions." + SubjectToken(host) }

// ControlSubject is the request/reply subject of host's responder, for
// verb ("release", "quarantine.list").
func ControlSubject(host, verb string) string {
	return SubjectPrefix + ".control." + SubjectToken(host) + "." + verb
}

// StreamSubjects maps each stream to the subjects it captures.
func StreamSubjects() map[string]string {
	return map[string]string{
		StreamRaw:     SubjectPrefix + ".raw.>",
		StreamEvents:  SubjectPrefix + ".events.>",
		StreamAlerts:  SubjectPrefix + ".alerts.>",
		StreamActions: SubjectPrefix + ".actions.>",
	}
}
