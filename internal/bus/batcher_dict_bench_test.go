package bus

import (
	"fmt"
	"testing"

	"github.com/containsec/contain/schemas/containv1"
)

// BenchmarkCollectorBatchDictionary is the collector's cost per event of
// writing a busy host's batch (256 events over 50 containers, as the
// fleet load test's hosts) without and with the container dictionary
// (collector.container_dictionary): the batcher's CompactIfSmaller and
// Encode, which publishing does. Each iteration starts from fresh events
// (made anew each, in both cases).
//
//	go test ./internal/bus -run '^$' -bench CollectorBatchDictionary -count 5
func BenchmarkCollectorBatchDictionary(b *testing.B) {
	ids := containv1.NewIDGen()
	const events = 256
	// A container's id and name are one string each, shared by its
	// events, as the collector stamps them.
	var cids, names [50]string
	for c := range cids {
		cids[c], names[c] = fmt.Sprintf("%064x", c*0x9e3779b9+1), fmt.Sprintf("load-042-svc%d-%d", c%10, c)
	}
	mk := func(i int) *containv1.Event {
		c := (i * 7919) % 50
		return &containv1.Event{Id: ids.Next(), Host: "load-042", ContainerId: cids[c], ContainerName: names[c],
			MonoNs: uint64(i), WallNs: int64(i), Kind: containv1.Kind_KIND_SYSCALL,
			SchemaVersion: containv1.SchemaVersion, CgroupId: uint64(1_000_000 + c),
			Body: &containv1.Event_Syscall{Syscall: &containv1.Syscall{Proc: &containv1.Process{Pid: 100, Tgid: 100, Comm: "app"},
				Nr: 0, Name: "read", Mode: containv1.Syscall_MODE_COUNT, Count: uint64(i)}}}
	}
	for _, dict := range []bool{false, true} {
		b.Run(fmt.Sprintf("dictionary=%v", dict), func(b *testing.B) {
			ptrs := make([]*containv1.Event, events)
			bytes := 0
			b.ReportAllocs()
			for b.Loop() {
				for i := range ptrs {
					ptrs[i] = mk(i)
				}
				bt := &containv1.Batch{SchemaVersion: containv1.SchemaVersion, Host: "load-042", Stage: "collector", Events: ptrs}
				if dict {
					bt.CompactIfSmaller()
				}
				data, err := Encode(bt)
				if err != nil {
					b.Fatal(err)
				}
				bytes = len(data)
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*events), "ns/event")
			b.ReportMetric(float64(bytes)/events, "bytes/event")
		})
	}
}
