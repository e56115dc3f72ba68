package collector

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/containsec/contain/internal/bus"
	"github.com/containsec/contain/internal/metrics"
	"github.com/containsec/contain/internal/syscalls"
	"github.com/containsec/contain/internal/testenv"
	"github.com/containsec/contain/schemas/containv1"
)

// startCollector runs a collector publishing to an embedded NATS and
// returns its JetStream context.
func startCollector(t *testing.T, edit func(*Config)) (*Collector, jetstream.JetStream, *metrics.Metrics) {
	t.Helper()
	testenv.RequireRoot(t)
	_, _, js := testenv.NATS(t)
	m := metrics.New()
	cfg := DefaultConfig()
	cfg.Host = "test-host"
	cfg.FlushInterval = 20 * time.Millisecond
	cfg.LossInterval = 200 * time.Millisecond
	if edit != nil {
		edit(&cfg)
	}
	c, err := New(cfg, js, m, testenv.Logger(t))
	if err != nil {
		if errors.Is(err, ebpf.ErrNotSupported) {
			testenv.Unavailable(t, "eBPF exec hooks: "+err.Error())
		}
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return c, js, m
}

// rawEvents reads CONTAIN_RAW from the start, in order.
type rawEvents struct {
	mu     sync.Mutex
	events []*containv1.Event
	cc     jetstream.ConsumeContext
}

func consumeRaw(t *testing.T, js jetstream.JetStream) *rawEvents {
	t.Helper()
	cons, err := js.OrderedConsumer(context.Background(), containv1.StreamRaw, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	r := &rawEvents{}
	r.cc, err = cons.Consume(func(msg jetstream.Msg) {
		b, err := bus.Decode(msg.Data())
		if err != nil {
			t.Errorf("undecodable batch: %v", err)
			return
		}
		r.mu.Lock()
		r.events = append(r.events, b.Events...)
		r.mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.cc.Stop)
	return r
}

func (r *rawEvents) snapshot() []*containv1.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.events)
}

// waitFor polls until pred holds over the events seen so far.
func (r *rawEvents) waitFor(t *testing.T, timeout time.Duration, what string, pred func([]*containv1.Event) bool) []*containv1.Event {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		evs := r.snapshot()
		if pred(evs) {
			return evs
		}
		if time.Now().After(deadline) {
			if len(evs) <= 2000 {
				for _, ev := range evs {
					t.Logf("seen: %s %s cg=%d %v", ev.Kind, ev.ContainerId, ev.CgroupId, ev.GetBody())
				}
			}
			t.Fatalf("timed out after %v waiting for %s; %d events seen", timeout, what, len(evs))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func isExec(ev *containv1.Event, ctrID, filename string) bool {
	return ev.Kind == containv1.Kind_KIND_EXEC && ev.ContainerId == ctrID && ev.GetExec().GetFilename() == filename
}

func TestIntegrationExecInContainer(t *testing.T) {
	c, js, _ := startCollector(t, nil)
	if len(c.Hooks()) == 0 {
		t.Fatal("no hooks reported")
	}
	raw := consumeRaw(t, js)

	ann := map[string]string{"org.opencontainers.image.ref.name": "busybox:contain-test", "contain.test/owner": "collector"}
	ctr := testenv.RunContainer(t, "colexec", testenv.ContainerSpec{Annotations: ann})
	cgid, err := ctr.CgroupID()
	if err != nil {
		t.Fatal(err)
	}
	if out, err := ctr.Exec(10*time.Second, "/bin/sh", "-c", "echo hi"); err != nil {
		t.Fatalf("runc exec: %v: %s", err, out)
	}

	evs := raw.waitFor(t, 10*time.Second, "the exec of /bin/sh -c 'echo hi'", func(evs []*containv1.Event) bool {
		return slices.ContainsFunc(evs, func(ev *containv1.Event) bool {
			return isExec(ev, ctr.ID, "/bin/sh") && slices.Equal(ev.GetExec().Argv, []string{"/bin/sh", "-c", "echo hi"})
		})
	})

	var (
		infoAt = -1
		infos  int
	)
	for i, ev := range evs {
		if ev.Kind == containv1.Kind_KIND_CONTAINER && ev.ContainerId == ctr.ID {
			infos++
			if infoAt < 0 {
				infoAt = i
			}
		}
	}
	if infos != 1 {
		for _, ev := range evs {
			if ev.Kind == containv1.Kind_KIND_CONTAINER && ev.ContainerId == ctr.ID {
				t.Logf("info: %v", ev)
			}
		}
		t.Fatalf("%d KIND_CONTAINER events for %s, want 1", infos, ctr.ID)
	}
	info := evs[infoAt]
	ci := info.GetContainer()
	if ci.Runtime != "runc" || ci.CgroupPath != "/"+ctr.ID || ci.Bundle != ctr.Bundle || ci.InitPid == 0 || info.CgroupId != cgid {
		t.Fatalf("container info: %+v (cgroup id %d, want %d)", ci, info.CgroupId, cgid)
	}
	for k, v := range ann {
		if ci.Labels[k] != v {
			t.Fatalf("label %q = %q, want %q (labels %v)", k, ci.Labels[k], v, ci.Labels)
		}
	}
	if info.ImageRef != "" || info.ImageDigest != "" {
		t.Fatal("collector set image fields; that is the enricher's job")
	}

	var sawExec bool
	for i, ev := range evs {
		if err := checkEnvelope(ev); err != nil {
			t.Fatalf("event %d: %v", i, err)
		}
		if ev.Kind == containv1.Kind_KIND_LOSS {
			continue
		}
		// No host processes: every event belongs to a container.
		if ev.ContainerId == "" || ev.CgroupId == 0 {
			t.Fatalf("event %d from outside containers: %v", i, ev)
		}
		if ev.ContainerId != ctr.ID {
			continue // another engineer's container on this host
		}
		if i < infoAt {
			t.Fatalf("event %d (%s) of %s before its KIND_CONTAINER at %d", i, ev.Kind, ctr.ID, infoAt)
		}
		if ev.CgroupId != cgid {
			t.Fatalf("event %d: cgroup id %d, want %d", i, ev.CgroupId, cgid)
		}
		if isExec(ev, ctr.ID, "/bin/sh") && slices.Equal(ev.GetExec().Argv, []string{"/bin/sh", "-c", "echo hi"}) {
			sawExec = true
			x := ev.GetExec()
			if x.ArgvTruncated || x.Argc != 3 || x.Proc.Tgid == 0 || x.Proc.Ppid == 0 || x.Proc.NsPid == 0 || x.Proc.Uid != 0 {
				t.Fatalf("exec fields: %+v", x)
			}
			if x.Proc.NsPid == x.Proc.Tgid {
				t.Fatalf("ns_pid %d equals host tgid: not the container's pid namespace", x.Proc.NsPid)
			}
			if d := time.Since(time.Unix(0, ev.WallNs)); d < 0 || d > time.Minute {
				t.Fatalf("wall_ns %d is %v from now", ev.WallNs, d)
			}
		}
	}
	if !sawExec {
		t.Fatal("exec event missing")
	}
}

// checkEnvelope checks the fields every event must have.
func checkEnvelope(ev *containv1.Event) error {
	switch {
	case len(ev.Id) != 16:
		return errors.New("id is not 16 bytes")
	case ev.Host != "test-host":
		return errors.New("host " + ev.Host)
	case ev.SchemaVersion != containv1.SchemaVersion:
		return errors.New("schema_version unset")
	case ev.MonoNs == 0 || ev.WallNs == 0:
		return errors.New("time unset")
	case ev.Kind == containv1.Kind_KIND_UNSPECIFIED:
		return errors.New("kind unset")
	}
	return nil
}

// A container started after the collector, whose very first process is
// what we look for: resolved on its first event, nothing before its
// KIND_CONTAINER.
func TestIntegrationContainerStartedMidStream(t *testing.T) {
	_, js, _ := startCollector(t, nil)
	raw := consumeRaw(t, js)
	ctr := testenv.RunContainer(t, "colfirst", testenv.ContainerSpec{Args: []string{"/bin/sh", "-c", "echo first-process; exec sleep 1000"}})
	evs := raw.waitFor(t, 10*time.Second, "the container's first exec", func(evs []*containv1.Event) bool {
		// busybox runs applets by re-executing /proc/self/exe.
		return slices.ContainsFunc(evs, func(ev *containv1.Event) bool {
			return ev.Kind == containv1.Kind_KIND_EXEC && ev.ContainerId == ctr.ID && slices.Equal(ev.GetExec().Argv, []string{"sleep", "1000"})
		})
	})
	first := slices.IndexFunc(evs, func(ev *containv1.Event) bool { return ev.ContainerId == ctr.ID })
	if evs[first].Kind != containv1.Kind_KIND_CONTAINER {
		t.Fatalf("first event of %s is %s, want KIND_CONTAINER", ctr.ID, evs[first].Kind)
	}
	if !slices.ContainsFunc(evs, func(ev *containv1.Event) bool {
		return isExec(ev, ctr.ID, "/bin/sh") && strings.Contains(strings.Join(ev.GetExec().Argv, " "), "first-process")
	}) {
		t.Fatal("the container's first process (sh -c ...) was not reported")
	}
}

func TestIntegrationSyscalls(t *testing.T) {
	_, js, _ := startCollector(t, func(c *Config) { c.CountInterval = 300 * time.Millisecond })
	raw := consumeRaw(t, js)
	ctr := testenv.RunContainer(t, "colsys", testenv.ContainerSpec{})
	cgid, err := ctr.CgroupID()
	if err != nil {
		t.Fatal(err)
	}
	// chroot fails (no CAP_SYS_CHROOT in runc's default spec) but is
	// entered, which is what sys_enter sees.
	_, _ = ctr.Exec(10*time.Second, "/bin/chroot", "/", "/bin/true")

	const chroot, execve = 161, 59
	mine := func(ev *containv1.Event) *containv1.Syscall {
		if ev.Kind != containv1.Kind_KIND_SYSCALL || ev.ContainerId != ctr.ID {
			return nil
		}
		return ev.GetSyscall()
	}
	evs := raw.waitFor(t, 15*time.Second, "chroot reported as sensitive and counts", func(evs []*containv1.Event) bool {
		var sens, count bool
		for _, ev := range evs {
			if s := mine(ev); s != nil {
				sens = sens || s.Mode == containv1.Syscall_MODE_SENSITIVE && s.Nr == chroot
				count = count || s.Mode == containv1.Syscall_MODE_COUNT && s.Nr == chroot
			}
		}
		return sens && count
	})
	firsts := map[uint32]int{}       // per syscall, summed over origins
	perOrigin := map[[2]uint32]int{} // per (syscall, origin)
	for _, ev := range evs {
		s := mine(ev)
		if s == nil {
			continue
		}
		if ev.CgroupId != cgid {
			t.Fatalf("cgroup id %d, want %d", ev.CgroupId, cgid)
		}
		switch s.Mode {
		case containv1.Syscall_MODE_FIRST:
			firsts[s.Nr]++
			perOrigin[[2]uint32{s.Nr, uint32(s.Proc.GetOrigin())}]++
			if s.Proc.GetTgid() == 0 {
				t.Fatalf("first use without process: %v", ev)
			}
		case containv1.Syscall_MODE_SENSITIVE:
			// runc's own setup (unshare, setns) runs in the container's
			// cgroup and is reported too.
			if len(s.Args) != 6 || s.Nr == chroot && (s.Name != "chroot" || s.Args[0] == 0) {
				t.Fatalf("sensitive event: %v", s)
			}
		case containv1.Syscall_MODE_COUNT:
			if s.Count == 0 || s.Name == "" {
				t.Fatalf("count event: %v", s)
			}
		}
	}
	// One first use per syscall and origin (the runtime's set-up, the
	// container's program, an exec session each get their own).
	for k, n := range perOrigin {
		if n != 1 || containv1.Origin(k[1]) == containv1.Origin_ORIGIN_UNSPECIFIED {
			t.Fatalf("syscall %d (%s): %d first-use events of origin %s, want 1 of a known origin", k[0], syscalls.Name(k[0]), n, containv1.Origin(k[1]))
		}
	}
	if firsts[execve] < 1 || len(firsts) < 10 {
		t.Fatalf("first uses: %d distinct syscalls, execve %d", len(firsts), firsts[execve])
	}
	if firsts[chroot] != 0 {
		t.Fatal("a sensitive syscall was also reported as a first use")
	}
}

// TestIntegrationAppletRename: a busybox shell runs its applets without
// exec, each child (or the shell itself, for `sh -c 'awk ...'`) renaming
// itself with prctl(PR_SET_NAME). Every rename is reported, as a
// sensitive-mode prctl whose comm is the applet, however many times it
// runs: first-use reporting, which depends on what the container and the
// collector saw before, does not decide whether an applet is seen.
func TestIntegrationAppletRename(t *testing.T) {
	_, js, _ := startCollector(t, nil)
	raw := consumeRaw(t, js)
	ctr := testenv.RunContainer(t, "colrename", testenv.ContainerSpec{
		Args: []string{"/bin/sh", "-c", `for i in 1 2 3; do date >/dev/null; sh -c 'awk "BEGIN {print 1}" >/dev/null'; done; exec sleep 1000000`},
	})
	const prSetName = 15
	renames := func(evs []*containv1.Event, comm string) int {
		n := 0
		for _, ev := range evs {
			s := ev.GetSyscall()
			if ev.ContainerId == ctr.ID && s != nil && s.Mode == containv1.Syscall_MODE_SENSITIVE && s.Name == "prctl" &&
				len(s.Args) == 6 && s.Args[0] == prSetName && s.Ret == 0 && s.Proc.GetComm() == comm {
				n++
			}
		}
		return n
	}
	raw.waitFor(t, 15*time.Second, "three renames to date and to awk", func(evs []*containv1.Event) bool {
		return renames(evs, "date") >= 3 && renames(evs, "awk") >= 3
	})
	// busybox also asks its name (prctl PR_GET_NAME) at each start: only
	// renames are reported.
	for _, ev := range raw.snapshot() {
		if s := ev.GetSyscall(); ev.ContainerId == ctr.ID && s != nil && s.Mode == containv1.Syscall_MODE_SENSITIVE && s.Name == "prctl" &&
			(len(s.Args) != 6 || s.Args[0] != prSetName) {
			t.Fatalf("a prctl other than PR_SET_NAME reported: %v", s)
		}
	}
}
