package analyzer

import (
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
