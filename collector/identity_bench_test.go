package collector

import (
	"testing"
	"time"

	"github.com/containsec/contain/internal/cgroups"
	"github.com/containsec/contain/internal/runtime"
)

// BenchmarkIdentityCached is what identifying an event's container costs
// once the container is known (engine lookups enabled): the cache hit and
// the check for engine answers, per event.
func BenchmarkIdentityCached(b *testing.B) {
	d := newIdentity(cgroups.NewResolver(b.TempDir()), runtime.StateReader{})
	d.eng = &engineLookups{}
	const id = 4242
	ref := runtime.Ref{Runtime: runtime.Docker, ID: "abc"}
	d.byID[id] = &container{cgroupID: id, ref: ref, isContainer: true, diskDone: true, engAsked: true, engOK: true, complete: true, firstSeen: time.Now()}
	for b.Loop() {
		c := d.lookup(id)
		if d.refresh(c) {
			b.Fatal("dirty")
		}
	}
}
