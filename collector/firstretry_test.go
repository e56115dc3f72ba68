package collector

import (
	"slices"
	"testing"
	"time"

	"github.com/containsec/contain/internal/testenv"
	"github.com/containsec/contain/schemas/containv1"
)

// TestIntegrationFirstUseRecoveredAfterFullBatcher is issue 12 §3 in user
// space: a first-use record the batcher refuses (its queue of 128 events is
// full until the test flushes it) is not lost with the batcher's other
// drops, since the kernel reports it only once: it is held and passed on
// when the batcher has room again.
func TestIntegrationFirstUseRecoveredAfterFullBatcher(t *testing.T) {
	c, js, _ := startCollector(t, heldBatcher)
	raw := consumeRaw(t, js)
	ctr := testenv.RunContainer(t, "colfirstq", testenv.ContainerSpec{})
	raw.waitFor(t, 10*time.Second, "the container announced", func(evs []*containv1.Event) bool {
		c.batcher.Flush()
		return slices.ContainsFunc(evs, func(ev *containv1.Event) bool {
			return ev.Kind == containv1.Kind_KIND_CONTAINER && ev.ContainerId == ctr.ID
		})
	})

	// Fill the batcher: it takes nothing more until its flush timer fires.
	// Twice: a Flush asked while waiting above may still be pending and
	// take the first fill.
	fill := func() {
		c.locked(func() {
			for c.batcher.Append(&containv1.Event{Kind: containv1.Kind_KIND_LOSS, Host: "test-host"}) {
			}
		})
	}
	fill()
	time.Sleep(200 * time.Millisecond)
	fill()
	if out, err := ctr.Exec(10*time.Second, "/bin/sh", "-c", "sync"); err != nil {
		t.Fatalf("runc exec: %v: %s", err, out)
	}
	isSync := func(ev *containv1.Event) bool {
		s := ev.GetSyscall()
		return ev.ContainerId == ctr.ID && s.GetMode() == containv1.Syscall_MODE_FIRST && s.GetName() == "sync"
	}
	// The reader may handle the record after the exec returned.
	testenv.WaitFor(t, 5*time.Second, "the first sync refused by the full batcher and held", func() bool {
		c.deferred.mu.Lock()
		defer c.deferred.mu.Unlock()
		return slices.ContainsFunc(c.deferred.evs, isSync)
	})
	t.Logf("the first sync held; %d other events dropped by the full batcher", c.batcherDrops.Load())
	// Flush as the timer would (a minute away): the held records go at the
	// hold ticker's next ticks.
	raw.waitFor(t, 10*time.Second, "the held first sync reported", func(evs []*containv1.Event) bool {
		c.batcher.Flush()
		return slices.ContainsFunc(evs, isSync)
	})
}

// heldBatcher configures a collector whose batcher publishes only when
// the test flushes it (or a minute on), in a queue of 128 events, with
// syscall first uses and nothing else but execs.
func heldBatcher(cfg *Config) {
	cfg.FlushInterval = time.Minute
	cfg.LossInterval = DefaultConfig().LossInterval
	cfg.BatchQueueLen = 128
	cfg.WakeupKinds = nil // no record flushes the batcher early
	cfg.Syscalls, cfg.Files, cfg.Network = true, false, false
}
