package analyzer_test

import (
	"fmt"

	"github.com/containsec/contain/analyzer"
	"github.com/containsec/contain/schemas/containv1"
)

// The enricher routes an event to the partition of its baseline group:
// here the image digest (analyzer.group_by "digest"), one of 12
// partitions. Every enricher and analyzer computes the same.
func ExampleRouter() {
	cfg := analyzer.DefaultConfig()
	cfg.Partitions = 12
	r := analyzer.NewRouter(cfg)
	ev := &containv1.Event{Host: "node-1", ContainerId: "c1",
		ImageDigest: "sha256:2b8f3e6a4c1d9e0f7a5b3c2d1e0f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f"}
	p := r.Partition("", ev)
	fmt.Println(p, containv1.EventsPartitionSubject(ev.Host, p), containv1.EventsPartitionFilter(p))
	// Output: 0 contain.v1.events.node-1.p0 contain.v1.events.*.p0
}
