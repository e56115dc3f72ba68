package analyzer

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

// DocFormat identifies the persisted baseline format.
const DocFormat = "contain.baseline/v1"

// Doc is the persisted, reviewable form of a Baseline (JSON in NATS KV,
// YAML for people). Sets are maps from item to how often it was seen.
type Doc struct {
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
	SyscallNGrams  map[string]uint32 `json:"syscall_ngrams,omitempty" yaml:"syscall_ngrams,omitempty"` // "nr nr ...": 1 to 6 syscalls (SeqModel.Grams)
	Peers          map[string]uint32 `json:"peers,omitempty" yaml:"peers,omitempty"`
	ListenPorts    map[string]uint32 `json:"listen_ports,omitempty" yaml:"listen_ports,omitempty"` // "8080/tcp"
	WritePrefixes  map[string]uint32 `json:"write_prefixes,omitempty" yaml:"write_prefixes,omitempty"`
	SensitiveReads map[string]uint32 `json:"sensitive_reads,omitempty" yaml:"sensitive_reads,omitempty"`
	UIDs           map[string]uint32 `json:"uids,omitempty" yaml:"uids,omitempty"`
	// Behaviours learned: "code | actor | key" (see docs/detection.md).
	Behaviours map[string]uint32 `json:"behaviours,omitempty" yaml:"behaviours,omitempty"`
	Profile    *Profile          `json:"profile,omitempty" yaml:"profile,omitempty"`

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

// ErrCorrupt wraps every failure to read a persisted baseline.
var ErrCorrupt = errors.New("corrupt baseline")

const (
	argvSep = " | "
	edgeSep = " -> "
)

func nsTime(ns int64) time.Time {
	if ns == 0 {
		return time.Time{}
	}
	return time.Unix(0, ns).UTC()
}

func timeNs(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

func copyMap(m map[string]uint32, conv func(string) string) map[string]uint32 {
	if len(m) == 0 {
		return nil
	}
	out := make(map[string]uint32, len(m))
	for k, v := range m {
		if conv != nil {
			k = conv(k)
		}
		out[k] = v
	}
	return out
}

// Doc renders the baseline.
func (b *Baseline) Doc() *Doc {
	d := &Doc{
		Format: DocFormat, Key: b.Key, Image: b.Image, Phase: b.Phase.String(), Version: b.Version,
		First: nsTime(b.FirstNs), Last: nsTime(b.LastNs), Converged: nsTime(b.ConvergedNs),
		Observations: b.Observations, Novelty: b.Novelty,
		Executables:    copyMap(b.Exec, nil),
		ArgvShapes:     copyMap(b.Argv, func(k string) string { return strings.Replace(k, "\x00", argvSep, 1) }),
		Edges:          copyMap(b.Edges, func(k string) string { return strings.Replace(k, "\x00", edgeSep, 1) }),
		Syscalls:       copyMap(b.Syscalls, nil),
		Peers:          copyMap(b.Peers, nil),
		WritePrefixes:  copyMap(b.Writes, nil),
		SensitiveReads: copyMap(b.Reads, nil),
		Behaviours:     copyMap(b.Behaviours, func(k string) string { return strings.ReplaceAll(k, "\x00", argvSep) }),
	}
	if b.seed != nil {
		d.Profile = b.seed.p
	}
	if b.Seq.Len() > 0 {
		d.SyscallNGrams = b.Seq.Grams()
	}
	if len(b.Ports) > 0 {
		d.ListenPorts = make(map[string]uint32, len(b.Ports))
		for k, v := range b.Ports {
			d.ListenPorts[portLabel(k)] = v
		}
	}
	if len(b.UIDs) > 0 {
		d.UIDs = make(map[string]uint32, len(b.UIDs))
		for k, v := range b.UIDs {
			d.UIDs[strconv.FormatUint(uint64(k), 10)] = v
		}
	}
	return d
}

// Baseline validates the document and builds the baseline it describes.
// Every item is checked; any error makes the whole document invalid.
func (d *Doc) Baseline() (*Baseline, error) {
	if d.Format != DocFormat {
		return nil, fmt.Errorf("%w: format %q, want %q", ErrCorrupt, d.Format, DocFormat)
	}
	if d.Key == "" {
		return nil, fmt.Errorf("%w: no key", ErrCorrupt)
	}
	ph, err := ParsePhase(d.Phase)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrCorrupt, d.Key, err)
	}
	if math.IsNaN(d.Novelty) || d.Novelty < 0 || d.Novelty > 1 {
		return nil, fmt.Errorf("%w: %s: novelty %v not in [0,1]", ErrCorrupt, d.Key, d.Novelty)
	}
	b := newBaseline(d.Key, d.Image)
	b.Phase, b.Version, b.Observations, b.Novelty = ph, d.Version, d.Observations, d.Novelty
	b.FirstNs, b.LastNs, b.ConvergedNs = timeNs(d.First), timeNs(d.Last), timeNs(d.Converged)
	if ph != PhaseLearning && b.ConvergedNs == 0 {
		b.ConvergedNs = b.LastNs
	}
	fill := func(name string, dst map[string]uint32, src map[string]uint32, sep string) error {
		for k, v := range src {
			if k == "" {
				return fmt.Errorf("%w: %s: empty item in %s", ErrCorrupt, d.Key, name)
			}
			if sep != "" {
				a, c, ok := strings.Cut(k, sep)
				if !ok || a == "" {
					return fmt.Errorf("%w: %s: %s item %q lacks %q", ErrCorrupt, d.Key, name, k, sep)
				}
				k = a + "\x00" + c
			}
			dst[k] = v
		}
		return nil
	}
	for _, f := range []struct {
		name     string
		dst, src map[string]uint32
		sep      string
	}{
		{"executables", b.Exec, d.Executables, ""},
		{"argv_shapes", b.Argv, d.ArgvShapes, argvSep},
		{"edges", b.Edges, d.Edges, edgeSep},
		{"syscalls", b.Syscalls, d.Syscalls, ""},
		{"peers", b.Peers, d.Peers, ""},
		{"write_prefixes", b.Writes, d.WritePrefixes, ""},
		{"sensitive_reads", b.Reads, d.SensitiveReads, ""},
	} {
		if err := fill(f.name, f.dst, f.src, f.sep); err != nil {
			return nil, err
		}
	}
	for k, v := range d.Behaviours {
		parts := strings.SplitN(k, argvSep, 3)
		if len(parts) != 3 || parts[0] == "" {
			return nil, fmt.Errorf("%w: %s: behaviours item %q is not \"code | actor | key\"", ErrCorrupt, d.Key, k)
		}
		if _, ok := classes[parts[0]]; !ok {
			return nil, fmt.Errorf("%w: %s: behaviours item %q: unknown reason code", ErrCorrupt, d.Key, k)
		}
		b.Behaviours[strings.Join(parts, "\x00")] = v
	}
	if len(d.SyscallNGrams) > 0 {
		m, err := SeqModelFromGrams(d.SyscallNGrams)
		if err != nil {
			return nil, fmt.Errorf("%w: %s: syscall_ngrams: %v", ErrCorrupt, d.Key, err)
		}
		b.Seq = m
	}
	for k, v := range d.ListenPorts {
		key, err := parsePortLabel(k)
		if err != nil {
			return nil, fmt.Errorf("%w: %s: listen_ports: %v", ErrCorrupt, d.Key, err)
		}
		b.Ports[key] = v
	}
	for k, v := range d.UIDs {
		u, err := strconv.ParseUint(k, 10, 32)
		if err != nil {
			return nil, fmt.Errorf("%w: %s: uids item %q is not a uid", ErrCorrupt, d.Key, k)
		}
		b.UIDs[uint32(u)] = v
	}
	if d.Profile != nil {
		b.seed = compileProfile(d.Profile)
	}
	return b, nil
}

func parsePortLabel(s string) (uint32, error) {
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

func (d *Doc) sum() (string, error) {
	c := *d
	c.Checksum = ""
	raw, err := json.Marshal(&c)
	if err != nil {
		return "", err
	}
	h := sha256.Sum256(raw)
	return hex.EncodeToString(h[:]), nil
}

// MarshalJSONDoc encodes d with its checksum, for NATS KV.
func MarshalJSONDoc(d *Doc) ([]byte, error) {
	sum, err := d.sum()
	if err != nil {
		return nil, fmt.Errorf("encoding baseline %s: %w", d.Key, err)
	}
	d.Checksum = sum
	return json.Marshal(d)
}

// UnmarshalJSONDoc decodes and verifies a persisted baseline. It is pure
// and safe on any input; every failure wraps ErrCorrupt.
func UnmarshalJSONDoc(raw []byte) (*Doc, error) {
	var d Doc
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
	if _, err := d.Baseline(); err != nil {
		return nil, err
	}
	return &d, nil
}

// WriteYAML writes d as YAML for review (maps are sorted by key).
func WriteYAML(w io.Writer, d *Doc) error {
	c := *d
	c.Checksum = ""
	enc := yaml.NewEncoder(w)
	enc.SetIndent(2)
	if err := enc.Encode(&c); err != nil {
		return fmt.Errorf("writing baseline %s as yaml: %w", d.Key, err)
	}
	return enc.Close()
}

// ReadYAML reads a baseline written by WriteYAML (possibly edited by a
// person) and validates it; no checksum is needed.
func ReadYAML(r io.Reader) (*Doc, error) {
	var d Doc
	dec := yaml.NewDecoder(r)
	dec.KnownFields(true)
	if err := dec.Decode(&d); err != nil {
		return nil, fmt.Errorf("%w: yaml: %v", ErrCorrupt, err)
	}
	if _, err := d.Baseline(); err != nil {
		return nil, err
	}
	d.Checksum = ""
	return &d, nil
}

// MarshalYAML writes only the lists the profile declares: a nil list
// (declares nothing) is omitted, an empty one (declares none) is kept, so
// that a YAML round trip does not turn "undeclared" into "none allowed".
func (p *Profile) MarshalYAML() (any, error) {
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
