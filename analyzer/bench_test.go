package analyzer

import (
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/containsec/contain/schemas/containv1"
)

// benchEvents is a converged-steady-state mix: mostly syscall counts,
// some execs, connects and writes, all known to the baseline.
func benchEvents(e *Engine, containers int) []*containv1.Event {
	var evs []*containv1.Event
	names := []string{"read", "write", "epoll_wait", "accept4", "openat", "close", "fstat", "sendto"}
	for c := range containers {
		ctr := fmt.Sprintf("c%d", c)
		learn(e, ctr)
		for i, n := range names {
			e.Observe(sysEv(ctr, sec(0.5+float64(i)/100), n))
		}
	}
	for i := range 4096 {
		ctr := fmt.Sprintf("c%d", i%containers)
		at := sec(10 + float64(i)/1000)
		switch i % 16 {
		case 0:
			evs = append(evs, execEv(ctr, at, "/bin/sleep", "sleep", "1"))
		case 1:
			evs = append(evs, netEv(ctr, at, containv1.Network_OP_CONNECT, [4]byte{10, 0, 0, 5}, 5432))
		case 2:
			evs = append(evs, fileEv(ctr, at, containv1.File_OP_OPEN_WRITE, "/var/www/cache/x"))
		default:
			evs = append(evs, sysEv(ctr, at, names[i%len(names)]))
		}
	}
	return evs
}

// BenchmarkEngineObserve is events scored per second on one core against
// converged baselines (the steady state).
func BenchmarkEngineObserve(b *testing.B) {
	e := newEngine(b, testConfig(), nil)
	evs := benchEvents(e, 32)
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	for i := 0; i < b.N; i++ {
		if out := e.Observe(evs[i%len(evs)]); len(out) != 0 {
			b.Fatalf("benign event alerted: %v", out[0].GetAlert().Reasons)
		}
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "events/s")
}

// BenchmarkEngineObserveSyscalls is the pure syscall-count path.
func BenchmarkEngineObserveSyscalls(b *testing.B) {
	e := newEngine(b, testConfig(), nil)
	learn(e, "c1")
	evs := []*containv1.Event{sysEv("c1", sec(10), "read"), sysEv("c1", sec(10), "write"), sysEv("c1", sec(10), "close")}
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	for i := 0; i < b.N; i++ {
		e.Observe(evs[i%3])
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "events/s")
}

// BenchmarkBaselineMemory1000 reports the heap held by 1,000 image
// baselines, each with a realistic size: 40 executables with argv shapes
// and edges, 120 syscalls, a 502-syscall sequence (1,801 sequence-model
// grams of 1 to 6 syscalls; 500 3-grams before design 018), 20 peers, 3 ports, 10
// write prefixes, 2 uids.
func BenchmarkBaselineMemory1000(b *testing.B) {
	for range b.N {
		runtime.GC()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		cfg := testConfig()
		cfg.MaxImages = 2000
		e := newEngine(b, cfg, nil)
		for img := range 1000 {
			ctr := fmt.Sprintf("c%d", img)
			digest := fmt.Sprintf("sha256:%064d", img)
			at := sec(0)
			add := func(ev *containv1.Event) {
				ev.ImageDigest = digest
				ev.ImageRef = fmt.Sprintf("app%d:1", img)
				e.Observe(ev)
			}
			for i := range 40 {
				add(execEv(ctr, at, fmt.Sprintf("/usr/bin/tool%d", i), "tool", "-v", "/etc/x"))
			}
			for i := range 120 {
				add(sysEv(ctr, at, fmt.Sprintf("sys_%d", i)))
			}
			seq := make([]uint32, 502)
			for i := range seq {
				seq[i] = uint32((i*7 + img) % 300)
			}
			s := base(ctr, at)
			s.Kind = containv1.Kind_KIND_SYSCALL
			s.Body = &containv1.Event_Syscall{Syscall: &containv1.Syscall{Mode: containv1.Syscall_MODE_SEQUENCE, Sequence: seq}}
			add(s)
			for i := range 20 {
				add(netEv(ctr, at, containv1.Network_OP_CONNECT, [4]byte{10, 0, byte(i), 1}, 443))
			}
			for i := range 3 {
				add(netEv(ctr, at, containv1.Network_OP_LISTEN, [4]byte{}, uint32(8080+i)))
			}
			for i := range 10 {
				add(fileEv(ctr, at, containv1.File_OP_CREATE, fmt.Sprintf("/data/d%d/f", i)))
			}
		}
		// Drop per-container state to count baselines only.
		clear(e.containers)
		runtime.GC()
		runtime.ReadMemStats(&after)
		items := 0
		for _, k := range e.Keys() {
			items += e.Baseline(k).Size()
		}
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/(1<<20), "MB/1000images")
		b.ReportMetric(float64(items)/1000, "items/image")
		runtime.KeepAlive(e)
	}
}
