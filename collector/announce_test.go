package collector

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/containsec/contain/internal/testenv"
	"github.com/containsec/contain/schemas/containv1"
)

// TestIntegrationAnnouncementSurvivesFullBatcher: a container started
// while the batcher's queue is full of other events is still announced,
// before any of its events. The announcement first takes the batcher's
// reserve; with the reserve full too it is refused, and the container's
// events are held with it until the batcher has room again. (A lost
// announcement left a CI docker replica without its image: it learned a
// baseline of its own in 8 s and was paused for its normal work.)
func TestIntegrationAnnouncementSurvivesFullBatcher(t *testing.T) {
	c, js, _ := startCollector(t, func(cfg *Config) {
		heldBatcher(cfg)
		cfg.Syscalls = false
	})
	raw := consumeRaw(t, js)
	first := testenv.RunContainer(t, "colannwarm", testenv.ContainerSpec{})
	raw.waitFor(t, 10*time.Second, "the collector running", func(evs []*containv1.Event) bool {
		c.batcher.Flush()
		return slices.ContainsFunc(evs, func(ev *containv1.Event) bool { return ev.ContainerId == first.ID })
	})

	// fill fills the batcher with host events (by Append, and by
	// AppendKeep when reserve): it takes nothing more until its flush
	// timer, a minute away, fires or the test flushes it. Twice: a Flush
	// asked while waiting above may still be pending and take the first.
	fill := func(reserve bool) {
		for range 2 {
			c.locked(func() {
				for c.batcher.Append(&containv1.Event{Kind: containv1.Kind_KIND_LOSS, Host: "test-host"}) {
				}
				for reserve && c.batcher.AppendKeep(&containv1.Event{Kind: containv1.Kind_KIND_LOSS, Host: "test-host"}) {
				}
			})
			time.Sleep(200 * time.Millisecond)
		}
	}
	// announcedFirst: the first event of id on the bus is its announcement,
	// and more of its events follow it.
	announcedFirst := func(id string) func([]*containv1.Event) bool {
		return func(evs []*containv1.Event) bool {
			c.batcher.Flush()
			i := slices.IndexFunc(evs, func(ev *containv1.Event) bool { return ev.ContainerId == id })
			if i < 0 {
				return false
			}
			if evs[i].Kind != containv1.Kind_KIND_CONTAINER {
				t.Fatalf("the first event of %s on the bus is %s, not its announcement", id, evs[i].Kind)
			}
			return slices.ContainsFunc(evs[i+1:], func(ev *containv1.Event) bool { return ev.ContainerId == id })
		}
	}
	exec := func(ctr *testenv.Container) {
		t.Helper()
		if out, err := ctr.Exec(10*time.Second, "/bin/sh", "-c", "true"); err != nil {
			t.Fatalf("runc exec: %v: %s", err, out)
		}
	}

	// The queue full: the announcement takes the reserve.
	fill(false)
	drops := c.batcherDrops.Load()
	b := testenv.RunContainer(t, "colannres", testenv.ContainerSpec{})
	exec(b)
	testenv.WaitFor(t, 10*time.Second, "events of the new container refused by the full queue", func() bool {
		return c.batcherDrops.Load() > drops
	})
	raw.waitFor(t, 10*time.Second, "the container started on a full queue announced first", announcedFirst(b.ID))

	// The reserve full too: the announcement is refused, and the
	// container's events wait with it. A flush the test asked for above
	// may still be pending (Run busy publishing on a loaded machine) and
	// make room before the new container's announcement: then it is not
	// refused, and the test tries again with a new container.
	var d *testenv.Container
	for attempt := 0; d == nil; attempt++ {
		if attempt == 3 {
			t.Fatal("the batcher made room before every new container's announcement, 3 times")
		}
		fill(true)
		ctr := testenv.RunContainer(t, fmt.Sprintf("colannheld%d", attempt), testenv.ContainerSpec{})
		exec(ctr)
		deadline := time.Now().Add(5 * time.Second)
		for d == nil && time.Now().Before(deadline) {
			c.locked(func() {
				for h := range c.held {
					if h.ref.ID == ctr.ID && h.refused && len(h.pending) > 0 {
						d = ctr // refused, held with its events
					}
				}
			})
			time.Sleep(20 * time.Millisecond)
		}
	}
	raw.waitFor(t, 10*time.Second, "the refused announcement sent, before the events held with it", announcedFirst(d.ID))
	// The wait is counted once per container, however often the hold
	// ticker offered the announcement again (every 20 ms while full).
	// Other containers of the host may have waited too, so the bound is
	// the containers the collector knows, not 1.
	n := testutil.ToFloat64(c.announceDeferred)
	known := 0
	c.locked(func() { known = len(c.ident.byID) })
	if n < 1 || int(n) > known {
		t.Errorf("contain_collector_announcements_deferred_total = %v, want 1 to %d (once per waiting container)", n, known)
	}
}
