package collector

import (
	"fmt"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/containsec/contain/internal/testenv"
	"github.com/containsec/contain/schemas/containv1"
)

// seqPattern prints its pid and tid (in its pid namespace; the same:
// it runs on the main thread), then makes n × [getppid, getuid,
// getgid] on that thread and exits. Run with GODEBUG=asyncpreemptoff=1 so
// that no preemption signal (rt_sigreturn) lands in the pattern.
const seqPattern = `package main

import (
	"fmt"
	"os"
	"runtime"
	"strconv"
	"syscall"
)

// Locked in init: main runs on the main thread, whose tid is the pid.
func init() { runtime.LockOSThread() }

func main() {
	n, _ := strconv.Atoi(os.Args[1])
	fmt.Println(os.Getpid(), syscall.Gettid())
	for i := 0; i < n; i++ {
		syscall.RawSyscall(syscall.SYS_GETPPID, 0, 0, 0)
		syscall.RawSyscall(syscall.SYS_GETUID, 0, 0, 0)
		syscall.RawSyscall(syscall.SYS_GETGID, 0, 0, 0)
	}
}
`

const seqAnnotation = "contain.test/sequence" // io.contain.* annotations are dropped

// threadSequences concatenates, per thread (tid), the MODE_SEQUENCE
// events of container ctrID in the order they arrived.
func threadSequences(evs []*containv1.Event, ctrID string) map[uint32][]uint32 {
	out := map[uint32][]uint32{}
	for _, ev := range evs {
		s := ev.GetSyscall()
		if ev.ContainerId != ctrID || s == nil || s.Mode != containv1.Syscall_MODE_SEQUENCE {
			continue
		}
		out[s.Proc.GetPid()] = append(out[s.Proc.GetPid()], s.Sequence...)
	}
	return out
}

// waitSelected polls until the collector has put ctr in sequence mode.
func waitSelected(t testing.TB, c *Collector, ctr *testenv.Container) {
	t.Helper()
	cgid, err := ctr.CgroupID()
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(15 * time.Second)
	for !c.sequenceSelected(cgid) {
		if time.Now().After(deadline) {
			t.Fatalf("container %s (cgroup %d) never put in sequence mode", ctr.ID, cgid)
		}
		// The container announces itself on its first events.
		_, _ = ctr.Exec(5*time.Second, "/bin/true")
		time.Sleep(20 * time.Millisecond)
	}
}

// A container selected by its annotation reports its thread's syscalls
// in order and contiguous; an unselected one in the same run reports no
// sequence.
func TestIntegrationSequence(t *testing.T) {
	c, js, _ := startCollector(t, func(c *Config) {
		c.SequenceSelect = []string{"label=" + seqAnnotation + "=on", "name=never-*"}
	})
	raw := consumeRaw(t, js)
	sel := testenv.RunContainer(t, "colseq", testenv.ContainerSpec{Annotations: map[string]string{seqAnnotation: "on"}})
	other := testenv.RunContainer(t, "colseqoff", testenv.ContainerSpec{Annotations: map[string]string{seqAnnotation: "off"}})
	for _, ctr := range []*testenv.Container{sel, other} {
		buildStatic(t, seqPattern, filepath.Join(ctr.Rootfs, "bin", "seqpattern"))
	}
	waitSelected(t, c, sel)

	const reps = 100
	run := func(ctr *testenv.Container) (pid, tid uint32) {
		out, err := ctr.Exec(30*time.Second, "/bin/env", "GODEBUG=asyncpreemptoff=1", "/bin/seqpattern", strconv.Itoa(reps))
		if err != nil {
			t.Fatalf("%s: %v: %s", ctr.ID, err, out)
		}
		f := strings.Fields(out)
		if len(f) != 2 {
			t.Fatalf("%s: output %q", ctr.ID, out)
		}
		p, _ := strconv.ParseUint(f[0], 10, 32)
		tt, _ := strconv.ParseUint(f[1], 10, 32)
		return uint32(p), uint32(tt)
	}
	_, _ = run(other)
	nsPid, nsTid := run(sel)
	if nsPid != nsTid {
		t.Fatalf("the pattern ran on thread %d of %d, not the main thread", nsTid, nsPid)
	}
	// The host's pid of the pattern: its exec event's.
	var pid uint32
	raw.waitFor(t, 10*time.Second, "the pattern's exec", func(evs []*containv1.Event) bool {
		for _, ev := range evs {
			if x := ev.GetExec(); ev.ContainerId == sel.ID && x.GetFilename() == "/bin/seqpattern" && x.Proc.NsPid == nsPid {
				pid = x.Proc.Tgid
				return true
			}
		}
		return false
	})
	tid := pid

	var want []uint32
	for range reps {
		want = append(want, 110, 102, 104) // getppid getuid getgid
	}
	var last string
	defer func() {
		if t.Failed() {
			t.Log(last)
		}
	}()
	evs := raw.waitFor(t, 15*time.Second, "the pattern in the selected thread's sequence", func(evs []*containv1.Event) bool {
		seqs := threadSequences(evs, sel.ID)
		seq := seqs[tid]
		last = fmt.Sprintf("thread %d: %d syscalls: %v; threads: %d", tid, len(seq), seq[:min(len(seq), 40)], len(seqs))
		return containsRun(seq, want)
	})
	t.Log(last)
	for _, ev := range evs {
		s := ev.GetSyscall()
		if ev.ContainerId == sel.ID && s != nil && s.Mode == containv1.Syscall_MODE_SEQUENCE && s.Proc.Pid == tid {
			if s.Proc.Tgid != pid || len(s.Sequence) == 0 || len(s.Sequence) > DefaultConfig().SequenceBatch || ev.MonoNs == 0 || ev.ContainerName == "" {
				t.Fatalf("sequence event %v (pid %d)", ev, pid)
			}
		}
	}
	if n := countEvents(evs, sel.ID, func(ev *containv1.Event) bool { return ev.Kind == containv1.Kind_KIND_LOSS }); n != 0 {
		t.Fatalf("%d loss events for the selected container", n)
	}
	// The unselected container ran the same pattern before; its exec and
	// first uses arrived (so its events were read), but no sequence.
	if !slices.ContainsFunc(evs, func(ev *containv1.Event) bool {
		return ev.ContainerId == other.ID && ev.GetExec().GetFilename() == "/bin/seqpattern"
	}) {
		t.Fatal("no exec event from the unselected container")
	}
	if seqs := threadSequences(evs, other.ID); len(seqs) != 0 {
		t.Fatalf("unselected container: sequences of %d threads", len(seqs))
	}
}

// containsRun reports whether want occurs in seq contiguously.
func containsRun(seq, want []uint32) bool {
	for i := 0; i+len(want) <= len(seq); i++ {
		if slices.Equal(seq[i:i+len(want)], want) {
			return true
		}
	}
	return false
}

// A selected container's syscall flood overflows a small sequence ring:
// the loss is counted for it (KIND_LOSS source sequence_ring) while
// another container's execs all arrive through the main ring.
func TestIntegrationSequenceFlood(t *testing.T) {
	c, js, _ := startCollector(t, func(c *Config) {
		c.SequenceSelect = []string{"label=" + seqAnnotation + "=flood"}
		c.SequenceRingBytes = 1 << 14
	})
	raw := consumeRaw(t, js)
	flood := testenv.RunContainer(t, "colseqflood", testenv.ContainerSpec{Annotations: map[string]string{seqAnnotation: "flood"}})
	quiet := testenv.RunContainer(t, "colseqquiet", testenv.ContainerSpec{})
	buildStatic(t, getppidLoop, filepath.Join(flood.Rootfs, "bin", "getppidloop"))
	waitSelected(t, c, flood)

	const calls = 2_000_000
	done := make(chan error, 1)
	go func() {
		out, err := flood.Exec(time.Minute, "/bin/getppidloop", strconv.Itoa(calls))
		if err != nil {
			err = fmt.Errorf("%w: %s", err, out)
		}
		done <- err
	}()
	time.Sleep(200 * time.Millisecond) // let the flood start; the assertions do not depend on it
	if out, err := quiet.Exec(30*time.Second, "/bin/sh", "-c", `i=0; while [ $i -lt 20 ]; do cat /dev/null; i=$((i+1)); done`); err != nil {
		t.Fatalf("quiet: %v: %s", err, out)
	}
	if err := <-done; err != nil {
		t.Fatalf("flood: %v", err)
	}
	isSeqLoss := func(ev *containv1.Event) bool {
		l := ev.GetLoss()
		return l != nil && l.Source == lossSourceSequence && l.Reason == reasonSequenceRing
	}
	var last string
	defer func() {
		if t.Failed() {
			t.Log(last)
		}
	}()
	evs := raw.waitFor(t, 20*time.Second, "the quiet container's execs and the flood's sequence loss", func(evs []*containv1.Event) bool {
		last = fmt.Sprintf("quiet: %d execs; flood: %d sequence loss events", countEvents(evs, quiet.ID, isCatExec), countEvents(evs, flood.ID, isSeqLoss))
		return countEvents(evs, quiet.ID, isCatExec) == 20 && countEvents(evs, flood.ID, isSeqLoss) > 0
	})
	var lost uint64
	for _, ev := range evs {
		if ev.ContainerId == flood.ID && isSeqLoss(ev) {
			lost += ev.GetLoss().Count
		}
	}
	got := 0
	for _, seq := range threadSequences(evs, flood.ID) {
		got += len(seq)
	}
	if got == 0 || lost == 0 {
		t.Fatalf("flood: %d syscalls in sequences, %d lost", got, lost)
	}
	if n := countEvents(evs, quiet.ID, func(ev *containv1.Event) bool { return ev.Kind == containv1.Kind_KIND_LOSS }); n != 0 {
		t.Fatalf("the quiet container lost events (%d loss events)", n)
	}
	if n := len(threadSequences(evs, quiet.ID)); n != 0 {
		t.Fatalf("the quiet container has sequences (%d threads)", n)
	}
	t.Logf("flood: %d getppid calls, %d syscalls delivered in sequences, %d sequence records lost; quiet: 20 of 20 execs", calls, got, lost)
}
