package collector

import (
	"errors"
	"maps"
	"time"

	"github.com/containsec/contain/internal/cgroups"
	"github.com/containsec/contain/internal/runtime"
	"github.com/containsec/contain/schemas/containv1"
)

// container is what the collector knows about one cgroup.
type container struct {
	cgroupID   uint64
	cgroupPath string
	ref        runtime.Ref
	info       runtime.Info
	// isContainer is false for host cgroups (root, systemd units).
	isContainer bool
	// announced: a KIND_CONTAINER event was emitted.
	announced bool
	// complete: the runtime's state was found; until then lookups are
	// retried (the state may be written just after the first process).
	complete  bool
	nextRetry time.Time
	retries   int
	firstSeen time.Time
	// pending holds the container's first events while its runtime state
	// is not written yet (runc writes state.json after the container's
	// init already runs in its cgroup).
	pending []*containv1.Event
	// syscalls seen (first use already reported).
	syscalls [syscallMax / 64]uint64
}

// firstUse marks syscall nr as used and reports whether it was new.
func (c *container) firstUse(nr uint32) bool {
	if nr >= syscallMax {
		return false
	}
	bit := uint64(1) << (nr % 64)
	if c.syscalls[nr/64]&bit != 0 {
		return false
	}
	c.syscalls[nr/64] |= bit
	return true
}

// identity resolves cgroup ids to containers and caches the result.
type identity struct {
	cgroups *cgroups.Resolver
	states  runtime.StateReader
	byID    map[uint64]*container
	// maxEntries bounds byID; on overflow entries whose cgroup is gone are
	// pruned.
	maxEntries int
	now        func() time.Time
}

const (
	metaRetryEvery = 20 * time.Millisecond
	metaMaxRetries = 500
)

func newIdentity(cg *cgroups.Resolver, st runtime.StateReader) *identity {
	return &identity{cgroups: cg, states: st, byID: map[uint64]*container{}, maxEntries: 65536, now: time.Now}
}

// lookup returns the container of cgroup id; nil when the cgroup is not
// known even after a fresh walk of the hierarchy (it already vanished).
func (d *identity) lookup(id uint64) *container {
	if c, ok := d.byID[id]; ok {
		return c
	}
	path, ok := d.cgroups.Path(id)
	if !ok {
		return nil
	}
	if len(d.byID) >= d.maxEntries {
		d.prune()
	}
	c := &container{cgroupID: id, cgroupPath: path, firstSeen: d.now()}
	c.ref, c.isContainer = runtime.FromCgroupPath(path)
	if c.isContainer && !d.readMeta(c) {
		c.nextRetry = d.now().Add(metaRetryEvery)
	}
	d.byID[id] = c
	return c
}

// refresh retries reading c's runtime state when it is due; it reports
// whether the state was found by this call.
func (d *identity) refresh(c *container) bool {
	if !c.isContainer || c.complete || c.retries >= metaMaxRetries || d.now().Before(c.nextRetry) {
		return false
	}
	c.retries++
	if d.readMeta(c) {
		return true
	}
	c.nextRetry = d.now().Add(metaRetryEvery)
	return false
}

// readMeta reads the runtime state; it reports whether the state was found.
func (d *identity) readMeta(c *container) bool {
	info, err := d.states.Lookup(c.ref)
	c.info = info
	if err != nil {
		c.complete = !errors.Is(err, runtime.ErrNotFound) // parse errors will not fix themselves
		return false
	}
	c.complete = true
	return true
}

// prune forgets cgroups that no longer exist.
func (d *identity) prune() {
	_ = d.cgroups.Scan()
	for id := range d.byID {
		if !d.cgroups.Known(id) {
			delete(d.byID, id)
		}
	}
	if len(d.byID) >= d.maxEntries {
		clear(d.byID)
	}
}

// stamp sets the container fields of ev.
func (c *container) stamp(ev *containv1.Event) {
	if !c.isContainer {
		ev.CgroupId = 0
		return
	}
	ev.ContainerId = c.ref.ID
	ev.ContainerName = c.info.Name
	ev.CgroupId = c.cgroupID
}

// infoEvent is the KIND_CONTAINER event announcing c.
func (c *container) infoEvent(host string, monoNs uint64) *containv1.Event {
	rt := c.info.Runtime
	if rt == "" {
		rt = c.ref.Runtime
	}
	ev := &containv1.Event{
		Kind:          containv1.Kind_KIND_CONTAINER,
		SchemaVersion: containv1.SchemaVersion,
		Host:          host,
		MonoNs:        monoNs,
		Body: &containv1.Event_Container{Container: &containv1.ContainerInfo{
			Runtime:    rt,
			CgroupPath: c.cgroupPath,
			Bundle:     c.info.Bundle,
			InitPid:    c.info.InitPID,
			Labels:     maps.Clone(c.info.Labels),
			Pod:        c.info.Pod,
			Namespace:  c.info.Namespace,
		}},
	}
	if c.info.InitPID != 0 {
		// Best effort: the init may already have exited.
		ci := ev.GetContainer()
		ci.Addresses, ci.HostNetwork, _ = netAddrs(procRoot, c.info.InitPID)
	}
	c.stamp(ev)
	return ev
}

// procRoot is where the host's /proc is mounted.
const procRoot = "/proc"
