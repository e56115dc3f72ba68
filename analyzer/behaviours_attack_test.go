package analyzer

import (
	"slices"
	"strconv"
	"testing"

	"github.com/containsec/contain/schemas/containv1"
)

// scoresOf observes evs and returns the best score of each reason code
// raised.
func scoresOf(e *Engine, evs ...*containv1.Event) map[string]float64 {
	out := map[string]float64{}
	for _, ev := range evs {
		for _, al := range e.Observe(ev) {
			for _, r := range al.GetAlert().Reasons {
				out[r.Code] = max(out[r.Code], r.Score)
			}
		}
	}
	return out
}

// TestAuditBehaviours: the held-out audit's rules (design 028) raise
// their code at a pausing score on what an attacker does, and stay quiet
// on the healthy look-alikes.
func TestAuditBehaviours(t *testing.T) {
	e := newEngine(t, testConfig(), nil)
	learn(e, "c1")
	fifo := func(at int64, p string) *containv1.Event {
		ev := fileEv("c1", at, containv1.File_OP_MKNOD, p)
		ev.GetFile().Mode = sIFIFO | 0o644
		return ev
	}
	rename := func(at int64, from, to string) *containv1.Event {
		ev := fileEv("c1", at, containv1.File_OP_RENAME, from)
		ev.GetFile().NewPath = to
		return ev
	}
	comm := func(at int64, name string) *containv1.Event {
		ev := sysEv("c1", at, "read")
		ev.GetSyscall().Proc = &containv1.Process{Pid: 10, Tgid: 10, Ppid: 1, Comm: name}
		return ev
	}
	written := func(at int64, p string) *containv1.Event {
		ev := fileEv("c1", at, containv1.File_OP_CREATE, p)
		ev.GetFile().Mode = 0o755
		return ev
	}
	metadata := netEv("c1", sec(10), containv1.Network_OP_CONNECT, [4]byte{169, 254, 169, 254}, 80)
	for _, c := range []struct {
		name string
		code string
		evs  []*containv1.Event
	}{
		{"imds connect", CodeCloudMetadata, []*containv1.Event{metadata}},
		{"imds in argv", CodeCloudMetadata, []*containv1.Event{execEv("c1", sec(11), "/usr/bin/wget", "wget", "-O-", "http://169.254.169.254/latest/meta-data/iam/security-credentials/")}},
		{"kubectl", CodeContainerAdmin, []*containv1.Event{execEv("c1", sec(12), "/usr/local/bin/kubectl", "kubectl", "get", "secrets")}},
		{"argv0 kworker", CodeMasquerade, []*containv1.Event{execEv("c1", sec(13), "/bin/sleep", "[kworker/0:1]", "100")}},
		{"comm kworker", CodeMasquerade, []*containv1.Event{comm(sec(14), "kworker/0:2")}},
		{"comm written", CodeMasquerade, []*containv1.Event{fileEv("c1", sec(15), containv1.File_OP_OPEN_WRITE, "/proc/self/comm")}},
		{"loader from /tmp", CodeExecTmp, []*containv1.Event{execEv("c1", sec(17), "/lib64/ld-linux-x86-64.so.2", "/lib64/ld-linux-x86-64.so.2", "/dev/shm/x")}},
		{"loader of a written file", CodeExecDrift, []*containv1.Event{written(sec(18), "/data/p"), execEv("c1", sec(18.5), "/lib/ld-musl-x86_64.so.1", "ld", "--library-path", "/data", "/data/p")}},
		{"runtime binary overwritten", CodeCgroupEscape, []*containv1.Event{fileEv("c1", sec(19), containv1.File_OP_OPEN_WRITE, "/proc/1234/exe")}},
		{"cron through /proc/1/root", CodeCronPersist, []*containv1.Event{fileEv("c1", sec(19.5), containv1.File_OP_CREATE, "/proc/1/root/etc/cron.d/x")}},
		{"fifo relay", CodeReverseShell, []*containv1.Event{fifo(sec(16), "/tmp/f"), execEv("c1", sec(16.5), "/usr/bin/nc", "nc", "10.0.0.9", "4444")}},
	} {
		if got := scoresOf(e, c.evs...); got[c.code] < pauseThreshold {
			t.Errorf("%s: %s scored %v, want >= %v (got %v)", c.name, c.code, got[c.code], pauseThreshold, got)
		}
	}
	// 60 files renamed to a new extension within seconds: encrypted.
	var evs []*containv1.Event
	for i := range 60 {
		p := "/data/docs/" + strconv.Itoa(i) + ".pdf"
		evs = append(evs, rename(sec(20+float64(i)/100), p, p+".locked"))
	}
	if got := scoresOf(e, evs...); got[CodeBulkDelete] < pauseThreshold {
		t.Errorf("mass rename to .locked: %v, want %s", got, CodeBulkDelete)
	}

	// Healthy look-alikes, after convergence.
	h := newEngine(t, testConfig(), nil)
	learn(h, "c1")
	evs = nil
	for i := range 80 {
		p := "/var/www/cache/" + strconv.Itoa(i)
		// An atomic writer (x.tmp -> x), log rotation and backups.
		evs = append(evs, rename(sec(10+float64(i)/100), p+".tmp", p),
			rename(sec(10+float64(i)/100), p+".log", p+".log.1"),
			rename(sec(10+float64(i)/100), p+".conf", p+".conf.bak"))
	}
	// A shell loop writing to /dev/null (O_TRUNC, no O_CREAT) and a
	// cleaner emptying its temp directory (found by the fleet test).
	for i := range 120 {
		null := fileEv("c1", sec(11+float64(i)/100), containv1.File_OP_OPEN_WRITE, "/dev/null")
		null.GetFile().Flags = 0o1001
		evs = append(evs, null, fileEv("c1", sec(11+float64(i)/100), containv1.File_OP_UNLINK, "/tmp/job."+strconv.Itoa(i)))
	}
	// A FIFO then nc long after (a health check's), and nc with no FIFO.
	evs = append(evs, fifo(sec(12), "/tmp/log.pipe"), comm(sec(13), "nginx: worker"), comm(sec(13.1), "kubeproxy"))
	if got := scoresOf(h, evs...); got[CodeBulkDelete] > 0 || got[CodeMasquerade] > 0 {
		t.Errorf("healthy renames and names: %v", got)
	}
	if got := scoresOf(h, execEv("c1", sec(40), "/usr/bin/nc", "nc", "-z", "db", "5432")); got[CodeReverseShell] > 0 {
		t.Errorf("nc 28 s after a FIFO: %v", got)
	}
	// ldd (the loader listing a program's libraries) runs nothing.
	if got := scoresOf(h, execEv("c1", sec(41), "/lib64/ld-linux-x86-64.so.2", "ld-linux", "--list", "/tmp/x")); got[CodeExecTmp] > 0 || got[CodeExecDrift] > 0 {
		t.Errorf("ldd: %v", got)
	}

	// The image's own use is learned: a service that reads its instance
	// role's credentials while learning does so again in every replica.
	l := newEngine(t, testConfig(), nil)
	learn(l, "c1")
	l.Observe(netEv("c1", sec(1.5), containv1.Network_OP_CONNECT, [4]byte{169, 254, 169, 254}, 80))
	learn(l, "c2")
	if got := scoresOf(l, netEv("c2", sec(10), containv1.Network_OP_CONNECT, [4]byte{169, 254, 169, 254}, 80)); len(got) != 0 {
		t.Errorf("learned metadata use alerted in a replica: %v", got)
	}
}

func TestKernelThreadName(t *testing.T) {
	for name, want := range map[string]bool{
		"kworker/0:1": true, "[kthreadd]": true, "ksoftirqd/0": true, "migration/3": true, "rcu_sched": true,
		"kswapd0": true, "nginx": false, "kube-proxy": false, "sh": false, "runc:[2:INIT]": false, "java": false,
		"containerd-shim": false, "redis-server": false, "[]": false, "": false, "kafka": false,
	} {
		if got := kernelThreadName(name); got != want {
			t.Errorf("kernelThreadName(%q) = %v, want %v", name, got, want)
		}
	}
}

// TestNewDeviationNotGrouped: a shell loop runs an unseen applet (mv) per
// file; each child's rename repeats exec.unseen, already alerted, and the
// 51st also is a bulk rename. The bulk behaviour must raise its alert,
// not be grouped under the repeated unseen executable (found by the
// audit's sh-encrypt case).
func TestNewDeviationNotGrouped(t *testing.T) {
	e := newEngine(t, testConfig(), nil)
	learn(e, "c1")
	sh := execEv("c1", sec(10), "/bin/sh", "sh", "-c", "x")
	sh.GetExec().Proc = &containv1.Process{Pid: 2, Tgid: 2, Ppid: 1, Comm: "sh"}
	e.Observe(sh)
	var got []string
	for i := range 70 {
		child := uint32(100 + i)
		fork := base("c1", sec(11+float64(i)/100))
		fork.Kind = containv1.Kind_KIND_PROCESS
		fork.Body = &containv1.Event_Process{Process: &containv1.ProcessLifecycle{
			Proc: &containv1.Process{Pid: 2, Tgid: 2, Ppid: 1, Comm: "sh"}, Op: containv1.ProcessLifecycle_OP_FORK, ChildTgid: child}}
		e.Observe(fork)
		p := "/data/r/" + strconv.Itoa(i) + ".doc"
		mv := fileEv("c1", sec(11+float64(i)/100+0.001), containv1.File_OP_RENAME, p)
		mv.GetFile().NewPath = p + ".locked"
		mv.GetFile().Proc = &containv1.Process{Pid: child, Tgid: child, Ppid: 2, Comm: "mv"}
		for _, al := range e.Observe(mv) {
			for _, r := range al.GetAlert().Reasons {
				got = append(got, r.Code)
			}
		}
	}
	if !slices.Contains(got, CodeBulkDelete) {
		t.Errorf("bulk rename by unseen applets: reasons %v, want %s", got, CodeBulkDelete)
	}
}

// TestTreeBehaviourLearnedForAnyActor: a bulk deletion the image's process
// tree made while learning is learned whichever of its processes tipped
// the count; after convergence another process of the tree tipping it
// raises nothing (the fleet test's cleaner paused healthy replicas when
// the tipping process differed).
func TestTreeBehaviourLearnedForAnyActor(t *testing.T) {
	e := newEngine(t, testConfig(), nil)
	learn(e, "c1")
	unlinks := func(at float64, proc *containv1.Process) map[string]float64 {
		var evs []*containv1.Event
		for i := range 60 {
			ev := fileEv("c1", sec(at+float64(i)/100), containv1.File_OP_UNLINK, "/scratch/c."+strconv.Itoa(i))
			ev.GetFile().Proc = proc
			evs = append(evs, ev)
		}
		return scoresOf(e, evs...)
	}
	unlinks(2, nil) // while learning, by a process the table does not know
	if got := unlinks(20, &containv1.Process{Pid: 10, Tgid: 10, Ppid: 1, Comm: "sleep"}); got[CodeBulkDelete] > 0 {
		t.Errorf("learned bulk deletion by another process of the tree: %v", got)
	}
	o := newEngine(t, testConfig(), nil)
	learn(o, "c1")
	if got := scoresOf(o, fileEv("c1", sec(5), containv1.File_OP_UNLINK, "/data/x")); got[CodeBulkDelete] > 0 {
		t.Fatalf("one unlink: %v", got)
	}
}
