package responder

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/containsec/contain/internal/freezer"
	"github.com/containsec/contain/internal/testenv"
	"github.com/containsec/contain/schemas/containv1"
)

func TestAddrPort(t *testing.T) {
	for a, want := range map[string]int{
		"127.0.0.1:4222": 4222, "nats://127.0.0.1:4222": 4222, "tls://u:p@h:4443": 4443,
		"[::1]:9000": 9000, "clickhouse://h:9440/db?x=1": 9440,
	} {
		if got, err := addrPort(a); err != nil || got != want {
			t.Errorf("addrPort(%q) = %d, %v; want %d", a, got, err, want)
		}
	}
	for _, a := range []string{"", "h", "h:0", "h:70000", "h:x"} {
		if _, err := addrPort(a); err == nil {
			t.Errorf("addrPort(%q) accepted", a)
		}
	}
}

// moveSelf moves this test process into a new cgroup2 directory named
// name, and back to where it was at cleanup.
func moveSelf(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		t.Fatal(err)
	}
	var was string
	for _, l := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(l, "0::"); ok {
			was = rest
		}
	}
	dir := filepath.Join(testenv.Cgroup2Root, name)
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "cgroup.procs"), []byte(strconv.Itoa(os.Getpid())), 0); err != nil {
		_ = os.Remove(dir)
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = os.WriteFile(filepath.Join(dir, "cgroup.freeze"), []byte("0"), 0)
		if err := os.WriteFile(filepath.Join(testenv.Cgroup2Root, was, "cgroup.procs"), []byte(strconv.Itoa(os.Getpid())), 0); err != nil {
			t.Errorf("moving back to %s: %v", was, err)
		}
		_ = os.Remove(dir)
	})
	return dir
}

// freeTCP returns a free loopback port.
func freeTCP(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// TestRefuseNonContainers publishes forged alerts (as the analyzer
// publishes them) naming what is not a container: host units (made by
// hand here, each holding a process, so a search of the cgroup tree by
// name would find them), the root cgroup, a hand-made cgroup named like a
// container id, contain's own cgroup (under a runtime state that names
// it), a real container whose process listens on a protected address (as
// the NATS server would) and a real container's id with a path-traversal
// suffix. Each is recorded FAILED "refused: not a container", counted,
// and nothing is frozen; a real runc container is still paused and
// released.
func TestRefuseNonContainers(t *testing.T) {
	const hex64 = "c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00"
	const ownID = "5e1f5e1f5e1f5e1f5e1f5e1f5e1f5e1f5e1f5e1f5e1f5e1f5e1f5e1f5e1f5e1f"
	testenv.RequireRoot(t)
	port := freeTCP(t)
	forged := t.TempDir()
	h := start(t, func(c *Config) {
		c.Snapshot = false
		c.MaxPausesPerMinute = 0
		c.ProtectAddrs = []string{"nats://127.0.0.1:" + strconv.Itoa(port)}
		c.ContainerdRuncRoot = forged // a runtime state naming contain's own cgroup
	})
	units := []*testenv.HandCgroup{
		testenv.MakeCgroup(t, "init.scope"),
		testenv.MakeCgroup(t, "system.slice/sshd.service"),
		testenv.MakeCgroup(t, "user.slice/user-1000.slice/session-7.scope"),
		testenv.MakeCgroup(t, hex64),
	}
	c := testenv.RunContainer(t, "refuse", testenv.ContainerSpec{})
	svc := testenv.RunContainer(t, "refuse-svc", testenv.ContainerSpec{HostNetwork: true,
		Args: []string{"/bin/httpd", "-f", "-p", "127.0.0.1:" + strconv.Itoa(port)}})
	testenv.WaitFor(t, 10*time.Second, "the service container listening", func() bool {
		conn, err := net.Dial("tcp", "127.0.0.1:"+strconv.Itoa(port))
		if err == nil {
			conn.Close()
		}
		return err == nil
	})
	if err := h.r.protect.refresh(); err != nil {
		t.Fatal(err)
	}

	own := moveSelf(t, ownID)
	st, err := os.ReadFile("/proc/self/stat")
	if err != nil {
		t.Fatal(err)
	}
	fields := strings.Fields(string(st[strings.LastIndexByte(string(st), ')')+1:]))
	if err := os.MkdirAll(filepath.Join(forged, "contain", ownID), 0o700); err != nil {
		t.Fatal(err)
	}
	state := fmt.Sprintf(`{"id":%q,"init_process_pid":%d,"init_process_start":%s,"cgroup_paths":{"":%q}}`, ownID, os.Getpid(), fields[19], own)
	if err := os.WriteFile(filepath.Join(forged, "contain", ownID, "state.json"), []byte(state), 0o600); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct{ id, reason string }{
		{"init.scope", freezer.RefuseUnknown},
		{"", freezer.RefuseNoID},
		{"/", freezer.RefuseInvalidID},
		{"system.slice", freezer.RefuseUnknown},
		{"sshd.service", freezer.RefuseUnknown},
		{"session-7.scope", freezer.RefuseUnknown},
		{hex64, freezer.RefuseUnknown},
		{ownID, freezer.RefuseProtected},
		{svc.ID, freezer.RefuseProtected},
		{c.ID + "/../init.scope", freezer.RefuseInvalidID},
		{c.ID + "/../../system.slice", freezer.RefuseInvalidID},
	} {
		before := testutil.ToFloat64(h.r.refusedTotal.WithLabelValues(tc.reason))
		h.publish(h.alert(tc.id, 1))
		a := wantAction(t, h.next(), containv1.Action_TYPE_PAUSE, containv1.Action_RESULT_FAILED, tc.id)
		d := detail(t, a)
		if !strings.HasPrefix(d.Error, "refused: not a container: ") || !strings.HasPrefix(d.Decision, "refused") || a.Method != "" {
			t.Errorf("%q: decision %q error %q method %q", tc.id, d.Decision, d.Error, a.Method)
		}
		if got := testutil.ToFloat64(h.r.refusedTotal.WithLabelValues(tc.reason)); got != before+1 {
			t.Errorf("%q: refused_total{reason=%q} %v -> %v; error %s", tc.id, tc.reason, before, got, d.Error)
		}
		t.Logf("%q: %s", tc.id, d.Error)
	}
	for _, u := range units {
		if u.Frozen(t) {
			t.Errorf("%s frozen", u.Rel)
		}
	}
	if b, _ := os.ReadFile(filepath.Join(own, "cgroup.events")); strings.Contains(string(b), "frozen 1") {
		t.Error("contain's own cgroup frozen")
	}
	for _, x := range []*testenv.Container{c, svc} {
		if s := freezerState(t, x); s != "THAWED" {
			t.Errorf("%s is %s", x.ID, s)
		}
	}

	// A real container is still paused and released.
	h.publish(h.alert(c.ID, 1))
	wantAction(t, h.next(), containv1.Action_TYPE_PAUSE, containv1.Action_RESULT_OK, c.ID)
	if s := freezerState(t, c); s != "FROZEN" {
		t.Fatalf("real container %s after PAUSE/OK", s)
	}
	rel, err := h.release(c.ID, "alice", "test")
	if err != nil {
		t.Fatal(err)
	}
	wantAction(t, rel, containv1.Action_TYPE_RELEASE, containv1.Action_RESULT_OK, c.ID)
	if s := freezerState(t, c); s != "THAWED" {
		t.Fatalf("real container %s after release", s)
	}
}
