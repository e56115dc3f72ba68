package analyzer

import (
	"fmt"
	"math/rand/v2"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/containsec/contain/internal/bus"
	"github.com/containsec/contain/schemas/containv1"
)

// fleetMix builds encoded, enriched batches of the fleet load test's
// event mix (loadtest/generator.go's normal behaviour: 10% execs, 20%
// forks and exits, 35% syscalls, mostly counts, 20% connects to the
// image's peers, 15% writes under its usual paths), one batch per host
// of perBatch events of random containers among perHost, starting at
// wall time at. Each container's KIND_CONTAINER event comes first.
type fleetMix struct {
	rnd      *rand.Rand
	ids      *containv1.IDGen
	hosts    [][]*fleetCtr
	seq      uint64
	perBatch int
	// dict: batches carry a container dictionary, as the enricher writes
	// them (enricher.container_dictionary).
	dict bool
}

type fleetCtr struct {
	id, name, ref, digest string
	image                 int
	nextPid, initPid      uint32
	firsts                int
	announced             bool
}

var (
	fleetExecs = [][]string{
		{"/usr/local/bin/app", "--config", "/etc/app/config.yaml", "--log-level", "info"},
		{"/usr/local/bin/healthcheck", "--url", "http://127.0.0.1:8080/healthz", "--timeout", "2s"},
		{"/usr/bin/logrotate", "-s", "/var/lib/logrotate/status", "/etc/logrotate.d/app"},
		{"/usr/local/bin/worker", "--queue", "orders", "--concurrency", "8"},
	}
	fleetSyscalls = []string{"read", "write", "openat", "close", "futex", "epoll_wait",
		"sendto", "recvfrom", "mmap", "munmap", "fstat", "clock_gettime"}
	fleetFiles = []string{"/var/log/app/app.log", "/var/lib/app/cache/", "/tmp/app-upload-"}
	fleetPorts = []uint32{5432, 6379, 443, 9092}
)

func newFleetMix(hosts, perHost, images, perBatch int) *fleetMix {
	f := &fleetMix{rnd: rand.New(rand.NewPCG(1, 2)), ids: containv1.NewIDGen(), perBatch: perBatch}
	for h := range hosts {
		var cs []*fleetCtr
		for c := range perHost {
			img := (h*perHost + c) % images
			cs = append(cs, &fleetCtr{
				id:      fmt.Sprintf("%064x", f.rnd.Uint64()),
				name:    fmt.Sprintf("fleet-%03d-svc%d-%d", h, img, c),
				ref:     fmt.Sprintf("registry.example.com/shop/svc%d:1.%d.0", img, img),
				digest:  fmt.Sprintf("sha256:%064x", uint64(img)*0x9e3779b97f4a7c15+1),
				image:   img,
				initPid: uint32(10_000 + c*100), nextPid: uint32(10_000 + c*100 + 1),
			})
		}
		f.hosts = append(f.hosts, cs)
	}
	return f
}

// batches is one encoded batch per host at wall time at.
func (f *fleetMix) batches(tb testing.TB, at int64) [][]byte {
	var out [][]byte
	for h, cs := range f.hosts {
		host := fmt.Sprintf("fleet-%03d", h)
		evs := make([]*containv1.Event, 0, f.perBatch)
		for len(evs) < f.perBatch {
			evs = append(evs, f.event(host, cs[f.rnd.IntN(len(cs))], at))
		}
		f.seq++
		bt := &containv1.Batch{SchemaVersion: containv1.SchemaVersion, Host: host, Stage: "enricher",
			ProducerId: "bench", Seq: f.seq, Events: evs}
		if f.dict {
			bt.Compact()
		}
		data, err := bus.Encode(bt)
		if err != nil {
			tb.Fatal(err)
		}
		out = append(out, data)
	}
	return out
}

func (f *fleetMix) proc(c *fleetCtr, comm string) *containv1.Process {
	return &containv1.Process{Pid: c.nextPid, Tgid: c.nextPid, Ppid: c.initPid, NsPid: c.nextPid - c.initPid + 1,
		Uid: 1000, Gid: 1000, Euid: 1000, Comm: comm}
}

func (f *fleetMix) event(host string, c *fleetCtr, at int64) *containv1.Event {
	ev := &containv1.Event{Id: f.ids.Next(), Host: host, ContainerId: c.id, ContainerName: c.name, MonoNs: uint64(at - t0 + 1e12),
		WallNs: at, SchemaVersion: containv1.SchemaVersion, CgroupId: uint64(1_000_000 + c.image),
		ImageRef: c.ref, ImageDigest: c.digest}
	if !c.announced {
		c.announced = true
		ev.Kind = containv1.Kind_KIND_CONTAINER
		ev.Body = &containv1.Event_Container{Container: &containv1.ContainerInfo{Runtime: "runc", CgroupPath: "/" + c.id,
			InitPid: c.initPid, Pod: c.name, Namespace: "default",
			Labels: map[string]string{"org.opencontainers.image.ref.name": c.ref, "io.contain.image.digest": c.digest}}}
		return ev
	}
	r := f.rnd.IntN(100)
	switch {
	case r < 10:
		argv := fleetExecs[f.rnd.IntN(len(fleetExecs))]
		c.nextPid++
		ev.Kind = containv1.Kind_KIND_EXEC
		ev.Body = &containv1.Event_Exec{Exec: &containv1.Exec{Proc: f.proc(c, argv[0][len(argv[0])-8:]), Filename: argv[0],
			Argv: argv, Argc: uint32(len(argv)), Cwd: "/srv/app", Exe: argv[0]}}
	case r < 30:
		op := containv1.ProcessLifecycle_OP_FORK
		if r%2 == 1 {
			op = containv1.ProcessLifecycle_OP_EXIT
		}
		ev.Kind = containv1.Kind_KIND_PROCESS
		ev.Body = &containv1.Event_Process{Process: &containv1.ProcessLifecycle{Proc: f.proc(c, "app"), Op: op, ChildTgid: c.nextPid + 1}}
	case r < 65:
		name, mode := fleetSyscalls[f.rnd.IntN(len(fleetSyscalls))], containv1.Syscall_MODE_COUNT
		if c.firsts < len(fleetSyscalls) {
			name, mode = fleetSyscalls[c.firsts], containv1.Syscall_MODE_FIRST
			c.firsts++
		}
		ev.Kind = containv1.Kind_KIND_SYSCALL
		ev.Body = &containv1.Event_Syscall{Syscall: &containv1.Syscall{Proc: f.proc(c, "app"), Mode: mode, Name: name,
			Count: uint64(1 + f.rnd.IntN(5000))}}
	case r < 85:
		i := f.rnd.IntN(len(fleetPorts))
		ev.Kind = containv1.Kind_KIND_NETWORK
		ev.Body = &containv1.Event_Network{Network: &containv1.Network{Proc: f.proc(c, "app"), Op: containv1.Network_OP_CONNECT,
			Protocol: containv1.Network_PROTOCOL_TCP, Family: 2,
			LocalAddr: []byte{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 244, 1, 17}, LocalPort: uint32(32768 + f.rnd.IntN(28000)),
			RemoteAddr: []byte{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, byte(c.image), byte(i), 10}, RemotePort: fleetPorts[i]}}
	default:
		p := fleetFiles[f.rnd.IntN(len(fleetFiles))]
		if p[len(p)-1] == '/' || p[len(p)-1] == '-' {
			p += strconv.Itoa(f.rnd.IntN(100000)) + ".dat"
		}
		ev.Kind = containv1.Kind_KIND_FILE
		ev.Body = &containv1.Event_File{File: &containv1.File{Proc: f.proc(c, "app"), Op: containv1.File_OP_OPEN_WRITE,
			Path: p, Flags: 0o101, Mode: 0o644}}
	}
	return ev
}

// BenchmarkFleetHandle is the analyzer's work per event of the fleet load
// test's mix against converged baselines: each payload decoded as the
// consumer does (in a reused bus.Arena, ReuseEvents; design 031) and
// every event observed. Per op: one
// event. 20 hosts of 50 containers of 100 images, 81 events a batch (the
// fleet run's average).
//
// dictionary=true: the batches carry a container dictionary.
//
//	go test ./analyzer -run '^$' -bench FleetHandle -benchmem -count 5
func BenchmarkFleetHandle(b *testing.B) {
	for _, dict := range []bool{false, true} {
		b.Run(fmt.Sprintf("dictionary=%v", dict), func(b *testing.B) { benchFleetHandle(b, dict) })
	}
}

func benchFleetHandle(b *testing.B, dict bool) {
	cfg := testConfig()
	e := newEngine(b, cfg, nil)
	mix := newFleetMix(20, 50, 100, 81)
	mix.dict = dict
	// Learn for twice the window (a batch every 10 ms of event time).
	step := int64(10 * time.Millisecond)
	at := t0
	for at < t0+2*int64(cfg.LearningWindow) {
		for _, data := range mix.batches(b, at) {
			bt, err := bus.DecodeAliased(data)
			if err != nil {
				b.Fatal(err)
			}
			for _, ev := range bt.Events {
				e.Observe(ev)
			}
		}
		at += step
	}
	var payloads [][]byte
	events := 0
	for range 10 {
		for _, data := range mix.batches(b, at) {
			payloads = append(payloads, data)
			events += mix.perBatch
		}
		at += step
	}
	var arena bus.Arena
	b.ReportAllocs()
	b.ResetTimer()
	cpu0 := cpuNs()
	n := 0
	for n < b.N {
		for _, data := range payloads {
			arena.Reset() // a fetch of one message
			bt, err := arena.Decode(data)
			if err != nil {
				b.Fatal(err)
			}
			for _, ev := range bt.Events {
				if out := e.Observe(ev); len(out) != 0 {
					b.Fatalf("benign event alerted: %v", out[0].GetAlert().Reasons)
				}
			}
			n += len(bt.Events)
			if n >= b.N {
				break
			}
		}
	}
	b.StopTimer()
	// CPU of the whole process (the collector's workers included) per
	// event: on a loaded machine it varies less than ns/op.
	b.ReportMetric(float64(cpuNs()-cpu0)/float64(n), "cpu-ns/event")
	if st := e.Stats(); st.Scored == 0 {
		b.Fatalf("nothing scored: %+v", st)
	}
}

// cpuNs is this process's user+system CPU time.
func cpuNs() int64 {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return ru.Utime.Nano() + ru.Stime.Nano()
}

// BenchmarkFleetDecode is BenchmarkFleetHandle's decoding alone: the
// fleet mix's payloads decoded in a reused bus.Arena, a fetch of one
// message each. Per op: one event.
//
//	go test ./analyzer -run '^$' -bench FleetDecode -benchmem -count 5
func BenchmarkFleetDecode(b *testing.B) {
	for _, dict := range []bool{false, true} {
		b.Run(fmt.Sprintf("dictionary=%v", dict), func(b *testing.B) { benchFleetDecode(b, dict) })
	}
}

func benchFleetDecode(b *testing.B, dict bool) {
	mix := newFleetMix(20, 50, 100, 81)
	mix.dict = dict
	at := t0
	var payloads [][]byte
	for range 10 {
		payloads = append(payloads, mix.batches(b, at)...)
		at += int64(10 * time.Millisecond)
	}
	var arena bus.Arena
	b.ReportAllocs()
	b.ResetTimer()
	cpu0 := cpuNs()
	n := 0
	for n < b.N {
		for _, data := range payloads {
			arena.Reset()
			bt, err := arena.Decode(data)
			if err != nil {
				b.Fatal(err)
			}
			n += len(bt.Events)
			if n >= b.N {
				break
			}
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(cpuNs()-cpu0)/float64(n), "cpu-ns/event")
}
