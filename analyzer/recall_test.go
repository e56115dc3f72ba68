package analyzer

import (
	"testing"

	"github.com/containsec/contain/schemas/containv1"
)

// TestNetScan: connections to scanThreshold distinct endpoints by one
// process tree within the window raise one net.scan; repeated connections
// to a few peers (a client's pool) do not.
func TestNetScan(t *testing.T) {
	e := newEngine(t, testConfig(), nil)
	learn(e, "c1")
	// A pool: 200 connections to 3 endpoints.
	for i := range 200 {
		for _, al := range e.Observe(netEv("c1", sec(5+float64(i)/100), containv1.Network_OP_CONNECT, [4]byte{10, 0, 0, 5}, 5432+uint32(i%3))) {
			if hasCode(al.GetAlert(), CodeNetScan) != nil {
				t.Fatalf("connection pool named a scan: %v", al.GetAlert().Reasons)
			}
		}
	}
	// An upstream's rollout: 30 new addresses at the learned port 5432.
	for i := range 30 {
		for _, al := range e.Observe(netEv("c1", sec(8+float64(i)/100), containv1.Network_OP_CONNECT, [4]byte{10, 0, 1, byte(i)}, 5432)) {
			if hasCode(al.GetAlert(), CodeNetScan) != nil || al.GetAlert().Score >= 0.5 {
				t.Fatalf("new addresses of a learned service: %v (score %v)", al.GetAlert().Reasons, al.GetAlert().Score)
			}
		}
	}
	scans := 0
	for port := range uint32(2 * scanThreshold) {
		for _, al := range e.Observe(netEv("c1", sec(10+float64(port)/100), containv1.Network_OP_CONNECT, [4]byte{10, 9, 9, 9}, 20+port)) {
			if hasCode(al.GetAlert(), CodeNetScan) != nil {
				scans++
			}
		}
	}
	if scans != 1 {
		t.Errorf("port scan: %d net.scan alerts, want 1", scans)
	}
}

// TestAppletWithoutExec: a busybox shell's child that runs an applet
// without exec (only its comm changes) is observed as that applet's exec:
// awk is named an interpreter; the applets the image ran while learning
// raise nothing.
func TestAppletWithoutExec(t *testing.T) {
	e := newEngine(t, testConfig(), nil)
	sh := func(at int64) *containv1.Event {
		ev := execEv("c1", at, "/bin/sh", "sh", "-c", "x")
		ev.GetExec().Proc = &containv1.Process{Pid: 2, Tgid: 2, Ppid: 1, Comm: "sh"}
		return ev
	}
	child := func(at int64, tgid uint32, comm, syscall string) []*containv1.Event {
		fork := base("c1", at)
		fork.Kind = containv1.Kind_KIND_PROCESS
		fork.Body = &containv1.Event_Process{Process: &containv1.ProcessLifecycle{
			Proc: &containv1.Process{Pid: 2, Tgid: 2, Ppid: 1, Comm: "sh"}, Op: containv1.ProcessLifecycle_OP_FORK, ChildTgid: tgid}}
		s := sysEv("c1", at, syscall)
		s.GetSyscall().Proc = &containv1.Process{Pid: tgid, Tgid: tgid, Ppid: 2, Comm: comm}
		return []*containv1.Event{fork, s}
	}
	e.Observe(sh(sec(0)))
	for _, ev := range child(sec(0.5), 3, "cat", "read") {
		e.Observe(ev)
	}
	for i := 1; i <= 4; i++ {
		e.Observe(sysEv("c1", sec(float64(i)), "read"))
	}
	var got []*containv1.Alert
	for _, ev := range child(sec(5), 4, "cat", "read") {
		for _, al := range e.Observe(ev) {
			got = append(got, al.GetAlert())
		}
	}
	if len(got) != 0 {
		t.Errorf("learned applet alerted: %v", got[0].Reasons)
	}
	var awk *containv1.Alert
	for _, ev := range child(sec(6), 5, "awk", "read") {
		for _, al := range e.Observe(ev) {
			if hasCode(al.GetAlert(), CodeExecInterpreter) != nil {
				awk = al.GetAlert()
			}
		}
	}
	if awk == nil {
		t.Fatal("awk run without exec: no exec.interpreter")
	}
	// A renamed process claiming the runtime's name is not an applet.
	for _, ev := range child(sec(7), 6, "runc:[2:INIT]", "read") {
		for _, al := range e.Observe(ev) {
			if hasCode(al.GetAlert(), CodeExecUnseen) != nil {
				t.Errorf("runtime-like comm taken for an applet: %v", al.GetAlert().Reasons)
			}
		}
	}
}

// TestAppletLearnedFromRename: the collector reports every rename
// (prctl PR_SET_NAME, a sensitive-mode prctl whose comm is the new name),
// so an applet a service's shell runs without exec is learned while its
// image learns even when none of the applet's own events is reported.
// After a restart of contain, the collector reports first uses again and
// one falls in that applet: it is the learned applet, not an unseen
// executable run by an interpreter (issue 7: a restart under a running
// fleet paused healthy replicas so).
func TestAppletLearnedFromRename(t *testing.T) {
	const loop, child = 2, 3
	proc := func(tgid, ppid uint32, comm string) *containv1.Process {
		return &containv1.Process{Pid: tgid, Tgid: tgid, Ppid: ppid, Comm: comm, Origin: containv1.Origin_ORIGIN_CONTAINER}
	}
	shellStart := func(e *Engine, at int64) {
		ev := execEv("c1", at, "/bin/sh", "sh", "-c", "while true; do sh -c 'awk ...'; done")
		ev.GetExec().Proc = proc(loop, 1, "sh")
		e.Observe(ev)
	}
	// The loop shell's child: sh -c 'awk ...', which runs awk in itself.
	awkRun := func(e *Engine, at int64, first string) (alerts []*containv1.Alert) {
		fork := base("c1", at)
		fork.Kind = containv1.Kind_KIND_PROCESS
		fork.Body = &containv1.Event_Process{Process: &containv1.ProcessLifecycle{
			Proc: proc(loop, 1, "sh"), Op: containv1.ProcessLifecycle_OP_FORK, ChildTgid: child}}
		sh := execEv("c1", at, "/bin/sh", "sh", "-c", "awk ...")
		sh.GetExec().Proc = proc(child, loop, "sh")
		rename := sysEv("c1", at, "prctl")
		rename.GetSyscall().Mode = containv1.Syscall_MODE_SENSITIVE
		rename.GetSyscall().Args = []uint64{15, 0x7ffd0000, 0, 0, 0, 0}
		rename.GetSyscall().Proc = proc(child, loop, "awk")
		evs := []*containv1.Event{fork, sh, rename}
		if first != "" {
			// A first use reported in awk (after a restart of the collector).
			f := sysEv("c1", at, first)
			f.GetSyscall().Proc = proc(child, loop, "awk")
			evs = append(evs, f)
		}
		for _, ev := range evs {
			for _, al := range e.Observe(ev) {
				alerts = append(alerts, al.GetAlert())
			}
		}
		return alerts
	}
	e := newEngine(t, testConfig(), nil)
	shellStart(e, sec(0))
	e.Observe(sysEv("c1", sec(0.1), "read"))
	e.Observe(sysEv("c1", sec(0.1), "prctl"))
	awkRun(e, sec(1), "")
	e.Observe(sysEv("c1", sec(4), "read")) // the learning window ends
	b := e.Baseline(e.Keys()[0])
	if _, ok := b.Exec["/bin/awk"]; !ok || b.Phase != PhaseConverged {
		t.Fatalf("awk, seen only through its rename, not learned: %v (%v)", b.Exec, b.Phase)
	}

	// contain restarts: a new engine with the stored baseline, the loop
	// shell started before it (unknown), a first use falling in awk.
	e2 := restarted(t, e)
	if got := awkRun(e2, sec(10), "read"); len(got) != 0 {
		t.Fatalf("the learned applet alerted after a restart: %v", got[0].Reasons)
	}
	// An applet the image never ran is still named, from its rename.
	rename := sysEv("c1", sec(11), "prctl")
	rename.GetSyscall().Mode = containv1.Syscall_MODE_SENSITIVE
	rename.GetSyscall().Args = []uint64{15, 0, 0, 0, 0, 0}
	sh := execEv("c1", sec(11), "/bin/sh", "sh", "-c", "nc ...")
	sh.GetExec().Proc = proc(child+1, loop, "sh")
	e2.Observe(sh)
	rename.GetSyscall().Proc = proc(child+1, loop, "nc")
	var unseen bool
	for _, al := range e2.Observe(rename) {
		unseen = unseen || hasCode(al.GetAlert(), CodeExecUnseen) != nil
	}
	if !unseen {
		t.Fatal("an unlearned applet (nc) run without exec: no exec.unseen from its rename")
	}
}

// TestForkForgetsReusedPid: a process whose exit was not seen leaves its
// executable in the table; its host pid, reused by a new process forked
// by a parent the table does not know (after a restart of contain), must
// not lend the new process that executable. Here httpd's request child
// duplicating its socket onto stdin (learned) was taken for an awk doing
// so, a reverse shell, and a healthy replica was paused (CI, pid_max
// 32768 wrapped under load).
func TestForkForgetsReusedPid(t *testing.T) {
	proc := func(tgid, ppid uint32, comm string) *containv1.Process {
		return &containv1.Process{Pid: tgid, Tgid: tgid, Ppid: ppid, Comm: comm, Origin: containv1.Origin_ORIGIN_CONTAINER}
	}
	fork := func(at int64, parent, child uint32, comm string) *containv1.Event {
		ev := base("c1", at)
		ev.Kind = containv1.Kind_KIND_PROCESS
		ev.Body = &containv1.Event_Process{Process: &containv1.ProcessLifecycle{
			Proc: proc(parent, 1, comm), Op: containv1.ProcessLifecycle_OP_FORK, ChildTgid: child}}
		return ev
	}
	dup := func(at int64, tgid, ppid uint32) *containv1.Event {
		ev := sysEv("c1", at, "dup2")
		s := ev.GetSyscall()
		s.Mode, s.Args, s.Ret, s.Proc = containv1.Syscall_MODE_SENSITIVE, []uint64{3, 0, 0, 0, 0, 0}, 0, proc(tgid, ppid, "httpd")
		return ev
	}
	e := newEngine(t, testConfig(), nil)
	httpd := execEv("c1", sec(0), "/bin/httpd", "httpd", "-p", "8080")
	httpd.GetExec().Proc = proc(5, 1, "httpd")
	e.Observe(httpd)
	e.Observe(fork(sec(0.5), 5, 6, "httpd"))
	e.Observe(dup(sec(0.5), 6, 5))
	e.Observe(sysEv("c1", sec(4), "read")) // converged

	awk := execEv("c1", sec(5), "/bin/awk", "awk", "{print}")
	awk.GetExec().Proc = proc(7, 2, "awk")
	e.Observe(awk) // its exit is never seen
	// httpd, started before the restart (unknown), forks a request
	// child that is given pid 7 again.
	e.Observe(fork(sec(6), 50, 7, "httpd"))
	for _, al := range e.Observe(dup(sec(6), 7, 50)) {
		if r := hasCode(al.GetAlert(), CodeReverseShell); r != nil {
			t.Fatalf("a reused pid's old executable named the new process: %v", al.GetAlert().Reasons)
		}
	}
}

// TestLogRotationNotClearing: logrotate's create and copytruncate modes,
// compression and deletion of the oldest copy are lifecycle; emptying or
// deleting a current log with no rotated copy is log clearing.
func TestLogRotationNotClearing(t *testing.T) {
	for _, c := range []struct {
		p, stem string
		ok      bool
	}{
		{"/var/log/app.log.1", "/var/log/app.log", true},
		{"/var/log/app.log.2.gz", "/var/log/app.log", true},
		{"/var/log/syslog-20261203", "/var/log/syslog", true},
		{"/var/log/app.log-2026-12-03.xz", "/var/log/app.log", true},
		{"/var/log/wtmp.1", "/var/log/wtmp", true},
		{"/var/log/auth.log", "", false},
		{"/var/log/app.log", "", false},
	} {
		if stem, ok := rotationStem(c.p); ok != c.ok || stem != c.stem {
			t.Errorf("rotationStem(%q) = %q %v, want %q %v", c.p, stem, ok, c.stem, c.ok)
		}
	}
	e := newEngine(t, testConfig(), nil)
	learn(e, "c1")
	clears := func(evs ...*containv1.Event) int {
		n := 0
		for _, ev := range evs {
			for _, al := range e.Observe(ev) {
				if hasCode(al.GetAlert(), CodeLogClear) != nil {
					n++
				}
			}
		}
		return n
	}
	rename := func(at int64, from, to string) *containv1.Event {
		ev := fileEv("c1", at, containv1.File_OP_RENAME, from)
		ev.GetFile().NewPath = to
		return ev
	}
	createTrunc := func(at int64, p string) *containv1.Event {
		ev := fileEv("c1", at, containv1.File_OP_CREATE, p)
		ev.GetFile().Flags = 0o1101
		return ev
	}
	// create mode: shift, rename, re-create, compress, delete the oldest.
	if n := clears(
		rename(sec(10), "/var/log/app.log.1", "/var/log/app.log.2"),
		rename(sec(10.1), "/var/log/app.log", "/var/log/app.log.1"),
		createTrunc(sec(10.2), "/var/log/app.log"),
		fileEv("c1", sec(10.3), containv1.File_OP_CREATE, "/var/log/app.log.1.gz"),
		fileEv("c1", sec(10.4), containv1.File_OP_UNLINK, "/var/log/app.log.1"),
		fileEv("c1", sec(10.5), containv1.File_OP_UNLINK, "/var/log/app.log.5.gz"),
	); n != 0 {
		t.Errorf("logrotate (create): %d log_clear alerts, want 0", n)
	}
	// copytruncate: copy, then truncate the log.
	if n := clears(
		fileEv("c1", sec(20), containv1.File_OP_CREATE, "/var/log/other.log-20261203"),
		fileEv("c1", sec(20.1), containv1.File_OP_TRUNCATE, "/var/log/other.log"),
	); n != 0 {
		t.Errorf("logrotate (copytruncate): %d log_clear alerts, want 0", n)
	}
	// Clearing: a current log truncated and another deleted, no copy.
	if n := clears(fileEv("c1", sec(30), containv1.File_OP_TRUNCATE, "/var/log/auth.log")); n != 1 {
		t.Errorf("auth.log truncated: %d log_clear alerts, want 1", n)
	}
	if n := clears(fileEv("c1", sec(40), containv1.File_OP_UNLINK, "/var/log/secure")); n != 1 {
		t.Errorf("secure deleted: %d log_clear alerts, want 1", n)
	}
	// A history moved to a rotated-looking name is still cleared.
	if n := clears(rename(sec(50), "/root/.bash_history", "/root/.bash_history.1")); n != 1 {
		t.Errorf("history moved away: %d log_clear alerts, want 1", n)
	}
}

// restarted is a new engine (testConfig) holding e's first baseline as
// stored: contain restarted, its process tables and container state lost.
func restarted(t *testing.T, e *Engine) *Engine {
	t.Helper()
	doc, err := e.Snapshot(e.Keys()[0])
	if err != nil {
		t.Fatal(err)
	}
	e2 := newEngine(t, testConfig(), nil)
	if err := e2.Load(doc); err != nil {
		t.Fatal(err)
	}
	return e2
}

// TestRotationLearnedAcrossRestart: a log the image copytruncates while
// the baseline learns is known as rotated; after a restart of the
// analyzer (no rotation noted yet, the shell that rotates unknown to the
// process table), its truncation seen before the copy is not its clearing.
// Another log emptied is still named.
func TestRotationLearnedAcrossRestart(t *testing.T) {
	const shell = 7
	proc := &containv1.Process{Pid: shell, Tgid: shell, Ppid: 1, Comm: "sh", Origin: containv1.Origin_ORIGIN_CONTAINER}
	by := func(ev *containv1.Event) *containv1.Event { ev.GetFile().Proc = proc; return ev }
	truncate := func(at int64, p string) *containv1.Event {
		ev := by(fileEv("c1", at, containv1.File_OP_CREATE, p))
		ev.GetFile().Flags = 0o1101 // O_WRONLY|O_CREAT|O_TRUNC: ": > log"
		return ev
	}
	clears := func(e *Engine, evs ...*containv1.Event) (n int) {
		for _, ev := range evs {
			for _, al := range e.Observe(ev) {
				if hasCode(al.GetAlert(), CodeLogClear) != nil {
					n++
				}
			}
		}
		return n
	}
	e := newEngine(t, testConfig(), nil)
	sh := execEv("c1", sec(0), "/bin/sh", "sh", "-c", "rotate")
	sh.GetExec().Proc = proc
	e.Observe(sh)
	// copytruncate while learning: the copy, then the log emptied.
	if n := clears(e, by(fileEv("c1", sec(1), containv1.File_OP_CREATE, "/var/log/app/access.log.1")),
		truncate(sec(1.1), "/var/log/app/access.log")); n != 0 {
		t.Fatalf("copytruncate while learning: %d log_clear alerts", n)
	}
	e.Observe(sysEv("c1", sec(4), "read")) // the learning window ends
	e2 := restarted(t, e)
	// After the restart the truncation comes first (its copy missed, or
	// seen after it).
	if n := clears(e2, truncate(sec(10), "/var/log/app/access.log"),
		by(fileEv("c1", sec(10.1), containv1.File_OP_CREATE, "/var/log/app/access.log.1"))); n != 0 {
		t.Errorf("the learned rotation, its copy seen after its truncation, after a restart: %d log_clear alerts, want 0", n)
	}
	if n := clears(e2, truncate(sec(11), "/var/log/auth.log")); n != 1 {
		t.Errorf("auth.log emptied: %d log_clear alerts, want 1", n)
	}
}

// TestPeerReResolved: a learned service port at a new address (DNS
// re-resolution) stays below 0.5 and is absorbed; a new port is an unseen
// peer.
func TestPeerReResolved(t *testing.T) {
	e := newEngine(t, testConfig(), nil)
	learn(e, "c1") // learned 10.0.0.5:5432
	var got *containv1.Alert
	for _, al := range e.Observe(netEv("c1", sec(10), containv1.Network_OP_CONNECT, [4]byte{10, 0, 0, 6}, 5432)) {
		got = al.GetAlert()
	}
	if got == nil || hasCode(got, CodePeerNewAddress) == nil || got.Score >= 0.5 {
		t.Fatalf("re-resolved peer: %v, want net.peer.new_address below 0.5", got)
	}
	for _, al := range e.Observe(netEv("c1", sec(11), containv1.Network_OP_CONNECT, [4]byte{10, 0, 0, 6}, 5432)) {
		t.Errorf("absorbed peer alerted again: %v", al.GetAlert().Reasons)
	}
	got = nil
	for _, al := range e.Observe(netEv("c1", sec(12), containv1.Network_OP_CONNECT, [4]byte{10, 0, 0, 7}, 4443)) {
		got = al.GetAlert()
	}
	if hasCode(got, CodePeerUnseen) == nil {
		t.Errorf("new port: %v, want net.peer.unseen", got)
	}
}

// TestBehaviourKeepsScoreAcrossReplicas: a behaviour seen in many
// containers of one image keeps its class's score (every replica
// attacked the same way pauses); an anomaly's weight falls (rarity).
func TestBehaviourKeepsScoreAcrossReplicas(t *testing.T) {
	e := newEngine(t, testConfig(), nil)
	learn(e, "c1")
	var last, lastPeer float64
	for i := range 12 {
		ctr := "r" + string(rune('a'+i))
		learn(e, ctr)
		for _, al := range e.Observe(fileEv(ctr, sec(20+float64(i)), containv1.File_OP_OPEN_READ, "/etc/shadow")) {
			if r := hasCode(al.GetAlert(), CodeReadSensitive); r != nil {
				last = r.Score
			}
		}
		for _, al := range e.Observe(netEv(ctr, sec(20.5+float64(i)), containv1.Network_OP_CONNECT, [4]byte{10, 9, 9, 9}, 4443)) {
			if r := hasCode(al.GetAlert(), CodePeerUnseen); r != nil {
				lastPeer = r.Score
			}
		}
	}
	if last != classes[CodeReadSensitive].severity {
		t.Errorf("12th replica's credential read scored %v, want %v", last, classes[CodeReadSensitive].severity)
	}
	if lastPeer == 0 || lastPeer >= classes[CodePeerUnseen].severity {
		t.Errorf("12th replica's unseen peer scored %v, want below %v (rarity)", lastPeer, classes[CodePeerUnseen].severity)
	}
}
