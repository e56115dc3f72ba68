package collector

import (
	"errors"
	"math/rand/v2"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"golang.org/x/sys/unix"

	"github.com/containsec/contain/internal/testenv"
)

// The reader's loop (ringLoop, the production code) against the real
// programs' submit_flags and a real ring buffer: two threads, one per CPU,
// write bursts of urgent (exec) and slow other (syscall: slow_record_test)
// records through BPF_PROG_TEST_RUN with pauses around the reader going
// idle, and every
// record's delivery (read time minus its kernel timestamp) is measured. A
// delivery of idleWait/2 or more is a lost wakeup: the record waited for
// the idle wait's timeout.
//
// It runs 2 s by default; CONTAIN_TEST_WAKEUP_RACE=<duration> runs it
// longer, and CONTAIN_TEST_WAKEUP_LEGACY=1 runs the reader before design
// 029 instead (it fails within seconds; docs/benchmarks.md), =inflight or
// =recheck without only one of the two changes.
func TestBPFWakeupRace(t *testing.T) {
	testenv.RequireRoot(t)
	if runtime.NumCPU() < 2 {
		testenv.Unavailable(t, "two CPUs")
	}
	dur := 2 * time.Second
	if v := os.Getenv("CONTAIN_TEST_WAKEUP_RACE"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatalf("CONTAIN_TEST_WAKEUP_RACE: %v", err)
		}
		dur = d
	}
	var legacy legacyReader
	switch v := os.Getenv("CONTAIN_TEST_WAKEUP_LEGACY"); v {
	case "":
	case "1":
		legacy = legacyReader{noInflight: true, noRecheck: true}
	case "inflight": // only the in-flight poll missing
		legacy = legacyReader{noInflight: true}
	case "recheck": // only the re-check missing
		legacy = legacyReader{noRecheck: true}
	default:
		t.Fatalf("CONTAIN_TEST_WAKEUP_LEGACY=%q: 1, inflight or recheck", v)
	}

	me := myCgroupID(t)
	spec, err := loadCollector()
	if err != nil {
		t.Fatal(err)
	}
	for name := range spec.Programs {
		if name != "exec_raw_tp" && name != "slow_record_test" {
			delete(spec.Programs, name)
		}
	}
	const ringBytes = 1 << 22
	spec.Maps["events"].MaxEntries = ringBytes
	chroot := nrOf(t, "chroot")
	for name, v := range map[string]any{
		"host_cgroup_id": me + 1,
		"wake_types":     wakeTypes([]string{"exec"}),
		"wake_bytes":     uint64(ringBytes / 4),
		"wake_gated":     uint32(1),
	} {
		if err := spec.Variables[name].Set(v); err != nil {
			t.Fatal(err)
		}
	}
	coll, err := ebpf.NewCollection(spec)
	if err != nil {
		t.Fatal(err)
	}
	defer coll.Close()
	rb := coll.Maps["events"]
	rr, err := newRingRead(rb.FD(), int(rb.MaxEntries()))
	if err != nil {
		t.Fatal(err)
	}
	defer rr.close()
	rw, err := newRingWait(rb.FD())
	if err != nil {
		testenv.Unavailable(t, "the ring buffer in the netpoller: "+err.Error())
	}
	defer rw.close()

	var (
		read, slow, urgentRead atomic.Int64
		worst                  atomic.Int64 // ns
		stop                   atomic.Bool
	)
	wakeups := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "w"}, []string{"cause"})
	loop := ringLoop{
		rr: rr, rw: rw, gate: coll.Variables["wake_gate"], idleGate: coll.Variables["idle_gate"],
		params: wakeupParams{gated: true, coalesce: 2 * time.Millisecond, poll: 2 * time.Millisecond},
		drain: func() (urgent bool, total int, ok bool) {
			var now unix.Timespec
			_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &now)
			n, err := rr.drain(1<<20, func(rec []byte) {
				ev, err := decode(rec, decodeOptions{})
				if err != nil {
					t.Errorf("decode: %v", err)
					return
				}
				if ev.GetExec() != nil {
					urgent = true
					urgentRead.Add(1)
				}
				d := now.Nano() - int64(ev.MonoNs)
				if d >= int64(idleWait/2) {
					slow.Add(1)
				}
				for w := worst.Load(); d > w && !worst.CompareAndSwap(w, d); w = worst.Load() {
				}
				read.Add(1)
			})
			return urgent, n, err == nil
		},
		flush:    func() {},
		stopping: stop.Load,
		wakeups:  wakeups,
		errors:   func(kind string) { t.Errorf("reader error %s", kind) },
		legacy:   legacy,
	}
	done := make(chan struct{})
	go func() { defer close(done); loop.run() }()

	var written atomic.Int64
	var wg sync.WaitGroup
	for cpu := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			runtime.LockOSThread() // never unlocked: the pinned thread exits with the goroutine
			var set unix.CPUSet
			set.Set(cpu)
			if err := unix.SchedSetaffinity(0, &set); err != nil {
				t.Error(err)
				return
			}
			rng := rand.New(rand.NewPCG(uint64(cpu), uint64(time.Now().UnixNano())))
			for end := time.Now().Add(dur); time.Now().Before(end); {
				for range 1 + rng.IntN(3) {
					// CPU 0: other records that take up to ~100 µs from
					// reservation to commit (an exec record's argv and
					// path walk, or a CPU taken away mid-program, in real
					// life); CPU 1: urgent records, written at once.
					prog, ctx := coll.Programs["exec_raw_tp"], []uint64{0, 0, 0}
					if cpu == 0 {
						prog, ctx = coll.Programs["slow_record_test"], []uint64{uint64(rng.IntN(40000)), uint64(chroot)}
					}
					if _, err := prog.Run(&ebpf.RunOptions{Context: ctx}); err != nil {
						if errors.Is(err, ebpf.ErrNotSupported) {
							testenv.Unavailable(t, "BPF_PROG_TEST_RUN for raw tracepoints")
						}
						t.Error(err)
						return
					}
					written.Add(1)
				}
				// Around the reader's storm and idle transitions (polls
				// of 1-2 ms with coalesce 2 ms).
				time.Sleep(time.Duration(rng.IntN(4000)) * time.Microsecond)
			}
		}()
	}
	wg.Wait()
	// Every record is read within the idle wait's safety net.
	deadline := time.Now().Add(idleWait + time.Second)
	for read.Load() < written.Load() && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	stop.Store(true)
	rw.interrupt()
	<-done
	cause := func(c string) float64 { return testutil.ToFloat64(wakeups.WithLabelValues(c)) }
	t.Logf("legacy %+v, %v: %d records written (%d urgent read), %d read; %d delivered after ≥ %v, worst %v; wakeups kernel %.0f timer %.0f inflight %.0f recheck %.0f",
		legacy, dur, written.Load(), urgentRead.Load(), read.Load(), slow.Load(), idleWait/2, time.Duration(worst.Load()),
		cause("kernel"), cause("timer"), cause("inflight"), cause("recheck"))
	if read.Load() != written.Load() {
		t.Errorf("%d records written, %d read", written.Load(), read.Load())
	}
	if slow.Load() > 0 {
		t.Errorf("%d record(s) waited ≥ %v for the reader (lost wakeup), worst %v", slow.Load(), idleWait/2, time.Duration(worst.Load()))
	}
}

// The real submit_flags takes the gates and wakes the reader as the
// model's mirror (submitFlags) does, from every state of the gates, for
// urgent and other records: exec records through exec_raw_tp, urgent or
// not by wake_types. Wakeups are seen on an edge-triggered epoll of the
// ring, as the netpoller sees them.
func TestBPFSubmitFlagsGates(t *testing.T) {
	testenv.RequireRoot(t)
	me := myCgroupID(t)
	for _, urgent := range []bool{true, false} {
		spec, err := loadCollector()
		if err != nil {
			t.Fatal(err)
		}
		for name := range spec.Programs {
			if name != "exec_raw_tp" {
				delete(spec.Programs, name)
			}
		}
		spec.Maps["events"].MaxEntries = 1 << 16
		wt := uint32(0)
		if urgent {
			wt = wakeTypes([]string{"exec"})
		}
		for name, v := range map[string]any{"host_cgroup_id": me + 1, "wake_types": wt, "wake_bytes": uint64(1 << 14), "wake_gated": uint32(1)} {
			if err := spec.Variables[name].Set(v); err != nil {
				t.Fatal(err)
			}
		}
		coll, err := ebpf.NewCollection(spec)
		if err != nil {
			t.Fatal(err)
		}
		defer coll.Close()
		rb := coll.Maps["events"]
		rr, err := newRingRead(rb.FD(), int(rb.MaxEntries()))
		if err != nil {
			t.Fatal(err)
		}
		defer rr.close()
		ep, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
		if err != nil {
			t.Fatal(err)
		}
		defer unix.Close(ep)
		if err := unix.EpollCtl(ep, unix.EPOLL_CTL_ADD, rb.FD(), &unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLET}); err != nil {
			t.Fatal(err)
		}
		woken := func(timeout time.Duration) bool {
			evs := make([]unix.EpollEvent, 1)
			for {
				n, err := unix.EpollWait(ep, evs, int(timeout.Milliseconds()))
				if errors.Is(err, unix.EINTR) {
					continue
				}
				if err != nil {
					t.Fatal(err)
				}
				return n > 0
			}
		}
		wake, idle := coll.Variables["wake_gate"], coll.Variables["idle_gate"]
		for _, g := range []modelGates{{true, true}, {true, false}, {false, true}, {false, false}} {
			b2 := func(b bool) uint64 {
				if b {
					return 1
				}
				return 0
			}
			if err := errors.Join(wake.Set(b2(g.wake)), idle.Set(b2(g.idle))); err != nil {
				t.Fatal(err)
			}
			want := g
			wantWake := submitFlags(&want, urgent)
			if _, err := coll.Programs["exec_raw_tp"].Run(&ebpf.RunOptions{Context: []uint64{0, 0, 0}}); err != nil {
				if errors.Is(err, ebpf.ErrNotSupported) {
					testenv.Unavailable(t, "BPF_PROG_TEST_RUN for raw tracepoints")
				}
				t.Fatal(err)
			}
			wait := 50 * time.Millisecond // no wakeup: how long to be sure
			if wantWake {
				wait = 2 * time.Second
			}
			gotWake := woken(wait)
			var gw, gi uint64
			if err := errors.Join(wake.Get(&gw), idle.Get(&gi)); err != nil {
				t.Fatal(err)
			}
			got := modelGates{wake: gw == 1, idle: gi == 1}
			if n, _ := rr.drain(10, func([]byte) {}); n != 1 {
				t.Fatalf("urgent %v gates %+v: %d records", urgent, g, n)
			}
			if got != want || gotWake != wantWake {
				t.Errorf("urgent %v, gates %+v: wakeup %v, gates after %+v; the model: wakeup %v, gates %+v",
					urgent, g, gotWake, got, wantWake, want)
			}
		}
	}
}
