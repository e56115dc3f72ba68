package collector

import (
	"context"
	"errors"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/containsec/contain/internal/metrics"
	"github.com/containsec/contain/internal/testenv"
	"github.com/containsec/contain/schemas/containv1"
)

// This kernel offers everything the collector uses; the probe says so.
func TestKernelFeaturesProbe(t *testing.T) {
	testenv.RequireRoot(t)
	f := probeFeatures()
	if err := f.required(); err != nil {
		t.Fatalf("required features missing: %v", err)
	}
	if f.TpBTF != nil || f.RawTP != nil {
		t.Fatalf("tp_btf %v, raw_tp %v", f.TpBTF, f.RawTP)
	}
	for mode, want := range map[string][]string{
		AttachAuto:  {"tp_btf/sched_process_exec", "raw_tracepoint/sched_process_exec"},
		AttachTpBTF: {"tp_btf/sched_process_exec"},
		AttachRawTP: {"raw_tracepoint/sched_process_exec"},
	} {
		fams, err := f.families(mode)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, fam := range fams {
			got = append(got, fam[0].name)
		}
		if !slices.Equal(got, want) {
			t.Fatalf("%s: families %v, want %v", mode, got, want)
		}
	}
	// A kernel without tp_btf: auto falls back, tp_btf is a typed error.
	f.TpBTF = ebpf.ErrNotSupported
	if fams, err := f.families(AttachAuto); err != nil || len(fams) != 1 || fams[0][0].name != "raw_tracepoint/sched_process_exec" {
		t.Fatalf("auto without tp_btf: %v %v", fams, err)
	}
	if _, err := f.families(AttachTpBTF); !errors.Is(err, ErrKernelUnsupported) || !errors.Is(err, ebpf.ErrNotSupported) {
		t.Fatalf("tp_btf without tp_btf: %v", err)
	}
	f.Loop = ebpf.ErrNotSupported
	if err := f.required(); !errors.Is(err, ErrKernelUnsupported) || !strings.Contains(err.Error(), "bpf_loop") {
		t.Fatalf("no bpf_loop: %v", err)
	}
}

func TestConfigAttachMode(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Host = "h"
	for mode, ok := range map[string]bool{"": true, "auto": true, "tp_btf": true, "raw_tp": true, "kprobe": false} {
		cfg.AttachMode = mode
		if err := cfg.Validate(); (err == nil) != ok {
			t.Fatalf("attach_mode %q: %v", mode, err)
		}
	}
}

// Forced onto raw tracepoints (collector.attach_mode: raw_tp, the fallback
// of kernels without tp_btf), the collector attributes a real container's
// exec, file and first-use syscall records to it, with the origin its
// lineage gives (a runc exec: an exec session).
func TestIntegrationRawTPAttribution(t *testing.T) {
	c, js, _ := startCollector(t, func(cfg *Config) {
		cfg.AttachMode = AttachRawTP
		cfg.Syscalls, cfg.Files = true, true
	})
	for _, h := range c.Hooks() {
		if !strings.HasPrefix(h, "raw_tracepoint/") {
			t.Fatalf("hooks %v: not all raw tracepoints", c.Hooks())
		}
	}
	raw := consumeRaw(t, js)
	ctr := testenv.RunContainer(t, "colrawtp", testenv.ContainerSpec{})
	cgid, err := ctr.CgroupID()
	if err != nil {
		t.Fatal(err)
	}
	const script = "echo x > /tmp/rawtp; true"
	if out, err := ctr.Exec(10*time.Second, "/bin/sh", "-c", script); err != nil {
		t.Fatalf("runc exec: %v: %s", err, out)
	}
	isSession := func(ev *containv1.Event) bool {
		return isExec(ev, ctr.ID, "/bin/sh") && slices.Equal(ev.GetExec().Argv, []string{"/bin/sh", "-c", script})
	}
	mine := func(ev *containv1.Event) bool { return ev.ContainerId == ctr.ID && ev.CgroupId == cgid }
	evs := raw.waitFor(t, 10*time.Second, "exec, file and first-use records of the container", func(evs []*containv1.Event) bool {
		var exec, file, first bool
		for _, ev := range evs {
			if !mine(ev) {
				continue
			}
			exec = exec || isSession(ev)
			file = file || ev.GetFile().GetPath() == "/tmp/rawtp"
			first = first || ev.GetSyscall().GetMode() == containv1.Syscall_MODE_FIRST
		}
		return exec && file && first
	})
	var info bool
	for _, ev := range evs {
		if ev.Kind == containv1.Kind_KIND_CONTAINER && mine(ev) {
			info = ev.GetContainer().GetRuntime() == "runc"
		}
		if isSession(ev) {
			if !info {
				t.Fatal("exec before the container's KIND_CONTAINER")
			}
			if o := ev.GetExec().GetProc().GetOrigin(); o != containv1.Origin_ORIGIN_EXEC_SESSION {
				t.Fatalf("runc exec's /bin/sh: origin %s, want ORIGIN_EXEC_SESSION", o)
			}
		}
		if f := ev.GetFile(); f.GetPath() == "/tmp/rawtp" && (f.GetProc().GetOrigin() != containv1.Origin_ORIGIN_EXEC_SESSION || f.Op != containv1.File_OP_CREATE) {
			t.Fatalf("file record: %v", f)
		}
	}
}

// A first use whose record the full ring refused is reported at the next
// use: the kernel forgets the first-use bit of a lost record. The ring is a
// page and nothing reads it until the first sync has run (pinned to CPU 0,
// where its bit lives); then the collector reads, and a second sync on CPU
// 0 must be reported as the exec session's first use of sync.
func TestIntegrationFirstUseRecoveredAfterFullRing(t *testing.T) {
	testenv.RequireRoot(t)
	_, _, js := testenv.NATS(t)
	cfg := DefaultConfig()
	cfg.Host = "test-host"
	cfg.FlushInterval = 20 * time.Millisecond
	cfg.MaxFlushInterval = 0 // the absence checked after 3 flush intervals must not be a batch still waiting
	cfg.LossInterval = 200 * time.Millisecond
	cfg.RingBufferBytes = os.Getpagesize()
	cfg.Syscalls, cfg.Files, cfg.Network = true, false, false
	c, err := New(cfg, js, metrics.New(), testenv.Logger(t))
	if err != nil {
		if errors.Is(err, ebpf.ErrNotSupported) {
			testenv.Unavailable(t, "eBPF hooks: "+err.Error())
		}
		t.Fatal(err)
	}
	raw := consumeRaw(t, js)
	ctr := testenv.RunContainer(t, "colfirstfull", testenv.ContainerSpec{})
	const script = "taskset -c 0 sync"
	if out, err := ctr.Exec(10*time.Second, "/bin/sh", "-c", script); err != nil {
		c.Close()
		t.Fatalf("runc exec: %v: %s", err, out)
	}
	lost := c.lossCounts()[[2]string{"ringbuf", "reserve_failed_syscall"}]
	if lost == 0 {
		c.Close()
		t.Fatal("the one-page ring never refused a syscall record: the test proves nothing")
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
	syncFirst := func(ev *containv1.Event) bool {
		s := ev.GetSyscall()
		return ev.ContainerId == ctr.ID && s.GetMode() == containv1.Syscall_MODE_FIRST && s.GetName() == "sync" &&
			s.GetProc().GetOrigin() == containv1.Origin_ORIGIN_EXEC_SESSION
	}
	raw.waitFor(t, 10*time.Second, "the container announced from the ring's records", func(evs []*containv1.Event) bool {
		return slices.ContainsFunc(evs, func(ev *containv1.Event) bool {
			return ev.Kind == containv1.Kind_KIND_CONTAINER && ev.ContainerId == ctr.ID
		})
	})
	time.Sleep(3 * cfg.FlushInterval)
	if slices.ContainsFunc(raw.snapshot(), syncFirst) {
		t.Fatal("the first sync was reported although the ring was full: the test proves nothing")
	}
	t.Logf("%d syscall records refused by the full ring before the reader started", lost)

	if out, err := ctr.Exec(10*time.Second, "/bin/sh", "-c", script); err != nil {
		t.Fatalf("runc exec: %v: %s", err, out)
	}
	raw.waitFor(t, 10*time.Second, "the second sync reported as the session's first use", func(evs []*containv1.Event) bool {
		return slices.ContainsFunc(evs, syncFirst)
	})
}
