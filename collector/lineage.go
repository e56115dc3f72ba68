package collector

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/containsec/contain/schemas/containv1"
)

// originClasses is the number of origins first uses are kept apart for
// (common.h ORIGIN_CLASSES).
const originClasses = 4

// syscallCounts mirrors common.h struct syscall_counts, the value of the
// syscall_counts map (bpf2go cannot name it: the map has the same name).
type syscallCounts struct {
	N    [syscallMax]uint32
	Seen [originClasses][syscallMax / 64]uint64
}

// pidfdThread is PIDFD_THREAD (Linux 6.9): a pidfd naming one thread.
const pidfdThread = unix.O_EXCL

// hostMountNS returns the inode of the host's mount namespace: pid 1's,
// or, where that cannot be read (a sandbox), the collector's own.
func hostMountNS(proc string) (uint32, error) {
	if ino, err := nsInode(filepath.Join(proc, "1/ns/mnt")); err == nil {
		return ino, nil
	}
	ino, err := nsInode(filepath.Join(proc, "self/ns/mnt"))
	if err != nil {
		return 0, fmt.Errorf("host mount namespace: %w", err)
	}
	return ino, nil
}

func nsInode(path string) (uint32, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return 0, err
	}
	return uint32(st.Ino), nil
}

// procInfo is what seeding needs to know of one running process.
type procInfo struct {
	pid, ppid uint32
	nsPid     uint32 // pid in its own pid namespace (last NSpid)
	cgroup    uint64 // cgroup v2 id
	mntNS     uint32
	start     uint64 // start time (clock ticks after boot)
	tids      []uint32
}

// seedDecision is one process's origin as seeding decides it.
type seedDecision struct {
	origin      containv1.Origin
	sessionTgid uint32
}

// decideOrigins gives every process outside the host cgroup the origin
// the kernel would have given it had it watched the process start
// (docs/design/008-lineage.md): in the host's mount namespace, the
// runtime's; else a process whose parent is in the same cgroup inherits
// the parent's; a process whose parent is outside its cgroup entered it
// from outside: the container's init (pid 1 of its pid namespace, or
// else the cgroup's oldest such process) is the container's program, any
// other is an exec session of its own. It also returns the cgroups that
// have a program (a process of origin container or exec session).
func decideOrigins(procs []procInfo, hostCgroup uint64, hostMnt uint32) (map[uint32]seedDecision, map[uint64]bool) {
	byPid := make(map[uint32]*procInfo, len(procs))
	for i := range procs {
		byPid[procs[i].pid] = &procs[i]
	}
	// The init of each cgroup among the processes that entered it.
	inits := map[uint64]*procInfo{}
	for i := range procs {
		p := &procs[i]
		if p.cgroup == hostCgroup || p.mntNS == hostMnt {
			continue
		}
		if parent := byPid[p.ppid]; parent != nil && parent.cgroup == p.cgroup {
			continue
		}
		cur := inits[p.cgroup]
		switch {
		case cur == nil:
			inits[p.cgroup] = p
		case cur.nsPid == 1:
		case p.nsPid == 1 || p.start < cur.start || (p.start == cur.start && p.pid < cur.pid):
			inits[p.cgroup] = p
		}
	}
	out := make(map[uint32]seedDecision, len(procs))
	var decide func(p *procInfo, depth int) seedDecision
	decide = func(p *procInfo, depth int) seedDecision {
		if d, ok := out[p.pid]; ok {
			return d
		}
		var d seedDecision
		parent := byPid[p.ppid]
		switch {
		case p.mntNS == hostMnt:
			d.origin = containv1.Origin_ORIGIN_RUNTIME
		case parent != nil && parent.cgroup == p.cgroup && parent.pid != p.pid && depth < 4096:
			d = decide(parent, depth+1)
		case inits[p.cgroup] == p:
			d.origin = containv1.Origin_ORIGIN_CONTAINER
		default:
			d = seedDecision{origin: containv1.Origin_ORIGIN_EXEC_SESSION, sessionTgid: p.pid}
		}
		out[p.pid] = d
		return d
	}
	programs := map[uint64]bool{}
	for i := range procs {
		p := &procs[i]
		if p.cgroup == hostCgroup {
			continue
		}
		if d := decide(p, 0); d.origin != containv1.Origin_ORIGIN_RUNTIME {
			programs[p.cgroup] = true
		}
	}
	return out, programs
}

// seedStats counts what seeding did.
type seedStats struct {
	processes, tasks int
	failed           int // tasks whose origin could not be stored (gone, or no thread pidfds)
}

// seedOrigins gives the tasks already running in container cgroups their
// origin in the kernel's task storage, and marks the cgroups that have a
// program. Tasks that got an origin meanwhile (forked from a seeded
// parent) keep it.
func seedOrigins(origins, programs *ebpf.Map, proc, cgroupRoot string, hostCgroup uint64, hostMnt uint32) (seedStats, error) {
	procs, err := readProcs(proc, cgroupRoot)
	if err != nil {
		return seedStats{}, err
	}
	decided, progs := decideOrigins(procs, hostCgroup, hostMnt)
	var st seedStats
	for _, p := range procs {
		d, ok := decided[p.pid]
		if !ok {
			continue
		}
		st.processes++
		v := collectorTaskOrigin{Origin: uint8(d.origin), SessionTgid: d.sessionTgid}
		for _, tid := range p.tids {
			st.tasks++
			if err := storeOrigin(origins, tid, tid == p.pid, &v); err != nil {
				st.failed++
			}
		}
	}
	one := uint8(1)
	for cg := range progs {
		if err := programs.Update(cg, one, ebpf.UpdateAny); err != nil {
			return st, fmt.Errorf("marking cgroup %d: %w", cg, err)
		}
	}
	return st, nil
}

// storeOrigin writes tid's origin through a pidfd (task storage is keyed
// by pidfd from user space).
func storeOrigin(origins *ebpf.Map, tid uint32, leader bool, v *collectorTaskOrigin) error {
	fd, err := unix.PidfdOpen(int(tid), pidfdThread)
	if err != nil && leader {
		fd, err = unix.PidfdOpen(int(tid), 0)
	}
	if err != nil {
		return fmt.Errorf("pidfd of %d: %w", tid, err)
	}
	defer unix.Close(fd)
	err = origins.Update(int32(fd), v, ebpf.UpdateNoExist)
	if errors.Is(err, ebpf.ErrKeyExist) {
		return nil
	}
	return err
}

// readProcs reads every process outside the cgroup2 root from proc. A
// process that goes away while being read is left out.
func readProcs(proc, cgroupRoot string) ([]procInfo, error) {
	ents, err := os.ReadDir(proc)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", proc, err)
	}
	cgIDs := map[string]uint64{}
	var out []procInfo
	for _, e := range ents {
		pid, err := strconv.ParseUint(e.Name(), 10, 32)
		if err != nil {
			continue
		}
		dir := filepath.Join(proc, e.Name())
		cgPath, err := unifiedCgroup(filepath.Join(dir, "cgroup"))
		if err != nil || cgPath == "/" {
			continue
		}
		id, ok := cgIDs[cgPath]
		if !ok {
			var st unix.Stat_t
			if unix.Stat(filepath.Join(cgroupRoot, cgPath), &st) != nil {
				continue
			}
			id = st.Ino
			cgIDs[cgPath] = id
		}
		p := procInfo{pid: uint32(pid), cgroup: id}
		if p.ppid, p.nsPid, err = readStatus(filepath.Join(dir, "status")); err != nil {
			continue
		}
		if p.mntNS, err = nsInode(filepath.Join(dir, "ns/mnt")); err != nil {
			continue
		}
		if p.start, err = readStart(filepath.Join(dir, "stat")); err != nil {
			continue
		}
		tasks, err := os.ReadDir(filepath.Join(dir, "task"))
		if err != nil {
			continue
		}
		for _, t := range tasks {
			if tid, err := strconv.ParseUint(t.Name(), 10, 32); err == nil {
				p.tids = append(p.tids, uint32(tid))
			}
		}
		out = append(out, p)
	}
	return out, nil
}

// unifiedCgroup returns the cgroup v2 path ("0::<path>") of a
// /proc/<pid>/cgroup file.
func unifiedCgroup(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	for _, l := range strings.Split(string(b), "\n") {
		if p, ok := strings.CutPrefix(l, "0::"); ok {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s: no cgroup v2 line", path)
}

// readStatus returns PPid and the last NSpid of a /proc/<pid>/status.
func readStatus(path string) (ppid, nsPid uint32, err error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	var havePPid bool
	for sc.Scan() {
		l := sc.Text()
		if v, ok := strings.CutPrefix(l, "PPid:"); ok {
			n, err := strconv.ParseUint(strings.TrimSpace(v), 10, 32)
			if err != nil {
				return 0, 0, fmt.Errorf("%s: PPid: %w", path, err)
			}
			ppid, havePPid = uint32(n), true
		} else if v, ok := strings.CutPrefix(l, "NSpid:"); ok {
			f := strings.Fields(v)
			if len(f) > 0 {
				n, err := strconv.ParseUint(f[len(f)-1], 10, 32)
				if err != nil {
					return 0, 0, fmt.Errorf("%s: NSpid: %w", path, err)
				}
				nsPid = uint32(n)
			}
		}
	}
	if !havePPid {
		return 0, 0, fmt.Errorf("%s: no PPid", path)
	}
	return ppid, nsPid, sc.Err()
}

// readStart returns the start time (field 22) of a /proc/<pid>/stat.
func readStart(path string) (uint64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	i := bytes.LastIndexByte(b, ')') // comm may hold spaces and parentheses
	if i < 0 {
		return 0, fmt.Errorf("%s: no comm", path)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 20 {
		return 0, fmt.Errorf("%s: %d fields", path, len(f))
	}
	return strconv.ParseUint(f[19], 10, 64) // field 22: the 20th after comm
}
