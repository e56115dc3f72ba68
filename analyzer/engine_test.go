package analyzer

import (
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/containsec/contain/schemas/containv1"
)

var ids = containv1.NewIDGen()

const t0 = int64(1_700_000_000_000_000_000)

func sec(s float64) int64 { return t0 + int64(s*float64(time.Second)) }

func base(ctr string, at int64) *containv1.Event {
	return &containv1.Event{
		Id: ids.Next(), Host: "h1", ContainerId: ctr, ContainerName: ctr + "-name",
		ImageRef: "demo:1", ImageDigest: "sha256:aaaa", WallNs: at, MonoNs: uint64(at - t0), CgroupId: 42,
		SchemaVersion: containv1.SchemaVersion,
	}
}

func execEv(ctr string, at int64, filename string, argv ...string) *containv1.Event {
	ev := base(ctr, at)
	ev.Kind = containv1.Kind_KIND_EXEC
	if len(argv) == 0 {
		argv = []string{filename}
	}
	ev.Body = &containv1.Event_Exec{Exec: &containv1.Exec{
		Proc:     &containv1.Process{Pid: 10, Tgid: 10, Ppid: 1, Uid: 1000, Euid: 1000, Comm: filename},
		Filename: filename, Argv: argv, Argc: uint32(len(argv)),
	}}
	return ev
}

func sysEv(ctr string, at int64, name string) *containv1.Event {
	ev := base(ctr, at)
	ev.Kind = containv1.Kind_KIND_SYSCALL
	ev.Body = &containv1.Event_Syscall{Syscall: &containv1.Syscall{Mode: containv1.Syscall_MODE_FIRST, Name: name}}
	return ev
}

func netEv(ctr string, at int64, op containv1.Network_Op, addr [4]byte, port uint32) *containv1.Event {
	ev := base(ctr, at)
	ev.Kind = containv1.Kind_KIND_NETWORK
	mapped := append([]byte{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff}, addr[:]...)
	n := &containv1.Network{Op: op, Protocol: containv1.Network_PROTOCOL_TCP, Family: 2}
	if op == containv1.Network_OP_CONNECT {
		n.RemoteAddr, n.RemotePort = mapped, port
	} else {
		n.LocalAddr, n.LocalPort = mapped, port
	}
	ev.Body = &containv1.Event_Network{Network: n}
	return ev
}

func fileEv(ctr string, at int64, op containv1.File_Op, p string) *containv1.Event {
	ev := base(ctr, at)
	ev.Kind = containv1.Kind_KIND_FILE
	ev.Body = &containv1.Event_File{File: &containv1.File{Op: op, Path: p}}
	return ev
}

func testConfig() Config {
	c := DefaultConfig()
	c.LearningWindow = 3 * time.Second
	c.GroupWindow = time.Minute
	return c
}

func newEngine(t testing.TB, cfg Config, pf ProfileFunc) *Engine {
	t.Helper()
	e, err := NewEngine(cfg, pf)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// learn feeds a benign workload: the entrypoint, a sleep loop, a few
// syscalls, a listen port, a peer and a write prefix.
func learn(e *Engine, ctr string) {
	e.Observe(execEv(ctr, sec(0), "/bin/httpd", "/bin/httpd", "-f", "-p", "8080"))
	e.Observe(netEv(ctr, sec(0.1), containv1.Network_OP_LISTEN, [4]byte{0, 0, 0, 0}, 8080))
	for i, s := range []string{"read", "write", "accept4", "openat", "close"} {
		e.Observe(sysEv(ctr, sec(0.2+float64(i)/100), s))
	}
	e.Observe(netEv(ctr, sec(0.3), containv1.Network_OP_CONNECT, [4]byte{10, 0, 0, 5}, 5432))
	e.Observe(fileEv(ctr, sec(0.4), containv1.File_OP_OPEN_WRITE, "/var/www/cache/x"))
	for i := 1; i <= 2; i++ {
		e.Observe(execEv(ctr, sec(float64(i)), "/bin/sleep", "sleep", "1"))
	}
}

func alertOf(t *testing.T, out []*containv1.Event) *containv1.Alert {
	t.Helper()
	if len(out) != 1 {
		t.Fatalf("got %d alerts, want 1", len(out))
	}
	a := out[0].GetAlert()
	if a == nil || out[0].Kind != containv1.Kind_KIND_ALERT {
		t.Fatalf("not an alert: %v", out[0])
	}
	return a
}

func hasCode(a *containv1.Alert, code string) *containv1.Reason {
	for _, r := range a.Reasons {
		if r.Code == code {
			return r
		}
	}
	return nil
}

func TestEngineLearnsThenAlertsUnseenExec(t *testing.T) {
	e := newEngine(t, testConfig(), nil)
	learn(e, "c1")
	if out := e.Observe(execEv("c1", sec(2.5), "/bin/cat")); len(out) != 0 {
		t.Fatalf("alert during learning: %v", out)
	}
	// Known behaviour after the window raises nothing.
	if out := e.Observe(execEv("c1", sec(4), "/bin/sleep", "sleep", "1")); len(out) != 0 {
		t.Fatalf("alert for learned exec: %v", out)
	}
	trig := execEv("c1", sec(5), "/bin/wget", "wget", "http://10.0.0.9/x")
	out := e.Observe(trig)
	a := alertOf(t, out)
	r := hasCode(a, CodeExecUnseen)
	if r == nil {
		t.Fatalf("no exec.unseen reason: %v", a.Reasons)
	}
	want := `"/bin/wget" was never executed by image demo:1 during learning (learned 3 executables over 3s)`
	if r.Message != want {
		t.Errorf("message\n got %s\nwant %s", r.Message, want)
	}
	if len(r.Mitre) == 0 || r.Mitre[0] != "T1059" {
		t.Errorf("mitre %v", r.Mitre)
	}
	if a.Score <= 0 || a.Score > 1 || a.Priority == "" || a.Rule == "" || a.BaselineVersion == "" || a.Count != 1 {
		t.Errorf("alert fields: %+v", a)
	}
	if !proto.Equal(a.Trigger, trig) || string(a.EvidenceIds[0]) != string(trig.Id) {
		t.Error("trigger or evidence not copied")
	}
	al := out[0]
	if al.ContainerId != "c1" || al.ContainerName != "c1-name" || al.ImageRef != "demo:1" || al.ImageDigest != "sha256:aaaa" ||
		al.Host != "h1" || al.CgroupId != 42 || len(al.Id) != 16 {
		t.Errorf("envelope not copied: %v", al)
	}

	shell := alertOf(t, e.Observe(execEv("c1", sec(6), "/bin/sh", "sh", "-c", "id")))
	if hasCode(shell, CodeExecShell) == nil {
		t.Fatalf("shell reason missing: %v", shell.Reasons)
	}
	if shell.Score <= a.Score {
		t.Errorf("shell score %v not above wget's %v", shell.Score, a.Score)
	}
	py := alertOf(t, e.Observe(execEv("c1", sec(6), "/usr/bin/python3.12")))
	if hasCode(py, CodeExecInterpreter) == nil || py.Score <= a.Score {
		t.Errorf("interpreter: %v", py)
	}
	other := alertOf(t, e.Observe(execEv("c1", sec(6), "/usr/bin/lsof")))
	if other.Score >= py.Score || other.Score >= shell.Score {
		t.Errorf("plain binary %v should score under shell %v and interpreter %v", other.Score, shell.Score, py.Score)
	}
}

func TestEngineGroupsRepeats(t *testing.T) {
	e := newEngine(t, testConfig(), nil)
	learn(e, "c1")
	alertOf(t, e.Observe(execEv("c1", sec(10), "/bin/wget")))
	for i := range 5 {
		if out := e.Observe(execEv("c1", sec(11+float64(i)), "/bin/wget")); len(out) != 0 {
			t.Fatalf("repeat %d re-alerted", i)
		}
	}
	// Another container of the same image is its own group.
	learnOther := alertOf(t, e.Observe(execEv("c2", sec(12), "/bin/wget")))
	if learnOther.Count != 1 {
		t.Errorf("count %d", learnOther.Count)
	}
	// After the window the next alert carries the grouped count.
	a := alertOf(t, e.Observe(execEv("c1", sec(80), "/bin/wget")))
	if a.Count != 6 {
		t.Errorf("count %d, want 6 (5 grouped + this one)", a.Count)
	}
	if s := e.Stats(); s.Grouped != 5 {
		t.Errorf("grouped %d", s.Grouped)
	}
	// Rarity: the image showed it repeatedly, so it scores lower now.
	if first := learnOther.Score; a.Score >= first {
		t.Errorf("repeated deviation score %v not below %v", a.Score, first)
	}
}

func TestEngineReplayIsDeterministic(t *testing.T) {
	var evs []*containv1.Event
	evs = append(evs, execEv("c1", sec(0), "/bin/httpd"))
	for i := range 50 {
		evs = append(evs, sysEv("c1", sec(float64(i)/10), []string{"read", "write", "poll"}[i%3]))
	}
	evs = append(evs, execEv("c1", sec(9), "/bin/sh", "sh", "-c", "x"), sysEv("c1", sec(9.1), "ptrace"),
		fileEv("c1", sec(9.2), containv1.File_OP_CREATE, "/etc/cron.d/x"), execEv("c1", sec(9.3), "/bin/sh", "sh", "-c", "x"))
	run := func() []*containv1.Event {
		e := newEngine(t, testConfig(), nil)
		var out []*containv1.Event
		for _, ev := range evs {
			out = append(out, e.Observe(ev)...)
		}
		return out
	}
	a, b := run(), run()
	if len(a) != 3 || len(a) != len(b) {
		t.Fatalf("alerts %d and %d, want 3", len(a), len(b))
	}
	for i := range a {
		if !proto.Equal(a[i], b[i]) {
			t.Errorf("alert %d differs:\n%v\n%v", i, a[i], b[i])
		}
	}
	if hasCode(a[1].GetAlert(), CodePtrace) == nil || hasCode(a[2].GetAlert(), CodeCronPersist) == nil {
		t.Errorf("reasons: %v / %v", a[1].GetAlert().Reasons, a[2].GetAlert().Reasons)
	}
}

func TestEngineUnknownImage(t *testing.T) {
	e := newEngine(t, testConfig(), nil)
	mk := func(at int64, fn string) *containv1.Event {
		ev := execEv("c9", at, fn)
		ev.ImageRef, ev.ImageDigest = "", ""
		return ev
	}
	e.Observe(mk(sec(0), "/bin/app"))
	a := alertOf(t, e.Observe(mk(sec(5), "/bin/nc")))
	if !strings.Contains(a.Reasons[0].Message+a.Reasons[1].Message, "container:c9") {
		t.Errorf("message should name the container key: %v", a.Reasons)
	}
	if e.Baseline("container:c9") == nil {
		t.Fatal("no baseline keyed container:c9")
	}
	// Host events and kinds the analyzer does not score are counted.
	host := execEv("", sec(5), "/bin/nc")
	e.Observe(host)
	e.Observe(&containv1.Event{Kind: containv1.Kind_KIND_LOSS, ContainerId: "c9", WallNs: sec(5)})
	bad := execEv("c9", 0, "/bin/x")
	e.Observe(bad)
	empty := &containv1.Event{Kind: containv1.Kind_KIND_EXEC, ContainerId: "c9", WallNs: sec(6)}
	e.Observe(empty)
	s := e.Stats()
	if s.Host != 1 || s.Ignored != 1 || s.Invalid != 2 {
		t.Errorf("stats %+v", s)
	}
}

func TestEngineOutOfOrderAndDuplicates(t *testing.T) {
	e := newEngine(t, testConfig(), nil)
	learn(e, "c1")
	// Converge through a later event.
	e.Observe(execEv("c1", sec(4), "/bin/sleep", "sleep", "1"))
	// A late event from inside the learning window is learned, not alerted.
	if out := e.Observe(execEv("c1", sec(2.9), "/bin/date")); len(out) != 0 {
		t.Fatalf("late learning-era event alerted: %v", out)
	}
	if out := e.Observe(execEv("c1", sec(5), "/bin/date")); len(out) != 0 {
		t.Fatalf("late-learned exec alerted: %v", out)
	}
	if e.Stats().Late != 1 {
		t.Errorf("late %d", e.Stats().Late)
	}
	// A redelivered deviating event raises one alert.
	ev := execEv("c1", sec(6), "/bin/nc")
	alertOf(t, e.Observe(ev))
	if out := e.Observe(proto.Clone(ev).(*containv1.Event)); len(out) != 0 {
		t.Fatal("duplicate alerted")
	}
	if e.Stats().Duplicates != 1 {
		t.Errorf("duplicates %d", e.Stats().Duplicates)
	}
	// An earlier first event moves the window start back, deterministically.
	e2 := newEngine(t, testConfig(), nil)
	e2.Observe(execEv("c1", sec(2), "/bin/a"))
	e2.Observe(execEv("c1", sec(0), "/bin/b"))
	if out := e2.Observe(execEv("c1", sec(3.5), "/bin/c")); len(out) != 1 {
		t.Fatalf("window should have ended at 3s from the earliest event: %v", out)
	}
}

func TestEngineKinds(t *testing.T) {
	e := newEngine(t, testConfig(), nil)
	learn(e, "c1")
	cases := []struct {
		ev   *containv1.Event
		code string
	}{
		{sysEv("c1", sec(5), "unshare"), CodeNamespace},
		{sysEv("c1", sec(5), "chroot"), CodeChroot},
		{sysEv("c1", sec(5), "keyctl"), CodeSyscallSensitive},
		{sysEv("c1", sec(5), "ioctl"), CodeSyscallUnseen},
		{sysEv("c1", sec(5), "sched_yield"), CodeSyscallRoutine},
		{netEv("c1", sec(5), containv1.Network_OP_CONNECT, [4]byte{10, 9, 9, 9}, 4443), CodePeerUnseen},
		{netEv("c1", sec(5), containv1.Network_OP_CONNECT, [4]byte{10, 9, 9, 9}, 4444), CodeMinerPort},
		{netEv("c1", sec(5), containv1.Network_OP_LISTEN, [4]byte{}, 31337), CodeListenNew},
		{fileEv("c1", sec(5), containv1.File_OP_OPEN_WRITE, "/etc/passwd"), CodeAccountChange},
		{fileEv("c1", sec(5), containv1.File_OP_OPEN_WRITE, "/etc/app.conf"), CodeWriteSystem},
		{fileEv("c1", sec(5), containv1.File_OP_CREATE, "/data/dump/x"), CodeWriteUnseen},
		{fileEv("c1", sec(5), containv1.File_OP_OPEN_READ, "/etc/shadow"), CodeReadSensitive},
	}
	for _, c := range cases {
		a := alertOf(t, e.Observe(c.ev))
		if a.Reasons[0].Code != c.code {
			t.Errorf("%v: code %s, want %s", c.ev.Body, a.Reasons[0].Code, c.code)
		}
	}
	for _, ev := range []*containv1.Event{
		sysEv("c1", sec(6), "read"),
		netEv("c1", sec(6), containv1.Network_OP_CONNECT, [4]byte{10, 0, 0, 5}, 5432),
		netEv("c1", sec(6), containv1.Network_OP_LISTEN, [4]byte{}, 8080),
		fileEv("c1", sec(6), containv1.File_OP_OPEN_WRITE, "/var/www/cache/y"),
		fileEv("c1", sec(6), containv1.File_OP_OPEN_READ, "/var/www/index.html"),
		fileEv("c1", sec(6), containv1.File_OP_OPEN_WRITE, "/dev/null"),
	} {
		if out := e.Observe(ev); len(out) != 0 {
			t.Errorf("benign %v alerted: %v", ev.Body, out[0].GetAlert().Reasons)
		}
	}
	// uid: root after a non-root learning period.
	root := execEv("c1", sec(7), "/bin/sleep", "sleep", "1")
	root.GetExec().Proc.Euid, root.GetExec().Proc.Uid = 0, 0
	if a := alertOf(t, e.Observe(root)); a.Reasons[0].Code != CodeUIDRoot {
		t.Errorf("uid: %v", a.Reasons)
	}
}

func TestEngineDeclaredProfile(t *testing.T) {
	prof := &Profile{
		Ref:           "sha256:aaaa@1",
		Entrypoint:    []string{"/bin/httpd"},
		ListenPorts:   []string{"8080/tcp"},
		Peers:         []string{"10.0.0.0/24:5432"},
		WritablePaths: []string{"/var/www"},
	}
	e := newEngine(t, testConfig(), func(d string) *Profile {
		if d == "sha256:aaaa" {
			return prof
		}
		return nil
	})
	// Contradictions are scored while learning.
	e.Observe(execEv("c1", sec(0), "/bin/httpd"))
	a := alertOf(t, e.Observe(netEv("c1", sec(0.5), containv1.Network_OP_LISTEN, [4]byte{}, 9999)))
	if a.Reasons[0].Code != CodeListenUndeclared {
		t.Errorf("%v", a.Reasons)
	}
	a = alertOf(t, e.Observe(fileEv("c1", sec(0.6), containv1.File_OP_CREATE, "/opt/x")))
	if a.Reasons[0].Code != CodeWriteUndeclared {
		t.Errorf("%v", a.Reasons)
	}
	a = alertOf(t, e.Observe(netEv("c1", sec(0.7), containv1.Network_OP_CONNECT, [4]byte{1, 2, 3, 4}, 443)))
	if a.Reasons[0].Code != CodePeerUndeclared {
		t.Errorf("%v", a.Reasons)
	}
	// Declared behaviour is allowed after learning though never seen.
	for _, ev := range []*containv1.Event{
		netEv("c1", sec(5), containv1.Network_OP_LISTEN, [4]byte{}, 8080),
		netEv("c1", sec(5), containv1.Network_OP_CONNECT, [4]byte{10, 0, 0, 7}, 5432),
		fileEv("c1", sec(5), containv1.File_OP_CREATE, "/var/www/new/file"),
	} {
		if out := e.Observe(ev); len(out) != 0 {
			t.Errorf("declared %v alerted: %v", ev.Body, out[0].GetAlert().Reasons)
		}
	}
}

func TestEngineConvergesOnNovelty(t *testing.T) {
	cfg := testConfig()
	cfg.LearningWindow = time.Hour
	cfg.Convergence = ConvergenceConfig{NoveltyThreshold: 0.01, WindowEvents: 100, MinObservations: 500, MinDuration: time.Second}
	e := newEngine(t, cfg, nil)
	e.Observe(execEv("c1", sec(0), "/bin/app"))
	i := 0
	for ; i < 5000 && e.Baseline("sha256:aaaa").Phase == PhaseLearning; i++ {
		e.Observe(sysEv("c1", sec(0.01*float64(i)), []string{"read", "write"}[i%2]))
	}
	b := e.Baseline("sha256:aaaa")
	if b.Phase != PhaseConverged {
		t.Fatalf("not converged after %d events (novelty %v)", i, b.Novelty)
	}
	if b.Observations < 500 {
		t.Errorf("converged after %d observations, below the minimum", b.Observations)
	}
	if out := e.Observe(sysEv("c1", sec(60), "ptrace")); len(out) != 1 {
		t.Error("no alert after novelty convergence")
	}
	// A stream that keeps showing new behaviour keeps learning.
	e2 := newEngine(t, cfg, nil)
	for i := range 2000 {
		e2.Observe(sysEv("c1", sec(0.01*float64(i)), "s"+strings.Repeat("x", i%3)+strconv.Itoa(i/2)))
	}
	if ph := e2.Baseline("sha256:aaaa").Phase; ph != PhaseLearning {
		t.Errorf("novel stream converged: %v", ph)
	}
}

func TestEngineLifecycleOps(t *testing.T) {
	cfg := testConfig()
	e := newEngine(t, cfg, nil)
	learn(e, "c1")
	key := "sha256:aaaa"
	// Converged absorbs a low-score deviation (argv shape) after reporting it.
	e.Observe(execEv("c1", sec(5), "/bin/sleep", "sleep", "--help"))
	if out := e.Observe(execEv("c1", sec(6), "/bin/sleep", "sleep", "--help")); len(out) != 0 {
		t.Errorf("absorbed argv shape alerted again")
	}
	if err := e.Lock(key); err != nil {
		t.Fatal(err)
	}
	if e.Baseline(key).Phase != PhaseLocked {
		t.Fatal("not locked")
	}
	e.Observe(execEv("c1", sec(7), "/bin/sleep", "sleep", "-x"))
	if out := e.Observe(execEv("c2", sec(8), "/bin/sleep", "sleep", "-x")); len(out) != 1 {
		t.Errorf("locked baseline absorbed a deviation")
	}
	v := e.Baseline(key).Version
	if err := e.Unlock(key); err != nil {
		t.Fatal(err)
	}
	// A new window starts at the next event.
	if out := e.Observe(execEv("c1", sec(100), "/bin/newtool")); len(out) != 0 {
		t.Errorf("alert while relearning: %v", out)
	}
	if out := e.Observe(execEv("c1", sec(104), "/bin/newtool")); len(out) != 0 {
		t.Errorf("relearned exec alerted")
	}
	if err := e.Reset(key); err != nil {
		t.Fatal(err)
	}
	b := e.Baseline(key)
	if b.Size() != 0 || b.Phase != PhaseLearning || b.Version <= v {
		t.Errorf("reset: size %d phase %v version %d", b.Size(), b.Phase, b.Version)
	}
	if err := e.Lock("nope"); err == nil {
		t.Error("lock of unknown key succeeded")
	}
}

func seqEv(ctr string, at int64, tid uint32, seq ...uint32) *containv1.Event {
	ev := base(ctr, at)
	ev.Kind = containv1.Kind_KIND_SYSCALL
	ev.Body = &containv1.Event_Syscall{Syscall: &containv1.Syscall{
		Mode: containv1.Syscall_MODE_SEQUENCE, Sequence: seq, Proc: &containv1.Process{Pid: tid, Tgid: tid},
	}}
	return ev
}

// The collector cuts a thread's syscall stream into sequence events (at
// sequence_batch, or at each sequence_flush for a slow thread, often one or
// two syscalls): a thread's history carries across the cuts, for learning
// and scoring, and a stream cut into one-syscall events is not ignored.
func TestSequenceAcrossEvents(t *testing.T) {
	e := newEngine(t, testConfig(), nil)
	learn(e, "c1")
	// Learning: thread 7 repeats 1 2 3 4, one or two syscalls per event;
	// thread 8 interleaves its own 9 9 9 stream.
	at := 0.5
	for range 20 {
		for _, part := range [][]uint32{{1}, {2, 3}, {4}} {
			e.Observe(seqEv("c1", sec(at), 7, part...))
			e.Observe(seqEv("c1", sec(at), 8, 9))
			at += 0.01
		}
	}
	e.Observe(execEv("c1", sec(4), "/bin/sleep", "sleep", "1")) // converges
	// The learned cycle, cut elsewhere, raises nothing; nor does thread 8.
	for i, part := range [][]uint32{{1, 2}, {3}, {4, 1}, {2}, {3, 4}, {1, 2, 3, 4}} {
		if out := e.Observe(seqEv("c1", sec(5+float64(i)/10), 7, part...)); len(out) != 0 {
			t.Fatalf("learned cycle alerted at part %d: %v", i, alertOf(t, out))
		}
		if out := e.Observe(seqEv("c1", sec(5+float64(i)/10), 8, 9, 9)); len(out) != 0 {
			t.Fatalf("thread 8's stream alerted: %v", alertOf(t, out))
		}
	}
	// A new order, delivered one syscall per event: only the joined
	// stream shows it (4 1 3, 1 3 2, 3 2 4, ...), over a window.
	var alerted *containv1.Alert
	order := []uint32{1, 3, 2, 4, 3, 1, 4, 2}
	for i, nr := range slices.Concat(order, order, order, order) {
		if out := e.Observe(seqEv("c1", sec(7+float64(i)/100), 7, nr)); len(out) != 0 && alerted == nil {
			alerted = alertOf(t, out)
		}
	}
	if alerted == nil || hasCode(alerted, CodeSyscallSequence) == nil {
		t.Fatalf("a new syscall order cut into one-syscall events raised %v, want %s", alerted, CodeSyscallSequence)
	}
}

// A wait the container was already in when learning began returns, when a
// freeze or a signal interrupts it, with an ERESTART* code the program
// never sees: not a new behaviour, so no alert; the same syscall returning
// normally as a first use is scored, and an interrupted non-wait is too.
func TestInterruptedWaitNotScored(t *testing.T) {
	e := newEngine(t, testConfig(), nil)
	learn(e, "c1")
	e.Observe(execEv("c1", sec(4), "/bin/sleep", "sleep", "1")) // converges
	first := func(at float64, name string, ret int64) *containv1.Event {
		ev := sysEv("c1", sec(at), name)
		ev.GetSyscall().Ret = ret
		return ev
	}
	for i, ret := range []int64{-516, -512, -514} {
		if out := e.Observe(first(5+float64(i), []string{"clock_nanosleep", "epoll_wait", "wait4"}[i], ret)); len(out) != 0 {
			t.Fatalf("interrupted wait (ret %d) alerted: %v", ret, alertOf(t, out))
		}
	}
	if e.Stats().Kernel != 3 {
		t.Fatalf("kernel/interrupted count %d, want 3", e.Stats().Kernel)
	}
	// Learned: clock_nanosleep returning normally later raises nothing.
	if out := e.Observe(first(9, "clock_nanosleep", 0)); len(out) != 0 {
		t.Fatalf("a learned interrupted wait alerted when it returned normally: %v", alertOf(t, out))
	}
	// A first use returning normally is scored.
	if a := alertOf(t, e.Observe(first(10, "ppoll", 0))); hasCode(a, CodeSyscallRoutine) == nil {
		t.Fatalf("ppoll: %v", a)
	}
	// ERESTART* on a syscall that is not a wait is scored too.
	if a := alertOf(t, e.Observe(first(20, "mknodat", -512))); hasCode(a, CodeSyscallUnseen) == nil {
		t.Fatalf("mknodat: %v", a)
	}
}
