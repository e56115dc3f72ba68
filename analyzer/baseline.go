package analyzer

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/containsec/contain/schemas/kvdoc"
)

// DocFormat identifies the persisted baseline format.
const DocFormat = kvdoc.BaselineFormat

// Doc is the persisted, reviewable form of a Baseline (kvdoc.Baseline:
// JSON in NATS KV, YAML for people).
type Doc = kvdoc.Baseline

// ErrCorrupt wraps every failure to read a persisted baseline.
var ErrCorrupt = kvdoc.ErrCorrupt

const (
	argvSep = kvdoc.ArgvSep
	edgeSep = kvdoc.EdgeSep
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

// docBaseline validates the document (kvdoc.Baseline.Validate, and the
// reason codes and n-gram length this analyzer knows) and builds the
// baseline it describes. Any error makes the whole document invalid.
func docBaseline(d *Doc) (*Baseline, error) {
	if err := d.Validate(); err != nil {
		return nil, err
	}
	ph, err := ParsePhase(d.Phase)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrCorrupt, d.Key, err)
	}
	b := newBaseline(d.Key, d.Image)
	b.Phase, b.Version, b.Observations, b.Novelty = ph, d.Version, d.Observations, d.Novelty
	b.FirstNs, b.LastNs, b.ConvergedNs = timeNs(d.First), timeNs(d.Last), timeNs(d.Converged)
	if ph != PhaseLearning && b.ConvergedNs == 0 {
		b.ConvergedNs = b.LastNs
	}
	for _, f := range []struct {
		dst, src map[string]uint32
		sep      string
	}{
		{b.Exec, d.Executables, ""},
		{b.Argv, d.ArgvShapes, argvSep},
		{b.Edges, d.Edges, edgeSep},
		{b.Syscalls, d.Syscalls, ""},
		{b.Peers, d.Peers, ""},
		{b.Writes, d.WritePrefixes, ""},
		{b.Reads, d.SensitiveReads, ""},
	} {
		for k, v := range f.src {
			if f.sep != "" {
				k = strings.Replace(k, f.sep, "\x00", 1) // validated: holds sep
			}
			f.dst[k] = v
		}
	}
	for k, v := range d.Behaviours {
		code, actor, key, err := kvdoc.ParseBehaviour(k)
		if err != nil {
			return nil, fmt.Errorf("%w: %s: behaviours: %v", ErrCorrupt, d.Key, err)
		}
		if _, ok := classes[code]; !ok {
			return nil, fmt.Errorf("%w: %s: behaviours item %q: unknown reason code", ErrCorrupt, d.Key, k)
		}
		b.Behaviours[code+"\x00"+actor+"\x00"+key] = v
	}
	if len(d.SyscallNGrams) > 0 {
		m, err := SeqModelFromGrams(d.SyscallNGrams)
		if err != nil {
			return nil, fmt.Errorf("%w: %s: syscall_ngrams: %v", ErrCorrupt, d.Key, err)
		}
		b.Seq = m
	}
	for k, v := range d.ListenPorts {
		key, err := kvdoc.ParsePort(k)
		if err != nil {
			return nil, fmt.Errorf("%w: %s: listen_ports: %v", ErrCorrupt, d.Key, err)
		}
		b.Ports[key] = v
	}
	for k, v := range d.UIDs {
		u, err := kvdoc.ParseUID(k)
		if err != nil {
			return nil, fmt.Errorf("%w: %s: uids: %v", ErrCorrupt, d.Key, err)
		}
		b.UIDs[u] = v
	}
	if d.Profile != nil {
		b.seed = compileProfile(d.Profile)
	}
	return b, nil
}

// MarshalJSONDoc encodes d with its checksum, for NATS KV.
func MarshalJSONDoc(d *Doc) ([]byte, error) { return kvdoc.MarshalBaseline(d) }

// UnmarshalJSONDoc decodes and verifies a persisted baseline as this
// analyzer loads it (kvdoc.UnmarshalBaseline and docBaseline). It is pure
// and safe on any input; every failure wraps ErrCorrupt.
func UnmarshalJSONDoc(raw []byte) (*Doc, error) {
	d, err := kvdoc.UnmarshalBaseline(raw)
	if err != nil {
		return nil, err
	}
	if _, err := docBaseline(d); err != nil {
		return nil, err
	}
	return d, nil
}

// WriteYAML writes d as YAML for review (maps are sorted by key).
func WriteYAML(w io.Writer, d *Doc) error { return kvdoc.WriteBaselineYAML(w, d) }

// ReadYAML reads a baseline written by WriteYAML (possibly edited by a
// person) and validates it as UnmarshalJSONDoc does; no checksum is needed.
func ReadYAML(r io.Reader) (*Doc, error) {
	d, err := kvdoc.ReadBaselineYAML(r)
	if err != nil {
		return nil, err
	}
	if _, err := docBaseline(d); err != nil {
		return nil, err
	}
	return d, nil
}
