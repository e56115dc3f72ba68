package bus_test

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/containsec/contain/internal/bus"
	"github.com/containsec/contain/schemas/containv1"
)

// BenchmarkScanBatch is ScanBatch and BoundTo on a fleet collector's
// batch: 245 events of one host's 50 containers (64-character ids) in
// random order, each naming its host, in the load generator's mix of
// execs, forks, syscall counts, connections and file writes. cpu-ns/event
// is the process's CPU time (a loaded machine's wall time is not).
func BenchmarkScanBatch(b *testing.B) {
	const n = 245
	r := rand.New(rand.NewPCG(1, 1))
	ids := containv1.NewIDGen()
	host := "host-007"
	evs := make([]*containv1.Event, n)
	for i := range evs {
		c := r.IntN(50)
		ev := &containv1.Event{Id: ids.Next(), Host: host, ContainerId: fmt.Sprintf("%064x", c*7919), ContainerName: fmt.Sprintf("%s-svc%d-%d", host, c%10, c),
			MonoNs: uint64(1e12 + i), WallNs: 1_700_000_000_000_000_000 + int64(i), SchemaVersion: containv1.SchemaVersion, CgroupId: uint64(1_000_000 + c)}
		proc := &containv1.Process{Pid: 10_001, Tgid: 10_001, Ppid: 10_000, NsPid: 2, Uid: 1000, Gid: 1000, Euid: 1000, Comm: "app"}
		switch x := r.IntN(100); {
		case x < 10:
			argv := []string{"/usr/local/bin/app", "--config", "/etc/app/config.yaml", "--log-level", "info"}
			ev.Kind = containv1.Kind_KIND_EXEC
			ev.Body = &containv1.Event_Exec{Exec: &containv1.Exec{Proc: proc, Filename: argv[0], Argv: argv, Argc: 5, Cwd: "/srv/app", Exe: argv[0]}}
		case x < 30:
			ev.Kind = containv1.Kind_KIND_PROCESS
			ev.Body = &containv1.Event_Process{Process: &containv1.ProcessLifecycle{Proc: proc, Op: containv1.ProcessLifecycle_OP_FORK, ChildTgid: 10_002}}
		case x < 65:
			ev.Kind = containv1.Kind_KIND_SYSCALL
			ev.Body = &containv1.Event_Syscall{Syscall: &containv1.Syscall{Proc: proc, Mode: containv1.Syscall_MODE_COUNT, Name: "read", Count: 1234}}
		case x < 85:
			ev.Kind = containv1.Kind_KIND_NETWORK
			ev.Body = &containv1.Event_Network{Network: &containv1.Network{Proc: proc, Op: containv1.Network_OP_CONNECT, Protocol: containv1.Network_PROTOCOL_TCP,
				Family: 2, LocalAddr: make([]byte, 16), LocalPort: 40000, RemoteAddr: make([]byte, 16), RemotePort: 5432}}
		default:
			ev.Kind = containv1.Kind_KIND_FILE
			ev.Body = &containv1.Event_File{File: &containv1.File{Proc: proc, Op: containv1.File_OP_OPEN_WRITE, Path: fmt.Sprintf("/var/lib/app/cache/%d.dat", i), Flags: 0o101, Mode: 0o644}}
		}
		evs[i] = ev
	}
	data, err := bus.Encode(&containv1.Batch{SchemaVersion: containv1.SchemaVersion, Host: host, Stage: "collector", ProducerId: "p", Seq: 1, Events: evs})
	if err != nil {
		b.Fatal(err)
	}
	subject := containv1.RawSubject(host)
	var wb bus.WireBatch
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	before := cpuTime()
	for b.Loop() {
		if !bus.ScanBatch(data, &wb) || !wb.BoundTo(subject) {
			b.Fatal("not scanned")
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/event")
	b.ReportMetric(float64(cpuTime()-before)/float64(b.N*n), "cpu-ns/event")
}
