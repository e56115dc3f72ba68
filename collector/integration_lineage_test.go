package collector

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/containsec/contain/internal/metrics"
	"github.com/containsec/contain/internal/runtime"
	"github.com/containsec/contain/internal/testenv"
	"github.com/containsec/contain/schemas/containv1"
)

// procOf is the Process of an event, or nil (container, loss, counts).
func procOf(ev *containv1.Event) *containv1.Process {
	switch b := ev.GetBody().(type) {
	case *containv1.Event_Exec:
		return b.Exec.Proc
	case *containv1.Event_Syscall:
		return b.Syscall.Proc
	case *containv1.Event_Network:
		return b.Network.Proc
	case *containv1.Event_File:
		return b.File.Proc
	case *containv1.Event_Process:
		return b.Process.Proc
	}
	return nil
}

// describe is one line about an event, for failure messages.
func describe(ev *containv1.Event) string {
	p := procOf(ev)
	return fmt.Sprintf("%s origin=%s session=%d tgid=%d comm=%q %v", ev.Kind, p.GetOrigin(), p.GetSessionTgid(), p.GetTgid(), p.GetComm(), ev.GetBody())
}

// bundle writes an OCI bundle in a new directory whose root is rootfs
// (shared by every bundle) and whose process is args.
func bundle(t *testing.T, rootfs string, args []string, edit func(map[string]any)) string {
	t.Helper()
	dir := t.TempDir()
	if out, err := exec.Command("runc", "spec", "--bundle", dir).CombinedOutput(); err != nil {
		t.Fatalf("runc spec: %v: %s", err, out)
	}
	path := filepath.Join(dir, "config.json")
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var cfg map[string]any
	if err := json.Unmarshal(raw, &cfg); err != nil {
		t.Fatal(err)
	}
	proc := cfg["process"].(map[string]any)
	proc["terminal"] = false
	proc["args"] = args
	cfg["root"] = map[string]any{"path": rootfs, "readonly": false}
	if edit != nil {
		edit(cfg)
	}
	raw, _ = json.MarshalIndent(cfg, "", "  ")
	if err := os.WriteFile(path, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// runDetached starts bundle dir as container id (runc run -d) once start
// is closed, and registers its removal.
func runDetached(t *testing.T, dir, id string, start <-chan struct{}) error {
	<-start
	stderr, err := os.CreateTemp(dir, "runc-stderr-*")
	if err != nil {
		return err
	}
	defer stderr.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "runc", "run", "-d", "--bundle", dir, id)
	cmd.Stderr = stderr // a file: the detached container inherits it
	if err := cmd.Run(); err != nil {
		msg, _ := os.ReadFile(stderr.Name())
		return fmt.Errorf("runc run %s: %w: %s", id, err, msg)
	}
	return nil
}

func removeContainer(id string) {
	_ = exec.Command("runc", "kill", id, "KILL").Run()
	_ = exec.Command("runc", "delete", "-f", id).Run()
}

// isProgramExec: the exec of a container's program, /bin/sh -c script.
func isProgramExec(ev *containv1.Event, script string) bool {
	x := ev.GetExec()
	return x != nil && x.Filename == "/bin/sh" && slices.Equal(x.Argv, []string{"/bin/sh", "-c", script})
}

func isSleepExec(ev *containv1.Event) bool {
	x := ev.GetExec()
	return x != nil && len(x.Argv) > 0 && x.Argv[0] == "sleep"
}

// runtimeWork reports whether ev is set-up only the runtime does: a
// mount, pivot_root, the exec of runc's memfd clone, a write under
// /run/runc.
func runtimeWork(ev *containv1.Event) bool {
	if s := ev.GetSyscall(); s != nil && s.Mode == containv1.Syscall_MODE_SENSITIVE {
		return s.Name == "mount" || s.Name == "umount2" || s.Name == "pivot_root"
	}
	if x := ev.GetExec(); x != nil {
		return strings.HasPrefix(x.Filename, "/dev/fd/") || strings.HasPrefix(x.Filename, "/proc/self/fd/")
	}
	if f := ev.GetFile(); f != nil {
		return strings.HasPrefix(f.Path, "/run/runc/")
	}
	return false
}

// Twenty containers of one rootfs started at the same instant, twice:
// runc's set-up (mounts, pivot_root, its memfd re-exec, its state writes)
// is the runtime's, the program's exec and everything after it the
// container's, whatever the interleaving.
func TestIntegrationLineageConcurrentStarts(t *testing.T) {
	testenv.RequireCommand(t, "runc")
	_, js, _ := startCollector(t, nil)
	raw := consumeRaw(t, js)
	rootfs := testenv.BusyboxRootfs(t, t.TempDir())
	const n = 20
	script := "echo up > /tmp/lineage-$$; while true; do sleep 1; done"
	for round := range 2 {
		start := make(chan struct{})
		ids := make([]string, n)
		errs := make(chan error, n)
		var wg sync.WaitGroup
		for i := range ids {
			ids[i] = fmt.Sprintf("lin%d-%d-%d-%d", round, i, os.Getpid(), time.Now().UnixNano()%1e9)
			dir := bundle(t, rootfs, []string{"/bin/sh", "-c", script}, nil)
			t.Cleanup(func() { removeContainer(ids[i]) })
			wg.Add(1)
			go func() {
				defer wg.Done()
				errs <- runDetached(t, dir, ids[i], start)
			}()
		}
		close(start)
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Fatal(err)
			}
		}
		evs := raw.waitFor(t, 90*time.Second, fmt.Sprintf("round %d: every container's program exec and a sleep", round), func(evs []*containv1.Event) bool {
			for _, id := range ids {
				if countEvents(evs, id, func(ev *containv1.Event) bool { return isProgramExec(ev, script) }) == 0 ||
					countEvents(evs, id, isSleepExec) == 0 {
					return false
				}
			}
			return true
		})
		var runtimeSeen, setupSeen int
		for _, id := range ids {
			var progAt uint64
			for _, ev := range evs {
				if ev.ContainerId == id && isProgramExec(ev, script) {
					progAt = ev.MonoNs
					if o := ev.GetExec().Proc.Origin; o != containv1.Origin_ORIGIN_CONTAINER {
						t.Errorf("%s: the program's exec has origin %s", id, o)
					}
				}
			}
			for _, ev := range evs {
				p := procOf(ev)
				if ev.ContainerId != id || p == nil {
					continue
				}
				switch {
				case runtimeWork(ev):
					setupSeen++
					if p.Origin != containv1.Origin_ORIGIN_RUNTIME {
						t.Errorf("%s: runtime set-up not the runtime's: %s", id, describe(ev))
					}
				case ev.MonoNs < progAt:
					if p.Origin != containv1.Origin_ORIGIN_RUNTIME {
						t.Errorf("%s: before the program's exec, not the runtime's: %s", id, describe(ev))
					}
					runtimeSeen++
				case ev.MonoNs > progAt:
					if p.Origin != containv1.Origin_ORIGIN_CONTAINER {
						t.Errorf("%s: after the program's exec, not the container's: %s", id, describe(ev))
					}
				}
			}
		}
		if setupSeen == 0 || runtimeSeen == 0 {
			t.Errorf("round %d: %d set-up records (mount, pivot_root, memfd exec, /run/runc), %d other runtime records: the runtime's start-up was not seen", round, setupSeen, runtimeSeen)
		}
		t.Logf("round %d: %d containers; %d set-up records and %d other records before the programs' execs, all the runtime's", round, n, setupSeen, runtimeSeen)
		for _, id := range ids {
			removeContainer(id)
		}
	}
}

// runc exec: the session's command and its children are an exec session
// (session_tgid: the command's tgid); the container's own processes stay
// the container's. First uses are kept per origin: a syscall runc's init
// used first is reported again for the container's program and again for
// the session.
func TestIntegrationLineageExecSession(t *testing.T) {
	_, js, _ := startCollector(t, nil)
	raw := consumeRaw(t, js)
	ctr := testenv.RunContainer(t, "linexec", testenv.ContainerSpec{})
	// Two forked children (the last command is a builtin: no exec in place).
	const script = "cat /etc/passwd >/dev/null; cat /etc/shadow >/dev/null; true"
	if out, err := ctr.Exec(20*time.Second, "/bin/sh", "-c", script); err != nil {
		t.Fatalf("runc exec: %v: %s", err, out)
	}
	isSession := func(ev *containv1.Event) bool {
		return ev.GetExec() != nil && slices.Equal(ev.GetExec().Argv, []string{"/bin/sh", "-c", script})
	}
	isChild := func(ev *containv1.Event) bool {
		x := ev.GetExec()
		return x != nil && len(x.Argv) > 0 && x.Argv[0] == "cat"
	}
	first := func(evs []*containv1.Event, name string, o containv1.Origin) bool {
		return countEvents(evs, ctr.ID, func(ev *containv1.Event) bool {
			s := ev.GetSyscall()
			return s.GetMode() == containv1.Syscall_MODE_FIRST && s.GetName() == name && s.GetProc().GetOrigin() == o
		}) > 0
	}
	evs := raw.waitFor(t, 20*time.Second, "the session, its two children, a container sleep after them and first uses per origin", func(evs []*containv1.Event) bool {
		var sessionAt uint64
		for _, ev := range evs {
			if ev.ContainerId == ctr.ID && isSession(ev) {
				sessionAt = ev.MonoNs
			}
		}
		return sessionAt > 0 && countEvents(evs, ctr.ID, isChild) == 2 &&
			countEvents(evs, ctr.ID, func(ev *containv1.Event) bool { return isSleepExec(ev) && ev.MonoNs > sessionAt }) > 0 &&
			first(evs, "rt_sigaction", containv1.Origin_ORIGIN_CONTAINER) && first(evs, "rt_sigaction", containv1.Origin_ORIGIN_RUNTIME) &&
			first(evs, "close", containv1.Origin_ORIGIN_EXEC_SESSION)
	})
	st, err := ctr.State()
	if err != nil {
		t.Fatal(err)
	}
	var session uint32
	for _, ev := range evs {
		if ev.ContainerId == ctr.ID && isSession(ev) {
			p := ev.GetExec().Proc
			session = p.Tgid
			if p.Origin != containv1.Origin_ORIGIN_EXEC_SESSION || p.SessionTgid != p.Tgid {
				t.Errorf("the session's exec: %s", describe(ev))
			}
		}
	}
	for _, ev := range evs {
		p := procOf(ev)
		if ev.ContainerId != ctr.ID || p == nil {
			continue
		}
		switch {
		case isChild(ev):
			if p.Origin != containv1.Origin_ORIGIN_EXEC_SESSION || p.SessionTgid != session {
				t.Errorf("a child of the session (tgid %d): %s", session, describe(ev))
			}
		case isSleepExec(ev):
			if p.Origin != containv1.Origin_ORIGIN_CONTAINER || p.SessionTgid != 0 || p.Ppid != uint32(st.Pid) {
				t.Errorf("the container's sleep (parent %d): %s", st.Pid, describe(ev))
			}
		case p.Origin == containv1.Origin_ORIGIN_EXEC_SESSION && p.SessionTgid != session:
			t.Errorf("an exec session other than %d: %s", session, describe(ev))
		}
	}
	// runc's init used these before the program; each origin got its own
	// first use.
	var both []string
	names := map[containv1.Origin]map[string]bool{}
	for _, ev := range evs {
		if s := ev.GetSyscall(); ev.ContainerId == ctr.ID && s.GetMode() == containv1.Syscall_MODE_FIRST {
			if names[s.Proc.GetOrigin()] == nil {
				names[s.Proc.GetOrigin()] = map[string]bool{}
			}
			if names[s.Proc.GetOrigin()][s.Name] {
				t.Errorf("first use of %s reported twice for %s", s.Name, s.Proc.GetOrigin())
			}
			names[s.Proc.GetOrigin()][s.Name] = true
		}
	}
	for name := range names[containv1.Origin_ORIGIN_RUNTIME] {
		if names[containv1.Origin_ORIGIN_CONTAINER][name] {
			both = append(both, name)
		}
	}
	slices.Sort(both)
	t.Logf("first uses: runtime %d, container %d, exec session %d; used first by runc init and again reported for the program: %v",
		len(names[containv1.Origin_ORIGIN_RUNTIME]), len(names[containv1.Origin_ORIGIN_CONTAINER]), len(names[containv1.Origin_ORIGIN_EXEC_SESSION]), both)
}

// A container program that names itself like runc's init and then does
// what runc does (mount, writes under /run/runc) is still the container's.
func TestIntegrationLineageRenamedProcess(t *testing.T) {
	testenv.RequireCommand(t, "go")
	_, js, _ := startCollector(t, nil)
	raw := consumeRaw(t, js)
	dir := t.TempDir()
	rootfs := testenv.BusyboxRootfs(t, dir)
	build := exec.Command("go", "build", "-o", filepath.Join(rootfs, "renamer"), "./testdata/renamer")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building the renamer: %v: %s", err, out)
	}
	id := fmt.Sprintf("linrename-%d-%d", os.Getpid(), time.Now().UnixNano()%1e9)
	t.Cleanup(func() { removeContainer(id) })
	start := make(chan struct{})
	close(start)
	if err := runDetached(t, bundle(t, rootfs, []string{"/renamer"}, nil), id, start); err != nil {
		t.Fatal(err)
	}
	isRenamed := func(ev *containv1.Event) bool { return procOf(ev).GetComm() == "runc:[2:INIT]" }
	evs := raw.waitFor(t, 30*time.Second, "the renamed program's mount, its /run/runc write and its shell", func(evs []*containv1.Event) bool {
		return countEvents(evs, id, func(ev *containv1.Event) bool {
			return isRenamed(ev) && ev.GetSyscall().GetName() == "mount" && ev.GetSyscall().GetProc().GetOrigin() == containv1.Origin_ORIGIN_CONTAINER
		}) > 0 && countEvents(evs, id, func(ev *containv1.Event) bool {
			return isRenamed(ev) && ev.GetFile().GetPath() == "/run/runc/fake/state.json"
		}) > 0 && countEvents(evs, id, isSleepExec) > 0
	})
	var progAt uint64
	for _, ev := range evs {
		if x := ev.GetExec(); ev.ContainerId == id && x != nil && x.Filename == "/renamer" {
			progAt = ev.MonoNs
			if x.Proc.Origin != containv1.Origin_ORIGIN_CONTAINER {
				t.Errorf("the program's exec: %s", describe(ev))
			}
		}
	}
	if progAt == 0 {
		t.Fatal("no exec of /renamer")
	}
	renamed := 0
	for _, ev := range evs {
		p := procOf(ev)
		if ev.ContainerId != id || p == nil || ev.MonoNs <= progAt {
			continue
		}
		if isRenamed(ev) {
			renamed++
		}
		if p.Origin != containv1.Origin_ORIGIN_CONTAINER {
			t.Errorf("after the program's exec, not the container's: %s", describe(ev))
		}
	}
	t.Logf("%d records of the program named runc:[2:INIT], all the container's", renamed)
}

// Processes that ran before the collector: the container's are the
// container's, a runc exec session's the session's, and a session started
// after the collector is one too (the container is known to have its
// program).
func TestIntegrationLineageSeeded(t *testing.T) {
	ctr := testenv.RunContainer(t, "linseed", testenv.ContainerSpec{})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	// Output to a file, not a pipe: the detached session inherits it.
	out, err := os.CreateTemp(t.TempDir(), "runc-exec-*")
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	cmd := exec.CommandContext(ctx, "runc", "exec", "-d", ctr.ID, "/bin/sh", "-c", "while true; do sleep 1; done")
	cmd.Stdout, cmd.Stderr, cmd.WaitDelay = out, out, time.Second
	if err := cmd.Run(); err != nil {
		msg, _ := os.ReadFile(out.Name())
		t.Fatalf("runc exec -d: %v: %s", err, msg)
	}
	st, err := ctr.State()
	if err != nil {
		t.Fatal(err)
	}
	_, js, _ := startCollector(t, nil)
	raw := consumeRaw(t, js)
	if out, err := ctr.Exec(20*time.Second, "/bin/cat", "/etc/passwd"); err != nil {
		t.Fatalf("runc exec: %v: %s", err, out)
	}
	isCat := func(ev *containv1.Event) bool {
		return slices.Equal(ev.GetExec().GetArgv(), []string{"/bin/cat", "/etc/passwd"})
	}
	fromInit := func(ev *containv1.Event) bool { return isSleepExec(ev) && ev.GetExec().Proc.Ppid == uint32(st.Pid) }
	fromSession := func(ev *containv1.Event) bool { return isSleepExec(ev) && ev.GetExec().Proc.Ppid != uint32(st.Pid) }
	evs := raw.waitFor(t, 20*time.Second, "sleeps of the init and of the earlier session, and the later session", func(evs []*containv1.Event) bool {
		return countEvents(evs, ctr.ID, fromInit) > 0 && countEvents(evs, ctr.ID, fromSession) > 0 && countEvents(evs, ctr.ID, isCat) > 0
	})
	for _, ev := range evs {
		if ev.ContainerId != ctr.ID || ev.GetExec() == nil {
			continue
		}
		p := ev.GetExec().Proc
		switch {
		case fromInit(ev):
			if p.Origin != containv1.Origin_ORIGIN_CONTAINER {
				t.Errorf("the container's sleep: %s", describe(ev))
			}
		case fromSession(ev):
			if p.Origin != containv1.Origin_ORIGIN_EXEC_SESSION || p.SessionTgid != p.Ppid {
				t.Errorf("the earlier session's sleep (session: its parent): %s", describe(ev))
			}
		case isCat(ev):
			if p.Origin != containv1.Origin_ORIGIN_EXEC_SESSION || p.SessionTgid != p.Tgid {
				t.Errorf("the later session: %s", describe(ev))
			}
		}
	}
}

// An OCI annotation naming an image digest (an image author's, for runc)
// is not the container's identity: runc keeps none, so none is announced.
func TestIntegrationIdentityNotFromAnnotations(t *testing.T) {
	_, js, m := startCollector(t, nil)
	raw := consumeRaw(t, js)
	ctr := testenv.RunContainer(t, "linspoof", testenv.ContainerSpec{Annotations: map[string]string{
		runtime.LabelImageDigest: fakeDigest, runtime.LabelImageRef: "evil:1", "team": "payments",
	}})
	evs := raw.waitFor(t, 20*time.Second, "the container's announcement", func(evs []*containv1.Event) bool {
		return countEvents(evs, ctr.ID, func(ev *containv1.Event) bool { return ev.GetContainer() != nil }) > 0
	})
	for _, ev := range evs {
		ci := ev.GetContainer()
		if ev.ContainerId != ctr.ID || ci == nil {
			continue
		}
		if ci.ImageDigest != "" || ci.ImageRef != "" || ci.Labels[runtime.LabelImageDigest] != "" || ci.Labels[runtime.LabelImageRef] != "" || ci.Labels["team"] != "payments" {
			t.Fatalf("announced %v: an annotation set the identity", ci)
		}
	}
	if n := testutil.ToFloat64(m.Dropped.WithLabelValues(metrics.StageCollector, reasonSpoofedLabel)); n < 2 {
		t.Fatalf("%v spoofed labels counted, want 2", n)
	}
}
