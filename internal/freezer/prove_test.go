package freezer

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containsec/contain/internal/testenv"
)

func TestContainerLeaf(t *testing.T) {
	const id = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	for leaf, want := range map[string]bool{
		id:                                 true,
		"docker-" + id + ".scope":          true,
		"cri-containerd-" + id + ".scope":  true,
		"libpod-" + id + ".scope":          true,
		"crio-" + id + ".scope":            true,
		"docker-" + id + ".service":        false,
		"system.slice":                     false,
		"other":                            false,
		"docker-" + id + "x.scope":         false,
		"session-" + id + ".scope":         false,
		"init.scope":                       false,
		"user@" + id + ".service":          false,
		"docker-" + id[:12] + ".scope":     false,
		"libpod-" + id:                     true,
		"runc-" + id + ".scope":            true,
		"runc-" + id + ".scope/" + "child": false,
	} {
		if got := ContainerLeaf(leaf, id); got != want {
			t.Errorf("ContainerLeaf(%q) = %v, want %v", leaf, got, want)
		}
	}
	for _, id := range []string{"init.scope", "system.slice", "sshd.service", "", "..", "a/b"} {
		if ContainerLeaf(id, id) {
			t.Errorf("host unit or bad id %q taken for a container", id)
		}
	}
}

func TestParseStatStart(t *testing.T) {
	b := []byte("42 (a) b) c) S 1 42 42 0 -1 4194560 100 0 0 0 0 0 0 0 20 0 1 0 123456 1000 10")
	if got, err := parseStatStart(b); err != nil || got != 123456 {
		t.Fatalf("parseStatStart = %d, %v", got, err)
	}
	if _, err := parseStatStart([]byte("1 (x) S 1")); err == nil {
		t.Fatal("short stat accepted")
	}
}

func TestCgroupOf(t *testing.T) {
	b := []byte("9:name=systemd:/\n6:freezer:/abc\n4:memory:/m\n0::/unified/x\n")
	if got := cgroupOf(b, true); got != "/abc" {
		t.Errorf("v1 %q", got)
	}
	if got := cgroupOf(b, false); got != "/unified/x" {
		t.Errorf("v2 %q", got)
	}
}

// forgeState writes a runc state.json for id under root, naming cgroup
// rel (relative to the mounts) and init pid/start: a runtime's state that
// a real runtime never wrote.
func forgeState(t *testing.T, root, id, rel string, pid int, start uint64) {
	t.Helper()
	dir := filepath.Join(root, id)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	s := fmt.Sprintf(`{"id":%q,"init_process_pid":%d,"init_process_start":%d,"cgroup_paths":{"freezer":%q,"":%q}}`,
		id, pid, start, filepath.Join(testenv.FreezerV1Root, rel), filepath.Join(testenv.Cgroup2Root, rel))
	if err := os.WriteFile(filepath.Join(dir, "state.json"), []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestProve runs a real runc container (proven) and refuses, with real
// cgroups made by hand: a cgroup named like a container that no runtime
// knows, and runtime states (forged here, as a compromised or buggy
// runtime could hold) naming the root cgroup, host units, a cgroup that
// does not hold the recorded init, a reused init pid and a cgroup holding
// a protected process. Nothing here freezes.
func TestProve(t *testing.T) {
	testenv.RequireRoot(t)
	roots := Roots{FreezerV1: testenv.FreezerV1Root, Cgroup2: testenv.Cgroup2Root, RuncRoot: "/run/runc"}
	for _, r := range []*string{&roots.FreezerV1, &roots.Cgroup2} {
		if _, err := os.Stat(*r); err != nil {
			*r = ""
		}
	}
	self := Protected{Pids: []int{os.Getpid()}}

	c := testenv.RunContainer(t, "prove", testenv.ContainerSpec{})
	tg, err := Locate(roots, c.ID)
	if err != nil {
		t.Fatal(err)
	}
	if err := Prove(roots, tg, self); err != nil {
		t.Fatalf("a running runc container is not proven: %v", err)
	}
	if tg.InitStart == 0 || !strings.HasSuffix(tg.Source, c.ID+"/state.json") {
		t.Errorf("init start %d source %q", tg.InitStart, tg.Source)
	}
	// The same container holding a protected process (as if the NATS
	// server ran in it) is refused.
	wantRefused(t, "protected pid", roots, tg, Protected{Pids: []int{tg.InitPid}}, RefuseProtected)
	wantRefused(t, "protected cgroup", roots, tg, Protected{Cgroups: []string{"/" + c.ID}}, RefuseProtected)

	const hex64 = "feedfacecafebeef0123456789abcdef0123456789abcdef0123456789abcdef"
	hand := testenv.MakeCgroup(t, hex64)
	if _, err := Locate(roots, hex64); !errors.Is(err, ErrNotFound) {
		t.Fatalf("a hand-made cgroup named like a container was located: %v", err)
	}
	// Even a Target pointing at it, without a runtime's word, is refused.
	wantRefused(t, "hand-made", roots, &Target{ID: hex64, Cgroup2: hand.Cgroup2, FreezerV1: hand.FreezerV1, InitPid: hand.Pid}, self, RefuseUnknown)

	unit := testenv.MakeCgroup(t, "contain-test.slice/sshd.service")
	start, err := procStart("/proc", unit.Pid)
	if err != nil {
		t.Fatal(err)
	}
	forged := t.TempDir()
	fr := roots
	fr.RuncRoot = forged
	forgeState(t, forged, "sshd.service", unit.Rel, unit.Pid, start)
	forgeState(t, forged, "rootcg", "/", os.Getpid(), 0)
	forgeState(t, forged, "slice", "contain-test.slice", unit.Pid, start)
	forgeState(t, forged, "wrongleaf", unit.Rel, unit.Pid, start)
	forgeState(t, forged, hex64, hand.Rel, os.Getpid(), 0)
	handStart, _ := procStart("/proc", hand.Pid)
	for _, tc := range []struct{ id, reason string }{
		{"sshd.service", RefuseHostUnit},
		{"rootcg", RefuseRootCgroup},
		{"slice", RefuseHostUnit},
		{"wrongleaf", RefuseHostUnit},
		{hex64, RefuseInitElsewhere},
	} {
		tg, err := Locate(fr, tc.id)
		if err != nil {
			t.Fatalf("%s: %v", tc.id, err)
		}
		wantRefused(t, tc.id, fr, tg, self, tc.reason)
	}
	// The hand-made cgroup with its real pid but another start time: a
	// reused pid.
	forgeState(t, forged, hex64, hand.Rel, hand.Pid, handStart+1)
	tg, err = Locate(fr, hex64)
	if err != nil {
		t.Fatal(err)
	}
	wantRefused(t, "reused pid", fr, tg, self, RefuseInitReused)
	// And with the right start time, a runtime's state that says so makes
	// it a container, unless it holds a protected process.
	forgeState(t, forged, hex64, hand.Rel, hand.Pid, handStart)
	if tg, err = Locate(fr, hex64); err != nil {
		t.Fatal(err)
	}
	if err := Prove(fr, tg, self); err != nil {
		t.Fatalf("consistent runtime state refused: %v", err)
	}
	wantRefused(t, "own cgroup", fr, tg, Protected{Pids: []int{hand.Pid}}, RefuseProtected)
	if hand.Frozen(t) || unit.Frozen(t) {
		t.Fatal("a hand-made cgroup is frozen")
	}
	for _, id := range []string{"", "/", "..", c.ID + "/../init.scope"} {
		wantRefused(t, "id "+id, roots, &Target{ID: id}, self, map[bool]string{true: RefuseNoID, false: RefuseInvalidID}[id == ""])
	}
}

func wantRefused(t *testing.T, what string, roots Roots, tg *Target, p Protected, reason string) {
	t.Helper()
	err := Prove(roots, tg, p)
	if !errors.Is(err, ErrRefused) || RefusedReason(err) != reason {
		t.Errorf("%s: Prove = %v (reason %q), want refused %s", what, err, RefusedReason(err), reason)
		return
	}
	if !strings.HasPrefix(err.Error(), "refused: not a container: ") {
		t.Errorf("%s: %q", what, err)
	}
}

// FuzzProcDecoders: the /proc decoders Prove and ListenerPids rely on
// never panic on any input.
func FuzzProcDecoders(f *testing.F) {
	f.Add([]byte("42 (a) b) S 1 42 42 0 -1 4194560 100 0 0 0 0 0 0 0 20 0 1 0 123456 1000 10"))
	f.Add([]byte("6:freezer:/abc\n0::/x\n"))
	f.Add([]byte("  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   0: 0100007F:1092 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 12345 1 0 100 0 0 10 0\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _ = parseStatStart(b)
		_ = cgroupOf(b, true)
		_ = cgroupOf(b, false)
		_ = parseListeners(b, map[int]bool{4242: true})
	})
}

func TestParseListeners(t *testing.T) {
	b := []byte("  sl  local_address rem_address   st ...\n" +
		"   0: 0100007F:1092 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 12345 1 0 100 0 0 10 0\n" +
		"   1: 0100007F:1092 0100007F:D431 01 00000000:00000000 00:00000000 00000000     0        0 999 1 0 100 0 0 10 0\n" +
		"   2: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 777 1 0 100 0 0 10 0\n")
	got := parseListeners(b, map[int]bool{0x1092: true})
	if len(got) != 1 || !got["12345"] {
		t.Fatalf("listeners %v, want the LISTEN socket 12345 on 4242 only", got)
	}
}
