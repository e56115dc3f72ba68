package collector

import (
	"errors"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/ringbuf"
	"golang.org/x/sys/unix"

	"github.com/containsec/contain/internal/cgroups"
	"github.com/containsec/contain/internal/testenv"
)

// loadForTest loads only prog from the collector object with the given
// filter constants.
func loadForTest(t *testing.T, prog string, hostCg uint64, self uint32, hostProcs uint8) *ebpf.Collection {
	t.Helper()
	testenv.RequireRoot(t)
	spec, err := loadCollector()
	if err != nil {
		t.Fatal(err)
	}
	for name := range spec.Programs {
		if name != prog {
			delete(spec.Programs, name)
		}
	}
	spec.Maps["events"].MaxEntries = 1 << 16
	for name, v := range map[string]any{"host_cgroup_id": hostCg, "self_tgid": self, "host_processes": hostProcs} {
		if err := spec.Variables[name].Set(v); err != nil {
			t.Fatal(err)
		}
	}
	coll, err := ebpf.NewCollection(spec)
	if err != nil {
		if errors.Is(err, ebpf.ErrNotSupported) {
			testenv.Unavailable(t, "loading "+prog+": "+err.Error())
		}
		t.Fatal(err)
	}
	t.Cleanup(coll.Close)
	return coll
}

// runExecProg runs the raw-tracepoint exec program once in this process's
// context (BPF_PROG_TEST_RUN) and returns the records it wrote.
func runExecProg(t *testing.T, coll *ebpf.Collection) [][]byte {
	t.Helper()
	// Null task and bprm: CO-RE reads of them fail safely and read zeros,
	// which is what we want when testing the filter.
	if _, err := coll.Programs["exec_raw_tp"].Run(&ebpf.RunOptions{Context: []uint64{0, 0, 0}}); err != nil {
		if errors.Is(err, ebpf.ErrNotSupported) {
			testenv.Unavailable(t, "BPF_PROG_TEST_RUN for raw tracepoints")
		}
		t.Fatal(err)
	}
	rd, err := ringbuf.NewReader(coll.Maps["events"])
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	var out [][]byte
	rd.SetDeadline(time.Now().Add(50 * time.Millisecond))
	for {
		rec, err := rd.Read()
		if err != nil {
			return out
		}
		out = append(out, rec.RawSample)
	}
}

func myCgroupID(t *testing.T) uint64 {
	t.Helper()
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range splitLines(string(b)) {
		if len(line) > 3 && line[:3] == "0::" {
			id, err := cgroups.ID("/sys/fs/cgroup/unified" + line[3:])
			if err != nil {
				testenv.Unavailable(t, "cgroup2 at /sys/fs/cgroup/unified: "+err.Error())
			}
			return id
		}
	}
	testenv.Unavailable(t, "a cgroup v2 line in /proc/self/cgroup")
	return 0
}

func splitLines(s string) []string {
	var out []string
	for len(s) > 0 {
		i := 0
		for i < len(s) && s[i] != '\n' {
			i++
		}
		out = append(out, s[:i])
		if i < len(s) {
			i++
		}
		s = s[i:]
	}
	return out
}

func TestBPFExecFilter(t *testing.T) {
	testenv.RequireRoot(t)
	me := myCgroupID(t)
	pid := uint32(os.Getpid())

	t.Run("host cgroup dropped", func(t *testing.T) {
		if n := len(runExecProg(t, loadForTest(t, "exec_raw_tp", me, 0, 0))); n != 0 {
			t.Fatalf("%d records from a host-cgroup task", n)
		}
	})
	t.Run("own tgid dropped even with host processes", func(t *testing.T) {
		if n := len(runExecProg(t, loadForTest(t, "exec_raw_tp", me, pid, 1))); n != 0 {
			t.Fatalf("%d records from the collector itself", n)
		}
	})
	t.Run("other cgroup reported", func(t *testing.T) {
		recs := runExecProg(t, loadForTest(t, "exec_raw_tp", me+1, 0, 0))
		if len(recs) != 1 {
			t.Fatalf("%d records, want 1", len(recs))
		}
		ev, err := decode(recs[0], decodeOptions{})
		if err != nil {
			t.Fatal(err)
		}
		p := ev.GetExec().GetProc()
		if ev.CgroupId != me || p.Tgid != pid || ev.MonoNs == 0 {
			t.Fatalf("cgroup %d (want %d), tgid %d (want %d), mono %d", ev.CgroupId, me, p.Tgid, pid, ev.MonoNs)
		}
	})
}

// The loss counter counts reserve failures: a ring buffer of one page
// holds no 4.7 KiB exec record.
func TestBPFReserveFailureCounted(t *testing.T) {
	testenv.RequireRoot(t)
	me := myCgroupID(t)
	spec, err := loadCollector()
	if err != nil {
		t.Fatal(err)
	}
	for name := range spec.Programs {
		if name != "exec_raw_tp" {
			delete(spec.Programs, name)
		}
	}
	spec.Maps["events"].MaxEntries = uint32(os.Getpagesize())
	_ = spec.Variables["host_cgroup_id"].Set(me + 1)
	coll, err := ebpf.NewCollection(spec)
	if err != nil {
		t.Fatal(err)
	}
	defer coll.Close()
	for range 3 {
		if _, err := coll.Programs["exec_raw_tp"].Run(&ebpf.RunOptions{Context: []uint64{0, 0, 0}}); err != nil {
			t.Fatal(err)
		}
	}
	var perCPU []uint64
	if err := coll.Maps["loss"].Lookup(uint32(0), &perCPU); err != nil {
		t.Fatal(err)
	}
	var sum uint64
	for _, v := range perCPU {
		sum += v
	}
	if sum != 3 {
		t.Fatalf("loss counter = %d, want 3", sum)
	}
}

// The sys_exit program counts per (cgroup, syscall) per CPU, reports the
// first use on a CPU once, and reports sensitive syscalls every time
// (sys_exit_test: the same code, with the number from the context).
func TestBPFSyscallFirstUseAndCounts(t *testing.T) {
	testenv.RequireRoot(t)
	me := myCgroupID(t)
	spec, err := loadCollector()
	if err != nil {
		t.Fatal(err)
	}
	for name := range spec.Programs {
		if name != "sys_exit_test" {
			delete(spec.Programs, name)
		}
	}
	spec.Maps["events"].MaxEntries = 1 << 16
	getpid, chroot := nrOf(t, "getpid"), nrOf(t, "chroot")
	var class [syscallMax]uint8
	class[chroot] = classSensitive
	_ = spec.Variables["host_cgroup_id"].Set(me + 1)
	if err := spec.Variables["syscall_class"].Set(class); err != nil {
		t.Fatal(err)
	}
	coll, err := ebpf.NewCollection(spec)
	if err != nil {
		t.Fatal(err)
	}
	defer coll.Close()
	rd, err := ringbuf.NewReader(coll.Maps["events"])
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	prog := coll.Programs["sys_exit_test"]
	// First use is tracked per CPU: run every call on CPU 0, in this
	// task's context (BPF_F_TEST_RUN_ON_CPU would run it from an IPI, in
	// whatever task CPU 0 is running).
	runtime.LockOSThread() // never unlocked: the pinned thread exits with the test
	var set unix.CPUSet
	set.Set(0)
	if err := unix.SchedSetaffinity(0, &set); err != nil {
		t.Fatal(err)
	}
	run := func(nr uint64, times int) {
		t.Helper()
		for range times {
			if _, err := prog.Run(&ebpf.RunOptions{Context: []uint64{0, nr}}); err != nil {
				if errors.Is(err, ebpf.ErrNotSupported) {
					testenv.Unavailable(t, "BPF_PROG_TEST_RUN for raw tracepoints")
				}
				t.Fatal(err)
			}
		}
	}
	run(uint64(getpid), 5) // first once, then counted
	run(uint64(chroot), 3) // sensitive, every time
	run(9999, 1)           // out of range: ignored
	run(^uint64(0), 1)

	var modes []string
	rd.SetDeadline(time.Now().Add(50 * time.Millisecond))
	for {
		rec, err := rd.Read()
		if err != nil {
			break
		}
		ev, err := decode(rec.RawSample, decodeOptions{})
		if err != nil {
			t.Fatal(err)
		}
		s := ev.GetSyscall()
		if ev.CgroupId != me || len(s.Args) != 0 && len(s.Args) != 6 {
			t.Fatalf("record: %v", ev)
		}
		modes = append(modes, s.Name+"/"+s.Mode.String())
	}
	want := []string{"getpid/MODE_FIRST", "chroot/MODE_SENSITIVE", "chroot/MODE_SENSITIVE", "chroot/MODE_SENSITIVE"}
	if strings.Join(modes, ",") != strings.Join(want, ",") {
		t.Fatalf("records %v, want %v", modes, want)
	}
	// The counts sit in the cgroup's slot of count_slots (the fast path),
	// not in the fallback hash.
	slot := uint32((me * 0x9E3779B97F4A7C15) >> 56)
	var perCPU []collectorCountSlot
	if err := coll.Maps["count_slots"].Lookup(slot, &perCPU); err != nil {
		t.Fatal(err)
	}
	if perCPU[0].CgroupId != me || perCPU[0].N[getpid] != 5 || perCPU[0].N[chroot] != 3 {
		t.Fatalf("slot %d on CPU 0: cgroup %d (want %d), getpid %d (want 5), chroot %d (want 3)", slot, perCPU[0].CgroupId, me, perCPU[0].N[getpid], perCPU[0].N[chroot])
	}
	var inHash []syscallCounts
	if err := coll.Maps["syscall_counts"].Lookup(me, &inHash); err == nil {
		t.Fatal("counted in the fallback hash although the slot was free")
	}

	// When another cgroup owns the slot, counts fall back to the hash.
	taken := make([]collectorCountSlot, len(perCPU))
	for i := range taken {
		taken[i].CgroupId = me + 1
	}
	if err := coll.Maps["count_slots"].Put(slot, taken); err != nil {
		t.Fatal(err)
	}
	run(uint64(getpid), 2)
	if err := coll.Maps["syscall_counts"].Lookup(me, &inHash); err != nil {
		t.Fatalf("slot taken, but nothing in the fallback hash: %v", err)
	}
	if inHash[0].N[getpid] != 2 {
		t.Fatalf("fallback hash: getpid %d on CPU 0, want 2", inHash[0].N[getpid])
	}
}

// Every program of every hook family passes the verifier here, the
// raw_tracepoint fallback included (its fork hook cannot write the child's
// task storage: the lineage is inherited lazily there).
func TestBPFEveryFamilyLoads(t *testing.T) {
	for _, fam := range hookFamilies {
		for _, h := range fam {
			t.Run(h.program, func(t *testing.T) { loadForTest(t, h.program, 1, 0, 0) })
		}
	}
}
