package collector

import (
	"slices"

	"github.com/containsec/contain/internal/metrics"
	"github.com/containsec/contain/internal/syscalls"
	"github.com/containsec/contain/schemas/containv1"
)

// Kernel loss counter indexes (bpf/common.h enum loss_index).
var kernelLoss = []struct {
	index  uint32
	reason string
}{
	{0, "reserve_failed_exec"},
	{1, "reserve_failed_syscall"},
	{2, "syscall_map_full"},
	{3, "reserve_failed_network"},
	{4, "reserve_failed_file"},
	{5, "reserve_failed_process"},
	{7, "origin_store_failed"},
	{8, "bulk_headroom"},
	{9, "programs_map_full"},
}

const reasonRateLimited = "rate_limited"

// lossCounts reads every loss counter: kernel ring-buffer reserve
// failures (summed over CPUs) and user-space drops.
func (c *Collector) lossCounts() map[[2]string]uint64 {
	out := map[[2]string]uint64{
		{"queue", reasonQueueFull}:     c.queueDrops.Load(),
		{"batcher", reasonBatcherFull}: c.batcherDrops.Load(),
	}
	if c.coll == nil {
		return out
	}
	lm := c.coll.Maps["loss"]
	for _, kl := range kernelLoss {
		var perCPU []uint64
		if err := lm.Lookup(kl.index, &perCPU); err != nil {
			continue
		}
		var sum uint64
		for _, v := range perCPU {
			sum += v
		}
		out[[2]string{"ringbuf", kl.reason}] = sum
	}
	return out
}

// reportRateLimited emits, per container, a KIND_LOSS event (source
// "kernel", reason "rate_limited") with the records its token bucket
// refused since the last report.
func (c *Collector) reportRateLimited() {
	if c.coll == nil || c.cfg.RatePerSec == 0 {
		return
	}
	var (
		cgid uint64
		b    collectorRateBucket
	)
	mono := monoNow()
	seen := map[uint64]bool{}
	it := c.coll.Maps["buckets"].Iterate()
	for it.Next(&cgid, &b) {
		seen[cgid] = true
		prev := c.lastLimited[cgid]
		if b.Dropped <= prev {
			continue
		}
		c.lastLimited[cgid] = b.Dropped
		c.containerLoss(cgid, mono, "kernel", reasonRateLimited, reasonRateLimited, b.Dropped-prev)
	}
	for id := range c.lastLimited {
		if !seen[id] {
			delete(c.lastLimited, id) // evicted (LRU): its counter restarts at 0
		}
	}
}

// forgetPrograms deletes the programs entries (lineage) of cgroups that
// are gone, so the map never fills with dead containers.
func (c *Collector) forgetPrograms() {
	if c.coll == nil {
		return
	}
	pm := c.coll.Maps["programs"]
	var (
		id   uint64
		v    uint8
		gone []uint64
	)
	it := pm.Iterate()
	for it.Next(&id, &v) {
		if !c.ident.cgroups.Known(id) {
			gone = append(gone, id)
		}
	}
	if len(gone) == 0 {
		return
	}
	_ = c.ident.cgroups.Scan()
	for _, id := range gone {
		if !c.ident.cgroups.Known(id) {
			_ = pm.Delete(id)
		}
	}
}

// reportLoss emits one KIND_LOSS event per counter that grew since the
// last report.
func (c *Collector) reportLoss() {
	c.pruneSensitive()
	c.forgetPrograms()
	c.reportRateLimited()
	c.reportSequence()
	for k, n := range c.lossCounts() {
		key := k[0] + "/" + k[1]
		prev := c.lastLoss[key]
		if n <= prev {
			continue
		}
		c.lastLoss[key] = n
		if k[0] == "ringbuf" {
			c.m.Dropped.WithLabelValues(metrics.StageCollector, reasonRingbufFull).Add(float64(n - prev))
		}
		ev := &containv1.Event{
			Kind:   containv1.Kind_KIND_LOSS,
			MonoNs: monoNow(),
			Body:   &containv1.Event_Loss{Loss: &containv1.Loss{Source: k[0], Reason: k[1], Count: n - prev}},
		}
		c.finish(ev)
		c.add(ev)
	}
}

// reportCounts emits, per container, one MODE_COUNT syscall event per
// syscall used since the last report, and forgets containers whose cgroup
// is gone. Counts live in the per-CPU slots (count_slots) and in the
// fallback hash (syscall_counts); both are summed per cgroup.
func (c *Collector) reportCounts() {
	if c.coll == nil || !c.cfg.Syscalls {
		return
	}
	sums := map[uint64]*[syscallMax]uint32{}
	add := func(cgid uint64, n *[syscallMax]uint32) {
		sum := sums[cgid]
		if sum == nil {
			sum = new([syscallMax]uint32)
			sums[cgid] = sum
		}
		for nr, v := range n {
			sum[nr] += v // wraps like the kernel's u32 counters
		}
	}
	hash := c.coll.Maps["syscall_counts"]
	var (
		cgid   uint64
		perCPU []syscallCounts
	)
	it := hash.Iterate()
	for it.Next(&cgid, &perCPU) {
		for i := range perCPU {
			add(cgid, &perCPU[i].N)
		}
	}
	if err := it.Err(); err != nil {
		c.m.Errors.WithLabelValues(metrics.StageCollector, "count_iterate").Inc()
	}
	slots := c.coll.Maps["count_slots"]
	slotOwners := map[uint32][]uint64{}
	var (
		idx      uint32
		slotVals []collectorCountSlot
	)
	it = slots.Iterate()
	for it.Next(&idx, &slotVals) {
		for i := range slotVals {
			if id := slotVals[i].CgroupId; id != 0 {
				add(id, &slotVals[i].N)
				slotOwners[idx] = append(slotOwners[idx], id)
			}
		}
	}
	if err := it.Err(); err != nil {
		c.m.Errors.WithLabelValues(metrics.StageCollector, "count_iterate").Inc()
	}

	mono := monoNow()
	var gone []uint64
	for cgid, sum := range sums {
		last := c.lastCounts[cgid]
		if last == nil {
			last = new([syscallMax]uint32)
			c.lastCounts[cgid] = last
		}
		for nr := range sum {
			d := sum[nr] - last[nr]
			if d == 0 {
				continue
			}
			c.route(&containv1.Event{
				Kind:     containv1.Kind_KIND_SYSCALL,
				MonoNs:   mono,
				CgroupId: cgid,
				Body: &containv1.Event_Syscall{Syscall: &containv1.Syscall{
					Mode: containv1.Syscall_MODE_COUNT, Nr: uint32(nr), Name: syscalls.Name(uint32(nr)), Count: uint64(d),
				}},
			})
		}
		*last = *sum
		if !c.ident.cgroups.Known(cgid) {
			gone = append(gone, cgid)
		}
	}
	if len(gone) > 0 {
		_ = c.ident.cgroups.Scan()
		dead := map[uint64]bool{}
		for _, id := range gone {
			if !c.ident.cgroups.Known(id) {
				dead[id] = true
				_ = hash.Delete(id)
				delete(c.lastCounts, id)
			}
		}
		// Free slots whose every owner is gone (a slot is written for all
		// CPUs at once; a live owner keeps it).
		for idx, owners := range slotOwners {
			if !slices.ContainsFunc(owners, func(id uint64) bool { return !dead[id] }) {
				_ = slots.Put(idx, make([]collectorCountSlot, len(slotVals)))
			}
		}
	}
	for id := range c.lastCounts {
		if sums[id] == nil {
			delete(c.lastCounts, id)
		}
	}
}

// containerLoss counts n records of container cgid lost (metric reason
// metricReason) and emits the KIND_LOSS event that carries it, with the
// container's identity.
func (c *Collector) containerLoss(cgid, mono uint64, source, reason, metricReason string, n uint64) {
	c.m.Dropped.WithLabelValues(metrics.StageCollector, metricReason).Add(float64(n))
	c.route(&containv1.Event{
		Kind:     containv1.Kind_KIND_LOSS,
		MonoNs:   mono,
		CgroupId: cgid,
		Body:     &containv1.Event_Loss{Loss: &containv1.Loss{Source: source, Reason: reason, Count: n}},
	})
}
