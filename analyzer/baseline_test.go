package analyzer

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/containsec/contain/schemas/containv1"
)

func learnedDoc(t testing.TB) *Doc {
	e := newEngine(t, testConfig(), func(string) *Profile {
		return &Profile{ListenPorts: []string{"8080/tcp"}, WritablePaths: []string{"/var/www"}}
	})
	learn(e, "c1")
	seq := base("c1", sec(0.5))
	seq.Kind = containv1.Kind_KIND_SYSCALL
	seq.Body = &containv1.Event_Syscall{Syscall: &containv1.Syscall{Mode: containv1.Syscall_MODE_SEQUENCE, Sequence: []uint32{0, 1, 2, 3, 0, 1}}}
	e.Observe(seq)
	e.Observe(execEv("c1", sec(5), "/bin/sleep", "sleep", "1"))
	d, err := e.Snapshot("sha256:aaaa")
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func TestDocRoundTrips(t *testing.T) {
	d := learnedDoc(t)
	raw, err := MarshalJSONDoc(d)
	if err != nil {
		t.Fatal(err)
	}
	back, err := UnmarshalJSONDoc(raw)
	if err != nil {
		t.Fatal(err)
	}
	var y bytes.Buffer
	if err := WriteYAML(&y, back); err != nil {
		t.Fatal(err)
	}
	t.Logf("\n%s", y.String())
	for _, want := range []string{"phase: converged", "/bin/httpd: 1", "8080/tcp: 1", "/bin/httpd | -f -p N: 1", "/var/www: 1", "0 1 2: 1"} {
		if !strings.Contains(y.String(), want) {
			t.Errorf("yaml lacks %q", want)
		}
	}
	fromYAML, err := ReadYAML(&y)
	if err != nil {
		t.Fatal(err)
	}
	// The baseline rebuilt from YAML scores like the original.
	e := newEngine(t, testConfig(), nil)
	if err := e.Load(fromYAML); err != nil {
		t.Fatal(err)
	}
	if out := e.Observe(execEv("c1", sec(6), "/bin/sleep", "sleep", "1")); len(out) != 0 {
		t.Errorf("learned exec alerted after YAML round trip: %v", out[0].GetAlert().Reasons)
	}
	if out := e.Observe(netEv("c1", sec(6), containv1.Network_OP_LISTEN, [4]byte{}, 8080)); len(out) != 0 {
		t.Error("learned port alerted after YAML round trip")
	}
	if out := e.Observe(execEv("c1", sec(6), "/bin/sh")); len(out) != 1 {
		t.Error("deviation not alerted after YAML round trip")
	}
	d2, _ := e.Snapshot("sha256:aaaa")
	if len(d2.Executables) != len(d.Executables) || len(d2.SyscallNGrams) != len(d.SyscallNGrams) || d2.Profile == nil {
		t.Errorf("round trip lost items: %+v", d2)
	}
}

func TestDocCorruptIsRefused(t *testing.T) {
	raw, err := MarshalJSONDoc(learnedDoc(t))
	if err != nil {
		t.Fatal(err)
	}
	tampered := bytes.Replace(raw, []byte(`"/bin/sleep"`), []byte(`"/bin/sleeq"`), 1)
	for name, in := range map[string][]byte{
		"truncated": raw[:len(raw)/2],
		"tampered":  tampered,
		"empty":     nil,
		"garbage":   []byte("\x00\x01yaml: [}"),
		"no sum":    []byte(`{"format":"contain.baseline/v1","key":"k","phase":"learning"}`),
	} {
		if _, err := UnmarshalJSONDoc(in); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: err %v, want ErrCorrupt", name, err)
		}
	}
	for name, y := range map[string]string{
		"bad phase": "format: contain.baseline/v1\nkey: k\nphase: sleepy\n",
		"bad port":  "format: contain.baseline/v1\nkey: k\nphase: learning\nlisten_ports:\n  http: 1\n",
		"bad edge":  "format: contain.baseline/v1\nkey: k\nphase: learning\nedges:\n  /bin/a: 1\n",
		"unknown":   "format: contain.baseline/v1\nkey: k\nphase: learning\nfoo: 1\n",
		"format":    "format: v0\nkey: k\nphase: learning\n",
	} {
		if _, err := ReadYAML(strings.NewReader(y)); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: err %v, want ErrCorrupt", name, err)
		}
	}
}

func FuzzUnmarshalJSONDoc(f *testing.F) {
	raw, _ := MarshalJSONDoc(learnedDoc(f))
	f.Add(raw)
	f.Add([]byte(`{}`))
	f.Add([]byte(`{"format":"contain.baseline/v1","key":"k","phase":"locked","checksum":"x"}`))
	f.Fuzz(func(t *testing.T, in []byte) {
		d, err := UnmarshalJSONDoc(in)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error not ErrCorrupt: %v", err)
			}
			return
		}
		if _, err := docBaseline(d); err != nil {
			t.Fatalf("accepted doc does not build: %v", err)
		}
	})
}

func FuzzReadYAML(f *testing.F) {
	var y bytes.Buffer
	_ = WriteYAML(&y, learnedDoc(f))
	f.Add(y.String())
	f.Add("format: contain.baseline/v1\nkey: k\nphase: learning\n")
	f.Fuzz(func(t *testing.T, in string) {
		if _, err := ReadYAML(strings.NewReader(in)); err != nil && !errors.Is(err, ErrCorrupt) {
			t.Fatalf("error not ErrCorrupt: %v", err)
		}
	})
}

func FuzzDecodeSeedProfile(f *testing.F) {
	f.Add([]byte(`{"listen_ports":["8080/tcp","53"],"peers":["10.0.0.0/8:5432","1.2.3.4"],"writable_paths":["/data"],"users":[1000]}`))
	f.Add([]byte(`{"peers":["::1/128:80"]}`))
	f.Fuzz(func(t *testing.T, in []byte) {
		p, err := decodeSeedProfile(in)
		if err != nil {
			return
		}
		s := compileProfile(p)
		if p.Peers != nil && len(s.peers) != len(p.Peers) {
			t.Fatalf("accepted peers %v compiled to %d rules", p.Peers, len(s.peers))
		}
	})
}

// FuzzEngineObserve feeds arbitrary (proto-decoded) events to a converged
// engine: it must never panic and alerts must be well formed.
func FuzzEngineObserve(f *testing.F) {
	for _, ev := range []*containv1.Event{
		execEv("c1", sec(9), "/bin/sh", "sh", "-c", "id"),
		sysEv("c1", sec(9), "ptrace"),
		netEv("c1", sec(9), containv1.Network_OP_CONNECT, [4]byte{1, 2, 3, 4}, 80),
		fileEv("c1", sec(9), containv1.File_OP_RENAME, "/etc/x"),
		withOrigin(execEv("c1", sec(9), "/dev/fd/3", "x"), containv1.Origin_ORIGIN_EXEC_SESSION, 7),
		withOrigin(fileEv("c1", sec(9), containv1.File_OP_MKNOD, "/dev/sda"), containv1.Origin_ORIGIN_CONTAINER, 0),
		withOrigin(sysEv("c1", sec(9), "setresuid"), containv1.Origin_ORIGIN_RUNTIME, 0),
	} {
		raw, _ := proto.Marshal(ev)
		f.Add(raw)
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		var ev containv1.Event
		if proto.Unmarshal(in, &ev) != nil {
			return
		}
		e := newEngine(t, testConfig(), nil)
		learn(e, "c1")
		for range 2 {
			for _, al := range e.Observe(&ev) {
				a := al.GetAlert()
				if a.Score < 0 || a.Score > 1 || len(a.Reasons) == 0 || a.Trigger == nil {
					t.Fatalf("bad alert %v", al)
				}
			}
		}
	})
}

func FuzzParseTrace(f *testing.F) {
	f.Add("0 1 2\n3\t4")
	f.Add("")
	f.Fuzz(func(t *testing.T, in string) {
		tr, err := ParseTrace(strings.NewReader(in))
		if err == nil && len(tr) > len(in) {
			t.Fatal("more syscalls than bytes")
		}
	})
}
