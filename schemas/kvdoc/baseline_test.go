package kvdoc

import (
	"bytes"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"
)

func sampleBaseline() *Baseline {
	t0 := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	return &Baseline{
		Format: BaselineFormat, Key: testDigest, Image: "registry.local/shop/web:1.2", Phase: PhaseConverged, Version: 3,
		First: t0, Last: t0.Add(time.Hour), Converged: t0.Add(30 * time.Minute), Observations: 120, Novelty: 0.01,
		Executables:    map[string]uint32{"/app/web": 4},
		ArgvShapes:     map[string]uint32{"/app/web | --listen <addr>": 4},
		Edges:          map[string]uint32{"/bin/sh -> /app/web": 1},
		Syscalls:       map[string]uint32{"read": 90},
		SyscallNGrams:  map[string]uint32{"0 1 3": 7, "0": 1, "0 1 2 3 4 5": 2},
		Peers:          map[string]uint32{"10.0.0.3:5432": 2},
		ListenPorts:    map[string]uint32{"8080/tcp": 1, "53/udp": 1, "9090": 1},
		WritePrefixes:  map[string]uint32{"/tmp": 3},
		SensitiveReads: map[string]uint32{"/etc/shadow": 1},
		UIDs:           map[string]uint32{"1000": 5},
		Behaviours:     map[string]uint32{"shell.spawn | /app/web | sh": 1},
		Profile:        &SeedProfile{Ref: testDigest + "@p1-00", ListenPorts: []string{}, Users: []uint32{1000}},
	}
}

func TestBaselineRoundTrip(t *testing.T) {
	d := sampleBaseline()
	raw, err := MarshalBaseline(d)
	if err != nil {
		t.Fatal(err)
	}
	got, err := UnmarshalBaseline(raw)
	if err != nil {
		t.Fatal(err)
	}
	if got.Checksum != d.Checksum || got.Key != d.Key || !got.Converged.Equal(d.Converged) || got.SyscallNGrams["0 1 2 3 4 5"] != 2 {
		t.Fatalf("round trip: %+v", got)
	}
	// A changed byte fails the checksum.
	tampered := bytes.Replace(raw, []byte(`"read":90`), []byte(`"read":91`), 1)
	if _, err := UnmarshalBaseline(tampered); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "checksum") {
		t.Fatalf("tampered: %v", err)
	}
	// YAML keeps the declared-none list and drops the undeclared ones.
	var y bytes.Buffer
	if err := WriteBaselineYAML(&y, d); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(y.String(), "checksum") || !strings.Contains(y.String(), "listen_ports: []") || strings.Contains(y.String(), "peers: []") {
		t.Fatalf("yaml:\n%s", y.String())
	}
	back, err := ReadBaselineYAML(&y)
	if err != nil {
		t.Fatal(err)
	}
	if back.Profile.ListenPorts == nil || back.Profile.Peers != nil || !slices.Equal(back.Profile.Users, []uint32{1000}) {
		t.Fatalf("yaml profile %+v", back.Profile)
	}
}

func TestBaselineValidate(t *testing.T) {
	for name, mut := range map[string]func(*Baseline){
		"format":          func(d *Baseline) { d.Format = "contain.baseline/v0" },
		"key":             func(d *Baseline) { d.Key = "" },
		"phase":           func(d *Baseline) { d.Phase = "sleeping" },
		"novelty":         func(d *Baseline) { d.Novelty = 1.5 },
		"empty exec":      func(d *Baseline) { d.Executables[""] = 1 },
		"argv sep":        func(d *Baseline) { d.ArgvShapes["/app/web --x"] = 1 },
		"edge parent":     func(d *Baseline) { d.Edges[" -> /bin/sh"] = 1 },
		"behaviour":       func(d *Baseline) { d.Behaviours["shell.spawn | x"] = 1 },
		"ngram long":      func(d *Baseline) { d.SyscallNGrams["1 2 3 4 5 6 7"] = 1 },
		"ngram empty":     func(d *Baseline) { d.SyscallNGrams[" "] = 1 },
		"ngram nr":        func(d *Baseline) { d.SyscallNGrams["1 2097152"] = 1 },
		"ngram junk":      func(d *Baseline) { d.SyscallNGrams["1 2 x"] = 1 },
		"port proto":      func(d *Baseline) { d.ListenPorts["80/sctp"] = 1 },
		"port number":     func(d *Baseline) { d.ListenPorts["70000/tcp"] = 1 },
		"uid":             func(d *Baseline) { d.UIDs["-1"] = 1 },
		"sensitive empty": func(d *Baseline) { d.SensitiveReads[""] = 1 },
	} {
		d := sampleBaseline()
		if err := d.Validate(); err != nil {
			t.Fatalf("sample: %v", err)
		}
		mut(d)
		if err := d.Validate(); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: %v, want ErrCorrupt", name, err)
		}
	}
}

func TestParseItems(t *testing.T) {
	if g, err := ParseNGram("0  1 3"); err != nil || !slices.Equal(g, []uint32{0, 1, 3}) {
		t.Errorf("ParseNGram: %v %v", g, err)
	}
	if g, err := ParseNGram("2097151"); err != nil || !slices.Equal(g, []uint32{MaxSyscallNr}) {
		t.Errorf("ParseNGram one: %v %v", g, err)
	}
	for in, want := range map[string]uint32{"8080/tcp": 1<<16 | 8080, "53/udp": 2<<16 | 53, "9090": 9090, "9090/any": 9090} {
		if got, err := ParsePort(in); err != nil || got != want {
			t.Errorf("ParsePort(%q) = %d %v, want %d", in, got, err, want)
		}
	}
	if code, actor, key, err := ParseBehaviour("cred.read | /bin/cat | /etc/shadow | x"); err != nil || code != "cred.read" || actor != "/bin/cat" || key != "/etc/shadow | x" {
		t.Errorf("ParseBehaviour: %q %q %q %v", code, actor, key, err)
	}
	if a, b, err := ParsePair("/bin/sh -> /bin/id -> x", EdgeSep); err != nil || a != "/bin/sh" || b != "/bin/id -> x" {
		t.Errorf("ParsePair: %q %q %v", a, b, err)
	}
	if u, err := ParseUID("4294967295"); err != nil || u != 1<<32-1 {
		t.Errorf("ParseUID: %d %v", u, err)
	}
}

// FuzzUnmarshalBaseline: any bytes from the baselines bucket decode to a
// valid document or fail with ErrCorrupt; an accepted one re-encodes to
// the same checksum.
func FuzzUnmarshalBaseline(f *testing.F) {
	raw, _ := MarshalBaseline(sampleBaseline())
	f.Add(raw)
	f.Add([]byte(`{}`))
	f.Add([]byte(`{"format":"contain.baseline/v1","key":"k","phase":"locked","checksum":"x"}`))
	f.Fuzz(func(t *testing.T, in []byte) {
		d, err := UnmarshalBaseline(in)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error not ErrCorrupt: %v", err)
			}
			return
		}
		if err := d.Validate(); err != nil {
			t.Fatalf("accepted document is invalid: %v", err)
		}
		sum := d.Checksum
		if _, err := MarshalBaseline(d); err != nil || d.Checksum != sum {
			t.Fatalf("re-encoding changed the checksum: %s -> %s (%v)", sum, d.Checksum, err)
		}
	})
}
