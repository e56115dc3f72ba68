package auth

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/user"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nkeys"
)

// SignedVersion is the envelope version.
const SignedVersion = 1

// Signed is an operator's request or operation, signed with the nkey of
// its credentials (ed25519). NATS does not tell a subscriber who
// published a message, so the receiver learns the actor from this: the
// key must be one it knows, the signature must cover every field, the
// time must be recent and the nonce unseen (see docs/design/007).
type Signed struct {
	V int `json:"v"`
	// Purpose binds the signature to one use: "control release node-a",
	// "baseline lock <key>". A signature for one purpose is refused for
	// another.
	Purpose string `json:"purpose"`
	// Name is the credential's user name (e.g. "operator"); the verifier
	// takes the name it knows for Key and refuses a mismatch.
	Name string `json:"name"`
	// Key is the signer's public nkey.
	Key string `json:"key"`
	// OSUser is the local user who ran the command ("root (uid 0)"), as
	// the credential's holder reports it.
	OSUser string `json:"os_user,omitempty"`
	// TS is the signing time in Unix nanoseconds.
	TS int64 `json:"ts"`
	// Nonce is 16 random bytes, hex.
	Nonce string `json:"nonce"`
	// Body is the request itself (JSON).
	Body json.RawMessage `json:"body"`
	// Sig is the signature of SigningBytes, base64 (raw URL encoding).
	Sig string `json:"sig"`
}

// SigningBytes is what Sig covers: every field, each length-prefixed, so
// no two envelopes share signing bytes.
func (s *Signed) SigningBytes() []byte {
	var b []byte
	b = append(b, "contain-signed-v1"...)
	for _, f := range []string{strconv.Itoa(s.V), s.Purpose, s.Name, s.Key, s.OSUser, strconv.FormatInt(s.TS, 10), s.Nonce, string(s.Body)} {
		b = binary.BigEndian.AppendUint32(b, uint32(len(f)))
		b = append(b, f...)
	}
	return b
}

// Actor is the identity a verified envelope records: the credential name
// and the OS user, "operator/root (uid 0)".
func (s *Signed) Actor() string {
	if s.OSUser == "" {
		return s.Name
	}
	return s.Name + "/" + s.OSUser
}

// LocalOSUser describes the user running this process: "alice (uid 1000)".
func LocalOSUser() string {
	if u, err := user.Current(); err == nil {
		return u.Username + " (uid " + u.Uid + ")"
	}
	return "uid " + strconv.Itoa(os.Getuid())
}

// Signer signs envelopes with one credential.
type Signer struct {
	Creds *Credentials
	// OSUser is recorded in every envelope (LocalOSUser by default).
	OSUser string
	Now    func() time.Time
}

// NewSigner signs with creds as the local OS user.
func NewSigner(creds *Credentials) *Signer {
	return &Signer{Creds: creds, OSUser: LocalOSUser(), Now: time.Now}
}

// Actor is the identity envelopes from this signer record.
func (s *Signer) Actor() string {
	return (&Signed{Name: s.Creds.Name, OSUser: s.OSUser}).Actor()
}

// Sign wraps body (JSON) for purpose and returns the envelope's JSON.
func (s *Signer) Sign(purpose string, body []byte) ([]byte, error) {
	env, err := s.Envelope(purpose, body)
	if err != nil {
		return nil, err
	}
	return json.Marshal(env)
}

// Envelope signs body for purpose.
func (s *Signer) Envelope(purpose string, body []byte) (*Signed, error) {
	var nonce [16]byte
	if _, err := rand.Read(nonce[:]); err != nil {
		return nil, fmt.Errorf("signing: %w", err)
	}
	now := time.Now
	if s.Now != nil {
		now = s.Now
	}
	env := &Signed{V: SignedVersion, Purpose: purpose, Name: s.Creds.Name, Key: s.Creds.PublicKey(),
		OSUser: s.OSUser, TS: now().UnixNano(), Nonce: hex.EncodeToString(nonce[:]), Body: json.RawMessage(body)}
	sig, err := s.Creds.KP.Sign(env.SigningBytes())
	if err != nil {
		return nil, fmt.Errorf("signing: %w", err)
	}
	env.Sig = base64.RawURLEncoding.EncodeToString(sig)
	return env, nil
}

// Refusal reasons, the label of the counters of refused envelopes.
const (
	ReasonMalformed    = "malformed"
	ReasonUnsigned     = "unsigned"
	ReasonUnknownKey   = "unknown_key"
	ReasonBadSignature = "bad_signature"
	ReasonPurpose      = "wrong_purpose"
	ReasonStale        = "stale"
	ReasonReplayed     = "replayed"
)

// RefusedError says why an envelope was refused.
type RefusedError struct {
	Reason string
	Detail string
}

func (e *RefusedError) Error() string { return "refused (" + e.Reason + "): " + e.Detail }

// Reason is the refusal reason of err, or "" when err is no refusal.
func Reason(err error) string {
	var re *RefusedError
	if errors.As(err, &re) {
		return re.Reason
	}
	return ""
}

func refuse(reason, format string, args ...any) error {
	return &RefusedError{Reason: reason, Detail: fmt.Sprintf(format, args...)}
}

// maxEnvelope bounds an envelope's size.
const maxEnvelope = 1 << 20

// DefaultWindow is how far a signed request's time may be from the
// verifier's clock.
const DefaultWindow = 2 * time.Minute

// Verifier checks envelopes against the public keys it knows.
type Verifier struct {
	keys   map[string]string // public key -> user name
	window time.Duration
	now    func() time.Time

	mu   sync.Mutex
	seen map[string]time.Time // nonce -> when it may be forgotten
	// maxSeen bounds seen; when full (a flood of valid signed requests
	// within one window) new requests are refused as replayed.
	maxSeen int
}

// NewVerifier trusts keys (public key -> user name) and accepts envelopes
// signed within window of now (DefaultWindow when 0).
func NewVerifier(keys map[string]string, window time.Duration) *Verifier {
	if window <= 0 {
		window = DefaultWindow
	}
	k := make(map[string]string, len(keys))
	for pub, name := range keys {
		k[pub] = name
	}
	return &Verifier{keys: k, window: window, now: time.Now, seen: map[string]time.Time{}, maxSeen: 100000}
}

// SetClock replaces the verifier's clock (tests).
func (v *Verifier) SetClock(now func() time.Time) { v.now = now }

// Keys is how many keys the verifier trusts.
func (v *Verifier) Keys() int { return len(v.keys) }

// Parse decodes an envelope. It is pure and safe on any input.
func Parse(data []byte) (*Signed, error) {
	if len(data) > maxEnvelope {
		return nil, refuse(ReasonMalformed, "%d bytes exceeds %d", len(data), maxEnvelope)
	}
	var env Signed
	if err := json.Unmarshal(data, &env); err != nil {
		return nil, refuse(ReasonMalformed, "%v", err)
	}
	if env.Sig == "" || env.Key == "" {
		return nil, refuse(ReasonUnsigned, "no signature (sign with operator credentials)")
	}
	if env.V != SignedVersion {
		return nil, refuse(ReasonMalformed, "version %d, want %d", env.V, SignedVersion)
	}
	return &env, nil
}

// Verify checks data for purpose and returns the envelope, its Name set
// to the name the verifier knows for its key. A valid envelope's nonce is
// remembered: the same envelope again is refused as replayed.
func (v *Verifier) Verify(data []byte, purpose string) (*Signed, error) {
	env, err := Parse(data)
	if err != nil {
		return nil, err
	}
	if err := v.check(env, purpose); err != nil {
		return nil, err
	}
	if err := v.remember(env); err != nil {
		return nil, err
	}
	return env, nil
}

// VerifyEnvelope checks an already parsed envelope like Verify, without
// the replay check (for stored operations, verified again at each load).
func (v *Verifier) VerifyEnvelope(env *Signed, purpose string) error {
	return v.check(env, purpose)
}

func (v *Verifier) check(env *Signed, purpose string) error {
	name, ok := v.keys[env.Key]
	if !ok {
		return refuse(ReasonUnknownKey, "key %s is not an operator key this host trusts", short(env.Key))
	}
	pk, err := nkeys.FromPublicKey(env.Key)
	if err != nil {
		return refuse(ReasonUnknownKey, "key %s: %v", short(env.Key), err)
	}
	sig, err := base64.RawURLEncoding.DecodeString(env.Sig)
	if err != nil {
		return refuse(ReasonBadSignature, "signature: %v", err)
	}
	if err := pk.Verify(env.SigningBytes(), sig); err != nil {
		return refuse(ReasonBadSignature, "signature does not match (key %s)", short(env.Key))
	}
	if env.Name != name {
		return refuse(ReasonBadSignature, "signed as %q but key %s is %q", env.Name, short(env.Key), name)
	}
	if env.Purpose != purpose {
		return refuse(ReasonPurpose, "signed for %q, not %q", env.Purpose, purpose)
	}
	return nil
}

func (v *Verifier) remember(env *Signed) error {
	now := v.now()
	at := time.Unix(0, env.TS)
	if d := now.Sub(at); d > v.window || d < -v.window {
		return refuse(ReasonStale, "signed at %s, %v from this host's clock (window %v)", at.UTC().Format(time.RFC3339), d.Round(time.Second), v.window)
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if _, ok := v.seen[env.Nonce]; ok {
		return refuse(ReasonReplayed, "nonce %s already used", env.Nonce)
	}
	if len(v.seen) >= v.maxSeen {
		for n, exp := range v.seen {
			if now.After(exp) {
				delete(v.seen, n)
			}
		}
		if len(v.seen) >= v.maxSeen {
			return refuse(ReasonReplayed, "too many signed requests within %v", v.window)
		}
	}
	// A nonce is kept as long as its envelope is fresh: afterwards the
	// time check refuses it.
	v.seen[env.Nonce] = at.Add(v.window)
	return nil
}

func short(key string) string {
	if len(key) > 12 {
		return key[:12] + "…"
	}
	return key
}
