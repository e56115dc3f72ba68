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
