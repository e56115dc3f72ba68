package analyzer

import (
	"strings"
	"testing"

	"github.com/containsec/contain/schemas/containv1"
)

// withOrigin sets the origin (and session) of ev's process, giving it one
// when it has none.
func withOrigin(ev *containv1.Event, o containv1.Origin, session uint32) *containv1.Event {
	p := procOf(ev)
	if p == nil {
		p = &containv1.Process{Pid: 20, Tgid: 20}
		switch b := ev.Body.(type) {
		case *containv1.Event_Syscall:
			b.Syscall.Proc = p
		case *containv1.Event_File:
			b.File.Proc = p
		case *containv1.Event_Network:
			b.Network.Proc = p
		}
	}
	p.Origin, p.SessionTgid = o, session
	return ev
}

const (
	oContainer = containv1.Origin_ORIGIN_CONTAINER
	oRuntime   = containv1.Origin_ORIGIN_RUNTIME
	oSession   = containv1.Origin_ORIGIN_EXEC_SESSION
)

// TestOriginRuntimeNotLearnedNorScored: the runtime's set-up is neither
// learned nor scored, before or after convergence; a container process
// named like runc's init gets no exemption once the origin is known.
func TestOriginRuntimeNotLearnedNorScored(t *testing.T) {
	e := newEngine(t, testConfig(), nil)
	learn(e, "c1")
	// While learning: runc's mount is not learned ...
	if out := e.Observe(withOrigin(sysEv("c1", sec(1.5), "mount"), oRuntime, 0)); len(out) != 0 {
		t.Fatalf("runtime alerted: %v", out)
	}
	if _, ok := e.Baseline("sha256:aaaa").Syscalls["mount"]; ok {
		t.Fatal("runtime mount learned")
	}
	// ... nor scored after.
	for _, s := range []string{"unshare", "pivot_root", "capset", "setuid"} {
		if out := e.Observe(withOrigin(sysEv("c1", sec(5), s), oRuntime, 0)); len(out) != 0 {
			t.Errorf("runtime %s alerted: %v", s, out[0].GetAlert().Reasons)
		}
	}
	if got := e.Stats().Runtime; got != 5 {
		t.Errorf("runtime events %d, want 5", got)
	}
	// The container's own process renamed runc:[2:INIT] is scored.
	ev := withOrigin(sysEv("c1", sec(6), "mount"), oContainer, 0)
	ev.GetSyscall().Proc.Comm = "runc:[2:INIT]"
	if a := alertOf(t, e.Observe(ev)); hasCode(a, CodeMount) == nil {
		t.Errorf("renamed container process: %v", a.Reasons)
	}
}

// TestOriginContainerLearnedCompletely: the container's own program's
// behaviours are learned, so a fresh container repeating them raises
// nothing while a learned binary doing something new is named.
func TestOriginContainerLearnedCompletely(t *testing.T) {
	e := newEngine(t, testConfig(), nil)
	learn(e, "c1")
	// The entrypoint writes its config below /etc and chroots, as some
	// daemons do, while learning.
	x := execEv("c1", sec(2.5), "/bin/httpd", "/bin/httpd", "-f", "-p", "8080")
	x.GetExec().Proc.Tgid, x.GetExec().Proc.Pid = 30, 30
	e.Observe(x)
	for _, ev := range []*containv1.Event{
		withOrigin(fileEv("c1", sec(2.6), containv1.File_OP_OPEN_WRITE, "/etc/httpd/httpd.conf"), oContainer, 0),
		withOrigin(sysEv("c1", sec(2.7), "chroot"), oContainer, 0),
	} {
		procOf(ev).Tgid, procOf(ev).Pid = 30, 30
		e.Observe(ev)
	}
	// A fresh container of the image after convergence: the same is quiet.
	e.Observe(execEv("c2", sec(4), "/bin/httpd", "/bin/httpd", "-f", "-p", "8080"))
	for _, ev := range []*containv1.Event{
		withOrigin(fileEv("c2", sec(4.1), containv1.File_OP_OPEN_WRITE, "/etc/httpd/httpd.conf"), oContainer, 0),
		withOrigin(sysEv("c2", sec(4.2), "chroot"), oContainer, 0),
	} {
		if p := procOf(ev); p != nil {
			p.Tgid, p.Pid = 10, 10 // the httpd exec's tgid
		}
		if out := e.Observe(ev); len(out) != 0 {
			t.Errorf("learned behaviour alerted: %v", out[0].GetAlert().Reasons)
		}
	}
	// The learned binary doing a new thing: named by its behaviour.
	ev := withOrigin(fileEv("c2", sec(4.3), containv1.File_OP_CREATE, "/etc/cron.d/x"), oContainer, 0)
	procOf(ev).Tgid = 10
	if a := alertOf(t, e.Observe(ev)); a.Reasons[0].Code != CodeCronPersist {
		t.Errorf("new behaviour of a learned binary: %v", a.Reasons)
	}
}

func sessionEngine(t *testing.T, policy string) *Engine {
	cfg := testConfig()
	cfg.ExecSessions = policy
	e := newEngine(t, cfg, nil)
	learn(e, "c1")
	return e
}

// TestExecSessionPolicies: record, alert, container and ignore.
func TestExecSessionPolicies(t *testing.T) {
	sessionEvents := func(at float64) []*containv1.Event {
		x := withOrigin(execEv("c1", sec(at), "/bin/sh", "sh", "-c", "cat /etc/shadow"), oSession, 77)
		x.GetExec().Proc.Tgid, x.GetExec().Proc.Pid = 77, 77
		return []*containv1.Event{
			x,
			withOrigin(fileEv("c1", sec(at+0.1), containv1.File_OP_OPEN_READ, "/etc/shadow"), oSession, 77),
			withOrigin(sysEv("c1", sec(at+0.2), "ptrace"), oSession, 77),
		}
	}
	t.Run("record", func(t *testing.T) {
		e := sessionEngine(t, ExecSessionsRecord)
		// While learning too: one low alert, nothing learned.
		var got []*containv1.Event
		for _, ev := range sessionEvents(1.5) {
			got = append(got, e.Observe(ev)...)
		}
		if len(got) != 1 {
			t.Fatalf("got %d alerts, want 1 exec.session", len(got))
		}
		a := got[0].GetAlert()
		if len(a.Reasons) != 1 || a.Reasons[0].Code != CodeExecSession || a.Score >= 0.5 || !strings.Contains(a.Reasons[0].Message, `cat /etc/shadow`) {
			t.Errorf("session alert %v score %v", a.Reasons, a.Score)
		}
		b := e.Baseline("sha256:aaaa")
		if _, ok := b.Exec["/bin/sh"]; ok {
			t.Error("session's exec learned")
		}
		// A second session after convergence: one more record, no deviation.
		got = nil
		for _, ev := range sessionEvents(5) {
			procOf(ev).SessionTgid = 78
			got = append(got, e.Observe(ev)...)
		}
		if len(got) != 1 || got[0].GetAlert().Reasons[0].Code != CodeExecSession {
			t.Errorf("second session: %d alerts", len(got))
		}
		if s := e.Stats().Sessions; s != 6 {
			t.Errorf("sessions counted %d, want 6", s)
		}
	})
	t.Run("alert", func(t *testing.T) {
		e := sessionEngine(t, ExecSessionsAlert)
		var got []*containv1.Event
		for _, ev := range sessionEvents(5) {
			got = append(got, e.Observe(ev)...)
		}
		if len(got) != 3 || hasCode(got[0].GetAlert(), CodeExecSession) == nil || hasCode(got[0].GetAlert(), CodeExecShell) == nil ||
			hasCode(got[1].GetAlert(), CodeReadSensitive) == nil || hasCode(got[2].GetAlert(), CodePtrace) == nil {
			for _, al := range got {
				t.Log(describe(al))
			}
			t.Fatalf("alert policy: %d alerts", len(got))
		}
		if _, ok := e.Baseline("sha256:aaaa").Exec["/bin/sh"]; ok {
			t.Error("session learned")
		}
	})
	t.Run("behaviours", func(t *testing.T) {
		e := sessionEngine(t, ExecSessionsBehaviours)
		var got []*containv1.Event
		for _, ev := range sessionEvents(5) {
			got = append(got, e.Observe(ev)...)
		}
		// The shell is an operator's routine: the first alert is the
		// session's record alone; the credential read and the ptrace are
		// attack behaviours, scored at their class (pausing).
		if len(got) != 3 || len(got[0].GetAlert().Reasons) != 1 || hasCode(got[0].GetAlert(), CodeExecSession) == nil ||
			hasCode(got[1].GetAlert(), CodeReadSensitive) == nil || got[1].GetAlert().Score < 0.8 ||
			hasCode(got[2].GetAlert(), CodePtrace) == nil || got[2].GetAlert().Score < 0.8 {
			for _, al := range got {
				t.Log(describe(al))
			}
			t.Fatalf("behaviours policy: %d alerts", len(got))
		}
		// An operator's routine session: a shell, tools, an unseen
		// syscall and an undeclared write raise only the record.
		got = nil
		x := withOrigin(execEv("c1", sec(7), "/bin/sh", "sh"), oSession, 90)
		x.GetExec().Proc.Tgid, x.GetExec().Proc.Pid = 90, 90
		for _, ev := range []*containv1.Event{
			x,
			withOrigin(execEv("c1", sec(7.1), "/usr/bin/vi", "vi", "/app/config.yaml"), oSession, 90),
			withOrigin(sysEv("c1", sec(7.2), "inotify_init1"), oSession, 90),
			withOrigin(fileEv("c1", sec(7.3), containv1.File_OP_OPEN_WRITE, "/app/config.yaml"), oSession, 90),
		} {
			got = append(got, e.Observe(ev)...)
		}
		if len(got) != 1 || len(got[0].GetAlert().Reasons) != 1 || got[0].GetAlert().Reasons[0].Code != CodeExecSession || got[0].GetAlert().Score >= 0.5 {
			for _, al := range got {
				t.Log(describe(al))
			}
			t.Fatalf("routine session: %d alerts, want its record alone", len(got))
		}
		if _, ok := e.Baseline("sha256:aaaa").Exec["/bin/sh"]; ok {
			t.Error("session learned")
		}
	})
	t.Run("container", func(t *testing.T) {
		e := newEngine(t, func() Config { c := testConfig(); c.ExecSessions = ExecSessionsContainer; return c }(), nil)
		learn(e, "c1")
		for _, ev := range sessionEvents(1.5) {
			if out := e.Observe(ev); len(out) != 0 {
				t.Errorf("learning: %v", out)
			}
		}
		if _, ok := e.Baseline("sha256:aaaa").Exec["/bin/sh"]; !ok {
			t.Error("session not learned as the container's own")
		}
	})
	t.Run("ignore", func(t *testing.T) {
		e := sessionEngine(t, ExecSessionsIgnore)
		for _, ev := range sessionEvents(5) {
			if out := e.Observe(ev); len(out) != 0 {
				t.Errorf("ignored session alerted: %v", out)
			}
		}
		if s := e.Stats().Sessions; s != 3 {
			t.Errorf("sessions counted %d, want 3", s)
		}
	})
}

// TestIncidentCombination: medium deviations of one process tree within
// the combine window raise the incident's score (noisy-OR, capped); an
// exec session is another tree; outside the window nothing combines.
func TestIncidentCombination(t *testing.T) {
	e := newEngine(t, testConfig(), nil)
	learn(e, "c1")
	peer := alertOf(t, e.Observe(netEv("c1", sec(5), containv1.Network_OP_CONNECT, [4]byte{10, 9, 9, 9}, 443)))
	if peer.Score != 0.6 || hasCode(peer, CodeIncidentCombine) != nil {
		t.Fatalf("first: %v %v", peer.Score, peer.Reasons)
	}
	listen := alertOf(t, e.Observe(netEv("c1", sec(6), containv1.Network_OP_LISTEN, [4]byte{}, 31337)))
	// 1 - (1-0.6)(1-0.7) = 0.88
	r := hasCode(listen, CodeIncidentCombine)
	if listen.Score != 0.88 || r == nil || listen.Reasons[0].Code != CodeListenNew || !strings.Contains(r.Message, "net.listen.new, net.peer.unseen") {
		t.Fatalf("combined: %v %v", listen.Score, listen.Reasons)
	}
	sys := alertOf(t, e.Observe(sysEv("c1", sec(7), "ioctl")))
	if sys.Score != 0.94 { // 1 - 0.4*0.3*0.5
		t.Errorf("three: %v", sys.Score)
	}
	tool := alertOf(t, e.Observe(execEv("c1", sec(8), "/usr/bin/nmap", "nmap", "x")))
	if tool.Score != 0.95 {
		t.Errorf("capped: %v %v", tool.Score, tool.Reasons)
	}
	// Outside the window: alone again.
	late := alertOf(t, e.Observe(fileEv("c1", sec(30), containv1.File_OP_CREATE, "/data/dump/x")))
	if late.Score != 0.45 || hasCode(late, CodeIncidentCombine) != nil {
		t.Errorf("late: %v %v", late.Score, late.Reasons)
	}
	// An exec session is its own tree.
	cfg := testConfig()
	cfg.ExecSessions = ExecSessionsAlert
	e = newEngine(t, cfg, nil)
	learn(e, "c1")
	alertOf(t, e.Observe(netEv("c1", sec(5), containv1.Network_OP_CONNECT, [4]byte{10, 9, 9, 9}, 443)))
	s := alertOf(t, e.Observe(withOrigin(netEv("c1", sec(5.5), containv1.Network_OP_LISTEN, [4]byte{}, 31337), oSession, 9)))
	if hasCode(s, CodeIncidentCombine) != nil {
		t.Errorf("session combined with the container's tree: %v", s.Reasons)
	}
	// Off.
	cfg = testConfig()
	cfg.CombineWindow = 0
	e = newEngine(t, cfg, nil)
	learn(e, "c1")
	e.Observe(netEv("c1", sec(5), containv1.Network_OP_CONNECT, [4]byte{10, 9, 9, 9}, 443))
	if a := alertOf(t, e.Observe(netEv("c1", sec(6), containv1.Network_OP_LISTEN, [4]byte{}, 31337))); a.Score != 0.7 {
		t.Errorf("combination off: %v", a.Score)
	}
}

// TestClassScoreOverride: analyzer.class_scores changes a class's score.
func TestClassScoreOverride(t *testing.T) {
	cfg := testConfig()
	cfg.ClassScores = []string{"exec.pkg_manager=0.9", "exec.unseen=0.2"}
	e := newEngine(t, cfg, nil)
	learn(e, "c1")
	a := alertOf(t, e.Observe(execEv("c1", sec(5), "/sbin/apk", "apk", "add", "nmap")))
	if r := hasCode(a, CodeExecPkgManager); r == nil || r.Score != 0.9 || hasCode(a, CodeExecUnseen).Score != 0.2 {
		t.Errorf("overrides: %v", a.Reasons)
	}
}

// TestDriftAndBulk: an executable the container wrote, then ran, is drift;
// many deletions of one tree within seconds are one bulk deletion.
func TestDriftAndBulk(t *testing.T) {
	e := newEngine(t, testConfig(), nil)
	learn(e, "c1")
	// A data file written then run is not drift; one created executable is.
	e.Observe(fileEv("c1", sec(5), containv1.File_OP_CREATE, "/data/notes"))
	e.Observe(fileEv("c1", sec(5), containv1.File_OP_CREATE, "/data/payload"))
	chmod := fileEv("c1", sec(5), containv1.File_OP_CHMOD, "/data/payload")
	chmod.GetFile().Mode = 0o755
	e.Observe(chmod)
	a := alertOf(t, e.Observe(execEv("c1", sec(5.1), "/data/payload")))
	if hasCode(a, CodeExecDrift) == nil {
		t.Errorf("drift: %v", a.Reasons)
	}
	created := fileEv("c1", sec(5.2), containv1.File_OP_CREATE, "/data/dropper")
	created.GetFile().Mode = 0o700
	e.Observe(created)
	if a := alertOf(t, e.Observe(execEv("c1", sec(5.3), "/data/dropper"))); hasCode(a, CodeExecDrift) == nil {
		t.Errorf("drift (created executable): %v", a.Reasons)
	}
	// A learned executable overwritten in place, then run.
	e.Observe(fileEv("c1", sec(5.4), containv1.File_OP_OPEN_WRITE, "/bin/sleep"))
	if a := alertOf(t, e.Observe(execEv("c1", sec(5.5), "/bin/sleep", "sleep", "1"))); hasCode(a, CodeExecDrift) == nil {
		t.Errorf("drift (overwritten binary): %v", a.Reasons)
	}
	if a := alertOf(t, e.Observe(execEv("c1", sec(5.6), "/data/notes"))); hasCode(a, CodeExecDrift) != nil {
		t.Errorf("data file: %v", a.Reasons)
	}
	var bulk []*containv1.Alert
	for i := range bulkThreshold + 10 {
		for _, al := range e.Observe(fileEv("c1", sec(20+float64(i)/100), containv1.File_OP_UNLINK, "/data/f"+strings.Repeat("x", i%5))) {
			if hasCode(al.GetAlert(), CodeBulkDelete) != nil {
				bulk = append(bulk, al.GetAlert())
			}
		}
	}
	if len(bulk) != 1 {
		t.Errorf("bulk deletion alerts %d, want 1", len(bulk))
	}
	// Creating many files (O_CREAT|O_TRUNC, as os.Create does) is not.
	for i := range 2 * bulkThreshold {
		ev := fileEv("c1", sec(40+float64(i)/100), containv1.File_OP_CREATE, "/data/out/f"+strings.Repeat("y", i%7))
		ev.GetFile().Flags = 0o1102
		for _, al := range e.Observe(ev) {
			if hasCode(al.GetAlert(), CodeBulkDelete) != nil {
				t.Fatalf("file creation counted as deletion: %v", al.GetAlert().Reasons)
			}
		}
	}
}

// TestBehavioursPersisted: learned behaviours survive the baseline's
// document round trip.
func TestBehavioursPersisted(t *testing.T) {
	e := newEngine(t, testConfig(), nil)
	learn(e, "c1")
	e.Observe(withOrigin(sysEv("c1", sec(1.2), "chroot"), oContainer, 0))
	b := e.Baseline("sha256:aaaa")
	if len(b.Behaviours) == 0 {
		t.Fatal("nothing learned")
	}
	raw, err := MarshalJSONDoc(b.Doc())
	if err != nil {
		t.Fatal(err)
	}
	d, err := UnmarshalJSONDoc(raw)
	if err != nil {
		t.Fatal(err)
	}
	b2, err := docBaseline(d)
	if err != nil {
		t.Fatal(err)
	}
	for k := range b.Behaviours {
		if _, ok := b2.Behaviours[k]; !ok {
			t.Errorf("%q lost", k)
		}
	}
	d.Behaviours = map[string]uint32{"no.such | x | y": 1}
	if _, err := docBaseline(d); err == nil {
		t.Error("unknown code accepted")
	}
}

// TestLearnedBehaviourWithoutLineage: after an analyzer restart (or a lost
// fork) the process table does not know a process's executable or
// parent; a behaviour the image learned is then not raised as new.
func TestLearnedBehaviourWithoutLineage(t *testing.T) {
	e := newEngine(t, testConfig(), nil)
	learn(e, "c1")
	// While learning, httpd (tgid 10 at sec 0... then sleep) runs sh for CGI.
	cgi := execEv("c1", sec(2.5), "/bin/sh", "sh", "-c", "x")
	cgi.GetExec().Proc.Ppid, cgi.GetExec().Proc.Tgid, cgi.GetExec().Proc.Pid = 10, 11, 11
	httpd := execEv("c1", sec(2.4), "/bin/httpd", "/bin/httpd")
	e.Observe(httpd)
	e.Observe(cgi)
	ch := withOrigin(sysEv("c1", sec(2.6), "chroot"), oContainer, 0)
	procOf(ch).Tgid, procOf(ch).Pid, procOf(ch).Comm = 10, 10, "httpd"
	e.Observe(ch)
	// A fresh container whose parent and actor are unknown to the table.
	sh := execEv("c2", sec(5), "/bin/sh", "sh", "-c", "x")
	sh.GetExec().Proc.Ppid = 4242
	for _, out := range [][]*containv1.Event{e.Observe(sh)} {
		for _, al := range out {
			if hasCode(al.GetAlert(), CodeExecShell) != nil {
				t.Errorf("learned CGI shell with an unknown parent: %v", al.GetAlert().Reasons)
			}
		}
	}
	ch2 := withOrigin(sysEv("c2", sec(5.1), "chroot"), oContainer, 0)
	procOf(ch2).Tgid, procOf(ch2).Pid, procOf(ch2).Comm = 999, 999, "httpd"
	if out := e.Observe(ch2); len(out) != 0 {
		t.Errorf("learned chroot by an unknown process: %v", out[0].GetAlert().Reasons)
	}
	// A shell the image never started is still named.
	bash := execEv("c2", sec(6), "/bin/bash", "bash")
	bash.GetExec().Proc.Ppid = 4242
	if a := alertOf(t, e.Observe(bash)); hasCode(a, CodeExecShell) == nil {
		t.Errorf("new shell: %v", a.Reasons)
	}
}

// TestRuncThreadReportedAfterExec: with an older collector (no origin), a
// thread of runc's init that the exec killed can be reported after the
// exec of the container's program: it ran before that exec (monotonic
// time) and is the runtime's; a program renamed runc:[2:INIT] after its
// exec is still scored.
func TestRuncThreadReportedAfterExec(t *testing.T) {
	e := newEngine(t, testConfig(), nil)
	learn(e, "c1")
	x := execEv("c2", sec(5), "/bin/httpd", "/bin/httpd", "-f", "-p", "8080")
	x.GetExec().Proc.Tgid, x.GetExec().Proc.Pid = 50, 50
	e.Observe(x)
	late := sysEv("c2", sec(5.1), "tgkill")
	late.MonoNs = x.MonoNs - 1000 // ran before the exec
	late.GetSyscall().Proc = &containv1.Process{Pid: 51, Tgid: 50, Comm: "runc:[2:INIT]"}
	if out := e.Observe(late); len(out) != 0 {
		t.Fatalf("runc thread reported after the exec alerted: %v", out[0].GetAlert().Reasons)
	}
	renamed := sysEv("c2", sec(5.2), "tgkill")
	renamed.GetSyscall().Proc = &containv1.Process{Pid: 50, Tgid: 50, Comm: "runc:[2:INIT]"}
	if a := alertOf(t, e.Observe(renamed)); hasCode(a, CodeSyscallRoutine) == nil {
		t.Errorf("renamed program: %v", a.Reasons)
	}
}
