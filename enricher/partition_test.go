package enricher

import (
	"fmt"
	"slices"
	"testing"

	"github.com/containsec/contain/internal/bus"
	"github.com/containsec/contain/schemas/containv1"
)

// groupRouter groups by the cached group, else the event's digest.
type groupRouter struct{ n int }

func (r groupRouter) Partitions() int                          { return r.n }
func (r groupRouter) Group(ci *containv1.ContainerInfo) string { return "g:" + ci.GetImageDigest() }
func (r groupRouter) Partition(group string, ev *containv1.Event) int {
	if group == "" {
		group = ev.ImageDigest
	}
	return containv1.Partition(group, r.n)
}

// Each event goes to its container's group's partition, in order; the
// parts keep the input's sequence with a partition suffix, so a
// redelivered input is published under the same message ids.
func TestRoutePartitions(t *testing.T) {
	e := &Enricher{cache: map[ckey]*entry{{"h1", "c1"}: {rec: ContainerImage{Group: "g:web"}}}}
	e.SetRouter(groupRouter{n: 1})
	if e.router != nil {
		t.Fatal("one partition routes")
	}
	e.SetRouter(groupRouter{n: 8})
	ev := func(id byte, ctr, digest string) *containv1.Event {
		return &containv1.Event{Id: []byte{id}, Host: "h1", ContainerId: ctr, ImageDigest: digest}
	}
	in := &containv1.Batch{SchemaVersion: containv1.SchemaVersion, Host: "h1", Stage: "enricher", ProducerId: "abc", Seq: 7,
		Events: []*containv1.Event{ev(1, "c1", "sha256:x"), ev(2, "c2", "sha256:y"), ev(3, "", ""), ev(4, "c1", "sha256:x"), ev(5, "c2", "sha256:y")}}
	want := map[string][]byte{ // subject -> event ids
		containv1.EventsPartitionSubject("h1", containv1.Partition("g:web", 8)):    {1, 4},
		containv1.EventsPartitionSubject("h1", containv1.Partition("sha256:y", 8)): {2, 5},
		containv1.EventsPartitionSubject("h1", 0):                                  {3},
	}
	if len(want) != 3 {
		t.Fatal("the test's groups share a partition")
	}
	got := map[string][]byte{}
	var ids []string
	for _, out := range e.route(in) {
		for _, x := range out.batch.Events {
			got[out.subject] = append(got[out.subject], x.Id[0])
		}
		if out.batch.Seq != 7 || out.batch.ProducerId == "abc" {
			t.Errorf("part %s: producer %s seq %d", out.subject, out.batch.ProducerId, out.batch.Seq)
		}
		if err := bus.CheckHost(out.subject, out.batch); err != nil {
			t.Errorf("part refused by its consumer: %v", err)
		}
		ids = append(ids, bus.MsgID(out.batch))
	}
	for s, w := range want {
		if !slices.Equal(got[s], w) {
			t.Errorf("%s: events %v, want %v (all: %v)", s, got[s], w, got)
		}
	}
	var again []string
	for _, out := range e.route(in) {
		again = append(again, bus.MsgID(out.batch))
	}
	if !slices.Equal(ids, again) || len(slices.Compact(slices.Sorted(slices.Values(ids)))) != len(ids) {
		t.Fatalf("message ids %v, then %v: want the same, distinct", ids, again)
	}
}

// BenchmarkRoute is the cost of routing per event: a batch of 1000 events
// of 64 containers published unpartitioned, then split over 16 partitions
// (cache lookup, FNV of the group key, one batch per partition).
func BenchmarkRoute(b *testing.B) {
	e := benchEnricher(b, 64)
	for k, en := range e.cache {
		en.rec.Group = "g:" + k.id
	}
	in := &containv1.Batch{SchemaVersion: containv1.SchemaVersion, Host: "h1", ProducerId: "p", Seq: 1}
	for i := range 1000 {
		in.Events = append(in.Events, &containv1.Event{Host: "h1", ContainerId: fmt.Sprintf("c%d", (i/10)%64), ImageDigest: testDigest})
	}
	for _, parts := range []int{1, 16} {
		b.Run(fmt.Sprintf("partitions=%d", parts), func(b *testing.B) {
			e.router = nil
			e.SetRouter(groupRouter{n: parts})
			for b.Loop() {
				_ = e.route(in)
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(in.Events)), "ns/event")
		})
	}
}
