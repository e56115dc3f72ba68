package enricher

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containsec/contain/analyzer"
	"github.com/containsec/contain/internal/bus"
	"github.com/containsec/contain/schemas/containv1"
)

// rawBatch is an encoded raw batch of n events of host h1's containers
// c0..c63 in the load test generator's mix: 10% execs, 20% forks and
// exits, 35% syscall counts, 20% connections, 15% file writes.
func rawBatch(b *testing.B, n, seq int) []byte {
	ids := containv1.NewIDGen()
	evs := make([]*containv1.Event, n)
	for i := range evs {
		c := (seq*n + i) % 64
		ev := &containv1.Event{Id: ids.Next(), Host: "h1", ContainerId: fmt.Sprintf("%064d", c), ContainerName: fmt.Sprintf("h1-svc%d-%d", c%10, c),
			MonoNs: uint64(1e12 + i), WallNs: 1_700_000_000_000_000_000 + int64(i), SchemaVersion: containv1.SchemaVersion, CgroupId: uint64(1_000_000 + c)}
		proc := &containv1.Process{Pid: 10_001, Tgid: 10_001, Ppid: 10_000, NsPid: 2, Uid: 1000, Gid: 1000, Euid: 1000, Comm: "app"}
		switch r := (i * 37) % 100; {
		case r < 10:
			argv := []string{"/usr/local/bin/app", "--config", "/etc/app/config.yaml", "--log-level", "info"}
			ev.Kind = containv1.Kind_KIND_EXEC
			ev.Body = &containv1.Event_Exec{Exec: &containv1.Exec{Proc: proc, Filename: argv[0], Argv: argv, Argc: 5, Cwd: "/srv/app", Exe: argv[0]}}
		case r < 30:
			ev.Kind = containv1.Kind_KIND_PROCESS
			ev.Body = &containv1.Event_Process{Process: &containv1.ProcessLifecycle{Proc: proc, Op: containv1.ProcessLifecycle_OP_FORK, ChildTgid: 10_002}}
		case r < 65:
			ev.Kind = containv1.Kind_KIND_SYSCALL
			ev.Body = &containv1.Event_Syscall{Syscall: &containv1.Syscall{Proc: proc, Mode: containv1.Syscall_MODE_COUNT, Nr: 0, Name: "read", Count: 1234}}
		case r < 85:
			ev.Kind = containv1.Kind_KIND_NETWORK
			ev.Body = &containv1.Event_Network{Network: &containv1.Network{Proc: proc, Op: containv1.Network_OP_CONNECT, Protocol: containv1.Network_PROTOCOL_TCP,
				Family: 2, LocalAddr: make([]byte, 16), LocalPort: 40000, RemoteAddr: make([]byte, 16), RemotePort: 5432}}
		default:
			ev.Kind = containv1.Kind_KIND_FILE
			ev.Body = &containv1.Event_File{File: &containv1.File{Proc: proc, Op: containv1.File_OP_OPEN_WRITE, Path: fmt.Sprintf("/var/lib/app/cache/%d.dat", i), Flags: 0o101, Mode: 0o644}}
		}
		evs[i] = ev
	}
	data, err := bus.Encode(&containv1.Batch{SchemaVersion: containv1.SchemaVersion, Host: "h1", Stage: "collector", ProducerId: "p", Seq: uint64(seq), Events: evs})
	if err != nil {
		b.Fatal(err)
	}
	return data
}

// BenchmarkEnricherStageCPU is the enricher's work per event on a warm
// cache, from a raw message's payload to the encoded output message, in
// batches of 20, 50 and 100 events: path=wire scans the payload and
// relays the events on the wire (fetchMessages, as the stage runs),
// path=decoded decodes it (as bus.Consume did for the enricher) and runs
// enrichBatch, route and encoding. The NATS client's work per batch is
// not here. cpu-ns/event is the process's CPU time, GC included.
func BenchmarkEnricherStageCPU(b *testing.B) {
	for _, path := range []string{"wire", "decoded"} {
		for _, n := range []int{20, 50, 100} {
			b.Run(fmt.Sprintf("path=%s/n=%d", path, n), func(b *testing.B) {
				e := benchEnricher(b, 0)
				for c := range 64 {
					e.store(ContainerImage{Host: "h1", ContainerID: fmt.Sprintf("%064d", c), ImageRef: "registry.local/app:1", ImageDigest: testDigest})
				}
				for c := range 10_000 { // the fleet's 200 hosts × 50 containers
					e.store(ContainerImage{Host: fmt.Sprintf("h%d", 2+c/50), ContainerID: fmt.Sprintf("%064d", c), ImageRef: "registry.local/app:1", ImageDigest: testDigest})
				}
				in := make([][]byte, 16)
				for i := range in {
					in[i] = rawBatch(b, n, i)
				}
				ctx := context.Background()
				subject := containv1.RawSubject("h1")
				b.ReportAllocs()
				defer cpuPerEvent(b, n)()
				i := 0
				for b.Loop() {
					data := in[i%len(in)]
					i++
					if path == "wire" {
						if _, _, err := e.fetchMessages(ctx, &oneFetch{subject: subject, data: data}); err != nil {
							b.Fatal(err)
						}
						e.recycle() // as handleMessages after a publish
						continue
					}
					bt, err := bus.DecodeAliased(data)
					if err != nil {
						b.Fatal(err)
					}
					if _, _, err := e.messages(ctx, []*containv1.Batch{bt}); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

// cpuPerEvent reports, when the returned func is called, the process's CPU
// time (user + system, GC included) per event since it was called.
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

// TestMessagesSplitsOversizedBatches: a batch that the enrichment grows
// past bus.MaxPayload is published in parts under producer ids ~0, ~1..,
// every event once and in order.
func TestMessagesSplitsOversizedBatches(t *testing.T) {
	e := benchEnricher(nil, 1)
	big := strings.Repeat("a", 3<<20)
	var evs []*containv1.Event
	for i := range 4 {
		ev := execEvent("h1", "c0", uint64(i))
		ev.GetExec().Argv = []string{big}
		evs = append(evs, ev)
	}
	in := &containv1.Batch{SchemaVersion: containv1.SchemaVersion, Host: "h1", Stage: "collector", ProducerId: "p", Seq: 7, Events: evs}
	msgs, sizes, err := e.messages(context.Background(), []*containv1.Batch{in})
	if err != nil {
		t.Fatal(err)
	}
	if len(msgs) < 2 || len(msgs) != len(sizes) {
		t.Fatalf("%d messages (sizes %v), want the batch in parts", len(msgs), sizes)
	}
	var mono []uint64
	for i, m := range msgs {
		if len(m.Data) > bus.MaxPayload-1024 {
			t.Errorf("part %d is %d bytes", i, len(m.Data))
		}
		b, err := bus.Decode(m.Data)
		if err != nil {
			t.Fatal(err)
		}
		if want := fmt.Sprintf("p~%d", i); b.ProducerId != want || b.Seq != 7 {
			t.Errorf("part %d: producer %q seq %d, want %q 7", i, b.ProducerId, b.Seq, want)
		}
		for _, ev := range b.Events {
			if ev.ImageDigest != testDigest {
				t.Errorf("part %d: event not enriched", i)
			}
			mono = append(mono, ev.MonoNs)
		}
	}
	if fmt.Sprint(mono) != "[0 1 2 3]" {
		t.Errorf("events %v, want [0 1 2 3]", mono)
	}
}

// BenchmarkEnricherFleetBatches is BenchmarkEnricherStageCPU's wire path
// on the fleet load test's shape: 200 hosts × 50 containers in the cache
// (10 images), each raw batch 245 events of one host's containers in
// random order, the hosts in turn (so each batch meets a cold part of the
// cache); partitions=3 routes by image digest over 3 partitions as the
// fleet's analyzers do, partitions=1 does not route.
// dictionary=false writes no container dictionary
// (enricher.container_dictionary); out-bytes/event is the output's size.
func BenchmarkEnricherFleetBatches(b *testing.B) {
	for _, parts := range []int{1, 3} {
		for _, dict := range []bool{false, true} {
			b.Run(fmt.Sprintf("partitions=%d/dictionary=%v", parts, dict), func(b *testing.B) {
				benchFleetBatches(b, parts, dict)
			})
		}
	}
}

func benchFleetBatches(b *testing.B, parts int, dict bool) {
	const hosts, perHost, n = 200, 50, 245
	e := benchEnricher(b, 0)
	e.cfg.ContainerDictionary = dict
	e.SetRouter(analyzer.NewRouter(analyzer.Config{GroupBy: analyzer.GroupByDigest, Partitions: parts}))
	r := rand.New(rand.NewPCG(1, 1))
	ids := make([][]string, hosts)
	for h := range hosts {
		for c := range perHost {
			id := fmt.Sprintf("%016x%016x%016x%016x", r.Uint64(), r.Uint64(), r.Uint64(), r.Uint64())
			ids[h] = append(ids[h], id)
			e.store(ContainerImage{Host: fmt.Sprintf("host-%03d", h), ContainerID: id, Name: fmt.Sprintf("svc-%d", c),
				ImageRef: fmt.Sprintf("registry.local/app%d:1", c%10), ImageDigest: fmt.Sprintf("sha256:%064x", c%10+1)})
		}
	}
	in := make([][]byte, hosts)
	subjects := make([]string, hosts)
	for h := range hosts {
		host := fmt.Sprintf("host-%03d", h)
		subjects[h] = containv1.RawSubject(host)
		evs := make([]*containv1.Event, n)
		for i := range evs {
			evs[i] = &containv1.Event{Host: host, ContainerId: ids[h][r.IntN(perHost)], MonoNs: uint64(i), SchemaVersion: 1, Kind: containv1.Kind_KIND_SYSCALL,
				Body: &containv1.Event_Syscall{Syscall: &containv1.Syscall{Proc: &containv1.Process{Pid: 10, Tgid: 10, Comm: "app"}, Mode: containv1.Syscall_MODE_COUNT, Name: "read", Count: 12}}}
		}
		data, err := bus.Encode(&containv1.Batch{SchemaVersion: 1, Host: host, Stage: "collector", ProducerId: host, Seq: 1, Events: evs})
		if err != nil {
			b.Fatal(err)
		}
		in[h] = data
	}
	ctx := context.Background()
	b.ReportAllocs()
	defer cpuPerEvent(b, n)()
	i, out := 0, 0
	for b.Loop() {
		h := i % hosts
		i++
		msgs, _, err := e.fetchMessages(ctx, &oneFetch{subject: subjects[h], data: in[h]})
		if err != nil {
			b.Fatal(err)
		}
		for _, m := range msgs {
			out += len(m.Data)
		}
		e.recycle() // as handleMessages after a publish
	}
	b.ReportMetric(float64(out)/float64(i*n), "out-bytes/event")
}
