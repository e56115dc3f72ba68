package loadtest

import (
	"fmt"
	"syscall"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/containsec/contain/internal/bus"
	"github.com/containsec/contain/schemas/containv1"
)

// benchBatch is a raw batch of n generated events (past the containers'
// announcements), as one simulated collector publishes it.
func benchBatch(n int) *containv1.Batch {
	cfg := DefaultGeneratorConfig()
	start := time.Unix(1_700_000_000, 0)
	h := newHostSim(cfg, 0, start)
	h.batch(cfg.ContainersPerHost, start) // announcements
	evs, _, _ := h.batch(n, start.Add(time.Second))
	return &containv1.Batch{SchemaVersion: containv1.SchemaVersion, Host: h.name, Stage: "collector", ProducerId: "p", Seq: 1, Events: evs}
}

// BenchmarkBusCodec compares the protobuf runtime (proto.Unmarshal,
// proto.Marshal: the codec before) with bus.Decode and bus.Encode (the
// generated vtproto code plus the UTF-8 check) on generated batches of 16
// events (the load test's mean at 20,000 events/s) and 256, in
// interleaved rounds.
func BenchmarkBusCodec(b *testing.B) {
	for _, n := range []int{16, 256} {
		bt := benchBatch(n)
		data, err := proto.Marshal(bt)
		if err != nil {
			b.Fatal(err)
		}
		for round := range 3 {
			b.Run(fmt.Sprintf("decode/n=%d/r%d/proto", n, round), func(b *testing.B) {
				b.ReportAllocs()
				defer cpuPerEvent(b, n)()
				for b.Loop() {
					var x containv1.Batch
					if err := proto.Unmarshal(data, &x); err != nil {
						b.Fatal(err)
					}
				}
			})
			b.Run(fmt.Sprintf("decode/n=%d/r%d/bus", n, round), func(b *testing.B) {
				b.ReportAllocs()
				defer cpuPerEvent(b, n)()
				for b.Loop() {
					if _, err := bus.Decode(data); err != nil {
						b.Fatal(err)
					}
				}
			})
			b.Run(fmt.Sprintf("encode/n=%d/r%d/proto", n, round), func(b *testing.B) {
				b.ReportAllocs()
				defer cpuPerEvent(b, n)()
				for b.Loop() {
					if _, err := proto.Marshal(bt); err != nil {
						b.Fatal(err)
					}
				}
			})
			b.Run(fmt.Sprintf("encode/n=%d/r%d/bus", n, round), func(b *testing.B) {
				b.ReportAllocs()
				defer cpuPerEvent(b, n)()
				for b.Loop() {
					if _, err := bus.Encode(bt); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

// cpuPerEvent reports, when the returned func is called, the process's CPU
// time (user + system, every thread: GC included) per event since it was
// called, next to ns/event of wall time. On a shared machine the wall time
// also counts time spent waiting for a core; the CPU time does not.
func cpuPerEvent(b *testing.B, n int) func() {
	before := processCPU()
	return func() {
		events := float64(b.N * n)
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/events, "ns/event")
		b.ReportMetric(float64((processCPU()-before).Nanoseconds())/events, "cpu-ns/event")
	}
}

// processCPU is this process's user + system CPU time so far.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
