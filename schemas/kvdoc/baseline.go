package kvdoc

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// BaselineFormat identifies the persisted baseline format.
const BaselineFormat = "contain.baseline/v1"

// Phases of a baseline (Baseline.Phase).
const (
	PhaseLearning  = "learning"
	PhaseConverged = "converged"
	PhaseLocked    = "locked"
)

// Separators inside a baseline's items.
const (
	// ArgvSep separates an argv shape's executable from its shape and a
	// behaviour's code, actor and key.
	ArgvSep = " | "
	// EdgeSep separates an edge's parent from its child.
	EdgeSep = " -> "
)

// MaxNGram is the longest syscall n-gram a baseline holds; MaxSyscallNr
// bounds each syscall number of one.
const (
	MaxNGram     = 6
	MaxSyscallNr = 0x1fffff
)

// ErrCorrupt wraps every failure to read a persisted baseline.
var ErrCorrupt = errors.New("corrupt baseline")

// Baseline is the persisted, reviewable form of the analyzer's learned
// baseline of one image (JSON in NATS KV, YAML for people). Sets are maps
// from item to how often it was seen.
type Baseline struct {
	Format       string    `json:"format" yaml:"format"`
	Key          string    `json:"key" yaml:"key"`
	Image        string    `json:"image" yaml:"image"`
	Phase        string    `json:"phase" yaml:"phase"`
	Version      uint64    `json:"version" yaml:"version"`
	First        time.Time `json:"first" yaml:"first"`
	Last         time.Time `json:"last" yaml:"last"`
	Converged    time.Time `json:"converged,omitzero" yaml:"converged,omitempty"`
	Observations uint64    `json:"observations" yaml:"observations"`
	Novelty      float64   `json:"novelty" yaml:"novelty"`

	Executables    map[string]uint32 `json:"executables,omitempty" yaml:"executables,omitempty"`
	ArgvShapes     map[string]uint32 `json:"argv_shapes,omitempty" yaml:"argv_shapes,omitempty"` // "path | shape"
	Edges          map[string]uint32 `json:"edges,omitempty" yaml:"edges,omitempty"`             // "parent -> child"
	Syscalls       map[string]uint32 `json:"syscalls,omitempty" yaml:"syscalls,omitempty"`
	SyscallNGrams  map[string]uint32 `json:"syscall_ngrams,omitempty" yaml:"syscall_ngrams,omitempty"` // "nr nr ...": 1 to MaxNGram syscalls
	Peers          map[string]uint32 `json:"peers,omitempty" yaml:"peers,omitempty"`
	ListenPorts    map[string]uint32 `json:"listen_ports,omitempty" yaml:"listen_ports,omitempty"` // "8080/tcp"
	WritePrefixes  map[string]uint32 `json:"write_prefixes,omitempty" yaml:"write_prefixes,omitempty"`
	SensitiveReads map[string]uint32 `json:"sensitive_reads,omitempty" yaml:"sensitive_reads,omitempty"`
	UIDs           map[string]uint32 `json:"uids,omitempty" yaml:"uids,omitempty"`
	// Behaviours learned: "code | actor | key" (see docs/detection.md).
	Behaviours map[string]uint32 `json:"behaviours,omitempty" yaml:"behaviours,omitempty"`
	Profile    *SeedProfile      `json:"profile,omitempty" yaml:"profile,omitempty"`

	// Op is set by a manual operation (lock, unlock, reset, import) that a
	// running analyzer applies when it sees the update; the analyzer's own
	// writes leave it empty.
	Op string `json:"op,omitempty" yaml:"op,omitempty"`
	// OpActor is who made the operation: the signing operator credential
	// and OS user ("operator/alice (uid 1000)"), verified against OpSig.
	OpActor string `json:"op_actor,omitempty" yaml:"op_actor,omitempty"`
	// OpSig is the operator's signed envelope (auth.Signed) over the key,
	// the op, the actor and the document's content.
	OpSig json.RawMessage `json:"op_sig,omitempty" yaml:"-"`
	// Checksum is the SHA-256 of the JSON encoding with Checksum empty.
	Checksum string `json:"checksum,omitempty" yaml:"checksum,omitempty"`
}

// SeedProfile is what an image declares about itself as a baseline keeps
// it (derived from the declared Profile by the analyzer). A nil list
// declares nothing; an empty, non-nil list declares "none".
type SeedProfile struct {
	// Ref is "<image digest>@<profile version>".
	Ref         string   `json:"ref,omitempty" yaml:"ref,omitempty"`
	Entrypoint  []string `json:"entrypoint,omitempty" yaml:"entrypoint,omitempty"`
	Executables []string `json:"executables,omitempty" yaml:"executables,omitempty"`
	// ListenPorts are "8080" or "8080/tcp" or "53/udp".
	ListenPorts []string `json:"listen_ports" yaml:"listen_ports"`
	// Peers are "addr", "addr:port", "cidr" or "cidr:port"; port 0 or no
	// port means any port.
	Peers []string `json:"peers" yaml:"peers"`
	// WritablePaths are directories (volumes, tmpfs) the image may write.
	WritablePaths []string `json:"writable_paths" yaml:"writable_paths"`
	// Users are the uids the image runs as.
	Users []uint32 `json:"users" yaml:"users"`
}

// MarshalYAML writes only the lists the profile declares: a nil list
// (declares nothing) is omitted, an empty one (declares none) is kept, so
// that a YAML round trip does not turn "undeclared" into "none allowed".
func (p *SeedProfile) MarshalYAML() (any, error) {
	m := map[string]any{}
	if p.Ref != "" {
		m["ref"] = p.Ref
	}
	put := func(k string, v any, isNil bool) {
		if !isNil {
			m[k] = v
		}
	}
	put("entrypoint", p.Entrypoint, p.Entrypoint == nil)
	put("executables", p.Executables, p.Executables == nil)
	put("listen_ports", p.ListenPorts, p.ListenPorts == nil)
	put("peers", p.Peers, p.Peers == nil)
	put("writable_paths", p.WritablePaths, p.WritablePaths == nil)
	put("users", p.Users, p.Users == nil)
	return m, nil
}

// Validate checks the document's format, phase, novelty and every item;
// every failure wraps ErrCorrupt. What only the analyzer knows (its reason
// codes, the n-gram length it uses) the analyzer checks on load.
func (d *Baseline) Validate() error {
	if d.Format != BaselineFormat {
		return fmt.Errorf("%w: format %q, want %q", ErrCorrupt, d.Format, BaselineFormat)
	}
	if d.Key == "" {
		return fmt.Errorf("%w: no key", ErrCorrupt)
	}
	switch d.Phase {
	case PhaseLearning, PhaseConverged, PhaseLocked:
	default:
		return fmt.Errorf("%w: %s: unknown phase %q", ErrCorrupt, d.Key, d.Phase)
	}
	if math.IsNaN(d.Novelty) || d.Novelty < 0 || d.Novelty > 1 {
		return fmt.Errorf("%w: %s: novelty %v not in [0,1]", ErrCorrupt, d.Key, d.Novelty)
	}
	for _, set := range []struct {
		name  string
		items map[string]uint32
		parse func(string) error
	}{
		{"executables", d.Executables, nil},
		{"argv_shapes", d.ArgvShapes, pairParser(ArgvSep)},
		{"edges", d.Edges, pairParser(EdgeSep)},
		{"syscalls", d.Syscalls, nil},
		{"peers", d.Peers, nil},
		{"write_prefixes", d.WritePrefixes, nil},
		{"sensitive_reads", d.SensitiveReads, nil},
		{"behaviours", d.Behaviours, func(s string) error { _, _, _, err := ParseBehaviour(s); return err }},
		{"syscall_ngrams", d.SyscallNGrams, func(s string) error { _, err := ParseNGram(s); return err }},
		{"listen_ports", d.ListenPorts, func(s string) error { _, err := ParsePort(s); return err }},
		{"uids", d.UIDs, func(s string) error { _, err := ParseUID(s); return err }},
	} {
		for k := range set.items {
			err := ParseItem(k)
			if err == nil && set.parse != nil {
				err = set.parse(k)
			}
			if err != nil {
				return fmt.Errorf("%w: %s: %s: %v", ErrCorrupt, d.Key, set.name, err)
			}
		}
	}
	return nil
}

func pairParser(sep string) func(string) error {
	return func(s string) error { _, _, err := ParsePair(s, sep); return err }
}

// ParseItem checks a plain item (an executable, a syscall name, a peer, a
// path prefix): any non-empty string.
func ParseItem(s string) error {
	if s == "" {
		return errors.New("empty item")
	}
	return nil
}

// ParsePair splits an argv shape ("path | shape", sep ArgvSep) or an edge
// ("parent -> child", sep EdgeSep); the first part must not be empty.
func ParsePair(s, sep string) (a, b string, err error) {
	a, b, ok := strings.Cut(s, sep)
	if !ok || a == "" {
		return "", "", fmt.Errorf("item %q lacks %q", s, sep)
	}
	return a, b, nil
}

// ParseBehaviour splits a behaviour item "code | actor | key"; the code
// must not be empty.
func ParseBehaviour(s string) (code, actor, key string, err error) {
	parts := strings.SplitN(s, ArgvSep, 3)
	if len(parts) != 3 || parts[0] == "" {
		return "", "", "", fmt.Errorf("item %q is not \"code | actor | key\"", s)
	}
	return parts[0], parts[1], parts[2], nil
}

// ParseNGram parses a syscall n-gram item: 1 to MaxNGram syscall numbers
// (each at most MaxSyscallNr) separated by spaces, e.g. "0 1 3".
func ParseNGram(s string) ([]uint32, error) {
	f := strings.Fields(s)
	if len(f) == 0 || len(f) > MaxNGram {
		return nil, fmt.Errorf("item %q is not 1 to %d syscall numbers", s, MaxNGram)
	}
	g := make([]uint32, len(f))
	for i, n := range f {
		v, err := strconv.ParseUint(n, 10, 32)
		if err != nil || v > MaxSyscallNr {
			return nil, fmt.Errorf("item %q: %q is not a syscall number", s, n)
		}
		g[i] = uint32(v)
	}
	return g, nil
}

// ParsePort parses a listen port item ("8080/tcp", "53/udp", "8080" or
// "8080/any") into proto<<16 | port, proto 1 for tcp, 2 for udp and 0 for
// any (containv1.Network_Protocol numbers).
func ParsePort(s string) (uint32, error) {
	num, proto, _ := strings.Cut(s, "/")
	n, err := strconv.ParseUint(num, 10, 16)
	if err != nil {
		return 0, fmt.Errorf("%q is not port/protocol", s)
	}
	var p uint32
	switch proto {
	case "tcp":
		p = 1
	case "udp":
		p = 2
	case "any", "":
	default:
		return 0, fmt.Errorf("%q: unknown protocol", s)
	}
	return p<<16 | uint32(n), nil
}

// ParseUID parses a uid item.
func ParseUID(s string) (uint32, error) {
	u, err := strconv.ParseUint(s, 10, 32)
	if err != nil {
		return 0, fmt.Errorf("item %q is not a uid", s)
	}
	return uint32(u), nil
}

// sum is the SHA-256 of d's JSON encoding with Checksum empty.
func (d *Baseline) sum() (string, error) {
	c := *d
	c.Checksum = ""
	raw, err := json.Marshal(&c)
	if err != nil {
		return "", err
	}
	h := sha256.Sum256(raw)
	return hex.EncodeToString(h[:]), nil
}

// MarshalBaseline sets d's checksum and encodes it, for NATS KV.
func MarshalBaseline(d *Baseline) ([]byte, error) {
	sum, err := d.sum()
	if err != nil {
		return nil, fmt.Errorf("encoding baseline %s: %w", d.Key, err)
	}
	d.Checksum = sum
	return json.Marshal(d)
}

// UnmarshalBaseline decodes a persisted baseline and verifies its
// checksum and items (Validate). It is pure and safe on any input; every
// failure wraps ErrCorrupt.
func UnmarshalBaseline(raw []byte) (*Baseline, error) {
	var d Baseline
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&d); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	if d.Checksum == "" {
		return nil, fmt.Errorf("%w: %s: no checksum", ErrCorrupt, d.Key)
	}
	sum, err := d.sum()
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	if sum != d.Checksum {
		return nil, fmt.Errorf("%w: %s: checksum mismatch", ErrCorrupt, d.Key)
	}
	if err := d.Validate(); err != nil {
		return nil, err
	}
	return &d, nil
}

// WriteBaselineYAML writes d as YAML for review (maps are sorted by key),
// without its checksum.
func WriteBaselineYAML(w io.Writer, d *Baseline) error {
	c := *d
	c.Checksum = ""
	enc := yaml.NewEncoder(w)
	enc.SetIndent(2)
	if err := enc.Encode(&c); err != nil {
		return fmt.Errorf("writing baseline %s as yaml: %w", d.Key, err)
	}
	return enc.Close()
}

// ReadBaselineYAML reads a baseline written by WriteBaselineYAML
// (possibly edited by a person) and validates it; no checksum is needed.
func ReadBaselineYAML(r io.Reader) (*Baseline, error) {
	var d Baseline
	dec := yaml.NewDecoder(r)
	dec.KnownFields(true)
	if err := dec.Decode(&d); err != nil {
		return nil, fmt.Errorf("%w: yaml: %v", ErrCorrupt, err)
	}
	if err := d.Validate(); err != nil {
		return nil, err
	}
	d.Checksum = ""
	return &d, nil
}
