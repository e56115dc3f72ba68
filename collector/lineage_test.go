package collector

import (
	"os"
	"testing"

	"github.com/containsec/contain/schemas/containv1"
)

func TestDecideOrigins(t *testing.T) {
	const (
		host    = 1
		ctrA    = 100
		ctrB    = 200
		hostMnt = 7
		mntA    = 8
		mntB    = 9
	)
	procs := []procInfo{
		{pid: 10, ppid: 1, cgroup: host, mntNS: hostMnt},                     // the shim, on the host
		{pid: 20, ppid: 10, cgroup: ctrA, mntNS: mntA, nsPid: 1, start: 50},  // A's init
		{pid: 21, ppid: 20, cgroup: ctrA, mntNS: mntA, nsPid: 2, start: 60},  // its child
		{pid: 22, ppid: 21, cgroup: ctrA, mntNS: mntA, nsPid: 3, start: 61},  // its grandchild
		{pid: 30, ppid: 10, cgroup: ctrA, mntNS: mntA, nsPid: 9, start: 40},  // runc exec session (older start than a late init would not matter: init is pid 1)
		{pid: 31, ppid: 30, cgroup: ctrA, mntNS: mntA, nsPid: 10, start: 70}, // its child
		{pid: 40, ppid: 10, cgroup: ctrA, mntNS: hostMnt, start: 80},         // runc init still in the host's mount namespace
		{pid: 50, ppid: 10, cgroup: ctrB, mntNS: mntB, nsPid: 50, start: 90}, // B: no pid namespace, the oldest entrant is its program
		{pid: 51, ppid: 10, cgroup: ctrB, mntNS: mntB, nsPid: 51, start: 95}, // a later entrant: a session
		{pid: 60, ppid: 1, cgroup: host, mntNS: hostMnt},                     // a host process
	}
	got, programs := decideOrigins(procs, host, hostMnt)
	want := map[uint32]seedDecision{
		20: {origin: containv1.Origin_ORIGIN_CONTAINER},
		21: {origin: containv1.Origin_ORIGIN_CONTAINER},
		22: {origin: containv1.Origin_ORIGIN_CONTAINER},
		30: {origin: containv1.Origin_ORIGIN_EXEC_SESSION, sessionTgid: 30},
		31: {origin: containv1.Origin_ORIGIN_EXEC_SESSION, sessionTgid: 30},
		40: {origin: containv1.Origin_ORIGIN_RUNTIME},
		50: {origin: containv1.Origin_ORIGIN_CONTAINER},
		51: {origin: containv1.Origin_ORIGIN_EXEC_SESSION, sessionTgid: 51},
	}
	if len(got) != len(want) {
		t.Errorf("decided %d processes, want %d: %v", len(got), len(want), got)
	}
	for pid, w := range want {
		if got[pid] != w {
			t.Errorf("pid %d: %+v, want %+v", pid, got[pid], w)
		}
	}
	if !programs[ctrA] || !programs[ctrB] || programs[host] || len(programs) != 2 {
		t.Errorf("programs %v, want containers A and B", programs)
	}
}

func TestReadProcSelf(t *testing.T) {
	ppid, nsPid, err := readStatus("/proc/self/status")
	if err != nil || ppid != uint32(os.Getppid()) || nsPid == 0 {
		t.Fatalf("status: ppid %d ns_pid %d, %v", ppid, nsPid, err)
	}
	if start, err := readStart("/proc/self/stat"); err != nil || start == 0 {
		t.Fatalf("stat: start %d, %v", start, err)
	}
	if _, err := hostMountNS("/proc"); err != nil {
		t.Fatal(err)
	}
}
