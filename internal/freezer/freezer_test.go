package freezer

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func FuzzParseRuncState(f *testing.F) {
	f.Add([]byte(`{"id":"c1","init_process_pid":42,"created":"2026-01-02T03:04:05.123456789Z","cgroup_paths":{"freezer":"/sys/fs/cgroup/freezer/c1","":"/sys/fs/cgroup/unified/c1"},"config":{"rootfs":"/b/rootfs","labels":["bundle=/b","io.contain.critical=true"]}}`))
	f.Add([]byte(`{"id":""}`))
	f.Add([]byte(`{"id":"x","config":{"labels":["novalue","=","a=b=c"]}}`))
	f.Add([]byte(`not json`))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := ParseRuncState(data)
		if err != nil {
			if s != nil {
				t.Fatal("state with error")
			}
			return
		}
		if s.ID == "" {
			t.Fatal("accepted a state without id")
		}
		_ = s.LabelMap()
	})
}

func FuzzValidID(f *testing.F) {
	for _, s := range []string{"abc", "..", ".", "a/b", "", "c-1_2+3.4", "../../etc", "a\x00b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, id string) {
		if !ValidID(id) {
			return
		}
		if filepath.Base(id) != id || id == "." || id == ".." || filepath.Clean(id) != id {
			t.Fatalf("ValidID accepted %q, which is not one clean path element", id)
		}
	})
}

func TestValidID(t *testing.T) {
	for id, want := range map[string]bool{"abc": true, "c-1_2+3.4": true, "": false, ".": false, "..": false, "a/b": false, "../x": false, "a b": false} {
		if got := ValidID(id); got != want {
			t.Errorf("ValidID(%q) = %v", id, got)
		}
	}
}

// fakeCgroup lays out a directory that looks like a v1 freezer cgroup; the
// kernel is not involved, so the state never changes by itself.
func fakeCgroup(t *testing.T, procs, state string) *Target {
	dir := filepath.Join(t.TempDir(), "c1")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	_ = os.WriteFile(filepath.Join(dir, "cgroup.procs"), []byte(procs), 0o644)
	_ = os.WriteFile(filepath.Join(dir, "freezer.state"), []byte(state), 0o644)
	return &Target{ID: "c1", FreezerV1: dir}
}

func TestFreezeRefusesEmptyCgroup(t *testing.T) {
	tg := fakeCgroup(t, "", "THAWED\n")
	methods, _ := NewMethods([]string{MethodV1Freezer}, Roots{}, "")
	_, err := Freeze(context.Background(), methods, tg)
	if !errors.Is(err, ErrExited) {
		t.Fatalf("freeze of an empty cgroup: %v, want ErrExited", err)
	}
}

func TestFreezeVanishedCgroup(t *testing.T) {
	tg := &Target{ID: "gone", FreezerV1: filepath.Join(t.TempDir(), "gone")}
	methods, _ := NewMethods([]string{MethodV1Freezer}, Roots{}, "")
	if _, err := Freeze(context.Background(), methods, tg); !errors.Is(err, ErrExited) {
		t.Fatalf("freeze of a vanished cgroup: %v, want ErrExited", err)
	}
}

func TestNoMethod(t *testing.T) {
	methods, _ := NewMethods([]string{MethodV2Freeze}, Roots{}, "")
	if _, err := Freeze(context.Background(), methods, &Target{ID: "x", FreezerV1: "/nope"}); !errors.Is(err, ErrNoMethod) {
		t.Fatalf("got %v, want ErrNoMethod", err)
	}
	if _, err := NewMethods([]string{"docker"}, Roots{}, ""); err == nil {
		t.Fatal("unknown method accepted")
	}
}

func TestLocateRejectsPathsOutsideRoots(t *testing.T) {
	root := t.TempDir()
	state := `{"id":"c1","cgroup_paths":{"freezer":"/etc","":"/sys/fs/cgroup/unified/c1"}}`
	_ = os.MkdirAll(filepath.Join(root, "runc", "c1"), 0o755)
	_ = os.WriteFile(filepath.Join(root, "runc", "c1", "state.json"), []byte(state), 0o644)
	tg, err := Locate(Roots{FreezerV1: filepath.Join(root, "freezer"), Cgroup2: "/sys/fs/cgroup/unified", RuncRoot: filepath.Join(root, "runc")}, "c1")
	if err != nil {
		t.Fatal(err)
	}
	if tg.FreezerV1 != "" || tg.Cgroup2 != "/sys/fs/cgroup/unified/c1" {
		t.Fatalf("located %+v", tg)
	}
}

func TestPollTimeout(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Millisecond)
	defer cancel()
	err := poll(ctx, "never", func() (bool, error) { return false, nil })
	if !errors.Is(err, ErrTimeout) {
		t.Fatalf("got %v", err)
	}
}

func TestEventsFrozen(t *testing.T) {
	if !eventsFrozen([]byte("populated 1\nfrozen 1\n")) || eventsFrozen([]byte("populated 1\nfrozen 0\n")) || eventsFrozen(nil) {
		t.Fatal("eventsFrozen")
	}
}

func TestNewMethodsEngines(t *testing.T) {
	ms, err := NewMethods(KnownMethods(), Roots{}, "")
	if err != nil || len(ms) != len(KnownMethods()) {
		t.Fatalf("%v %v", ms, err)
	}
	// Without clients the engine methods never apply.
	tg := &Target{ID: "x", Runtime: RuntimeDocker, FreezerV1: "/sys/fs/cgroup/freezer/docker/x"}
	for _, m := range ms {
		if m.Applies(tg) != (m.Name() == MethodV1Freezer) {
			t.Errorf("%s applies = %v", m.Name(), m.Applies(tg))
		}
	}
	for _, rt := range []string{RuntimeDocker, RuntimeContainerd} {
		if got := DefaultMethods(rt); MethodRuntime(got[0]) != rt {
			t.Errorf("DefaultMethods(%s) = %v", rt, got)
		}
	}
}

// TestV1StuckFallsBackToCgroup2: a v1 freezer that never reports FROZEN
// (here its freezer.state discards writes and reads empty, as a freezer
// stuck in FREEZING never reads FROZEN) gets half of the time left, then
// cgroup2's cgroup.freeze (the next method) acts within the other half.
// The kernel's stuck FREEZING (a task in uninterruptible sleep) cannot be
// produced on demand, hence the files.
func TestV1StuckFallsBackToCgroup2(t *testing.T) {
	v1 := t.TempDir()
	v2 := t.TempDir()
	_ = os.WriteFile(filepath.Join(v1, "cgroup.procs"), []byte("4242\n"), 0o644)
	if err := os.Symlink("/dev/null", filepath.Join(v1, "freezer.state")); err != nil {
		t.Fatal(err)
	}
	_ = os.WriteFile(filepath.Join(v2, "cgroup.procs"), []byte("4242\n"), 0o644)
	_ = os.WriteFile(filepath.Join(v2, "cgroup.freeze"), []byte("0\n"), 0o644)
	_ = os.WriteFile(filepath.Join(v2, "cgroup.events"), []byte("populated 1\nfrozen 1\n"), 0o644)
	tg := &Target{ID: "c1", FreezerV1: v1, Cgroup2: v2}
	methods, _ := NewMethods([]string{MethodV1Freezer, MethodV2Freeze}, Roots{}, "")
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	start := time.Now()
	rep, err := FreezeReport(ctx, methods, tg)
	took := time.Since(start)
	if err != nil || rep.Method == nil || rep.Method.Name() != MethodV2Freeze {
		t.Fatalf("FreezeReport = %v, %v; want cgroup-v2-freeze after the stuck v1 freezer", rep.Method, err)
	}
	if len(rep.Tried) != 1 || !errors.Is(rep.Tried[0], ErrTimeout) {
		t.Fatalf("tried %v, want the v1 freezer's timeout", rep.Tried)
	}
	// Half of the second, then at most undoTimeout undoing it.
	if took < 450*time.Millisecond || took > 900*time.Millisecond {
		t.Errorf("took %v: the v1 freezer should have had about half of 1s", took)
	}
	if b, _ := os.ReadFile(filepath.Join(v2, "cgroup.freeze")); string(b) != "1" {
		t.Errorf("cgroup.freeze %q, want 1", b)
	}
	// Alone, the v1 freezer keeps the whole time.
	ctx2, cancel2 := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel2()
	start = time.Now()
	if _, err := FreezeReport(ctx2, methods[:1], tg); !errors.Is(err, ErrTimeout) {
		t.Fatalf("v1 alone: %v, want ErrTimeout", err)
	}
	if took := time.Since(start); took < 180*time.Millisecond {
		t.Errorf("v1 alone gave up after %v of 200ms", took)
	}
}
