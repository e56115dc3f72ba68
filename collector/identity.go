package collector

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"sync"
	"sync/atomic"
	"time"

	"github.com/containsec/contain/internal/cgroups"
	"github.com/containsec/contain/internal/engines"
	"github.com/containsec/contain/internal/logfields"
	"github.com/containsec/contain/internal/metrics"
	"github.com/containsec/contain/internal/runtime"
	"github.com/containsec/contain/schemas/containv1"
)

// container is what the collector knows about one cgroup.
type container struct {
	cgroupID   uint64
	cgroupPath string
	ref        runtime.Ref
	// info is disk merged with eng (runtime.Merge): what events carry.
	info runtime.Info
	// disk is what the runtime's on-disk state said, eng what its
	// engine's API answered (zero until it answers).
	disk, eng runtime.Info
	// isContainer is false for host cgroups (root, systemd units).
	isContainer bool
	// announced: a KIND_CONTAINER event was emitted. refused: the first
	// was refused by a full batcher (Collector.announce); the hold
	// ticker offers it again. waiting: the last announcement (first or
	// not) was refused and is due (counted once per wait,
	// contain_collector_announcements_deferred_total).
	announced, refused, waiting bool
	// complete: the container is identified (its on-disk state was found,
	// or its engine answered) and no engine lookup is in flight; until
	// then its first events are held (collector.metadata_wait) and the
	// on-disk state is re-read.
	complete bool
	// diskDone: the on-disk state was found (or is unreadable for good).
	diskDone bool
	// engine lookup: asked once per container, in flight until answered;
	// a lookup that timed out (the engine is busy starting containers,
	// which holds their locks) is asked again at engRetryAt, up to
	// engineRetries times.
	engAsked, engPending, engOK bool
	engTries                    int
	engRetryAt                  time.Time
	// dirty: what the container's KIND_CONTAINER event says changed since
	// it was last built (announced again then).
	dirty     bool
	nextRetry time.Time
	firstSeen time.Time
	// pending holds the container's first events while its runtime state
	// is not written yet (runc writes state.json after the container's
	// init already runs in its cgroup) or its engine has not answered.
	pending []*containv1.Event
	// seq: in sequence mode (its cgroup id is in the kernel's seq_cgroups).
	seq bool
	// droppedCounted: info.DroppedLabels already counted in metrics.
	droppedCounted int
	// syscalls seen per origin (first use already reported).
	syscalls [originClasses][syscallMax / 64]uint64
}

// firstUse marks syscall nr as used by a task of origin and reports
// whether it was new for that origin.
func (c *container) firstUse(nr uint32, origin containv1.Origin) bool {
	if nr >= syscallMax || origin < 0 || int(origin) >= originClasses {
		return false
	}
	bit := uint64(1) << (nr % 64)
	w := &c.syscalls[origin][nr/64]
	if *w&bit != 0 {
		return false
	}
	*w |= bit
	return true
}

func (c *container) setComplete() {
	c.complete = (c.diskDone || c.engOK) && !c.engPending
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
	// eng asks the engines' APIs off the event loop; nil when no engine is
	// configured.
	eng *engineLookups
}

// A container's on-disk state is read again every metaRetryEvery while
// it is not found, for metaFastFor after the container is first seen,
// then every metaRetrySlow until metaRetryFor: a host starting many
// containers at once may take seconds to write their state (docker writes
// State.Pid once the start returns; podman holds libpod's database locked
// while it starts them).
const (
	metaRetryEvery = 20 * time.Millisecond
	metaFastFor    = 2 * time.Second
	metaRetrySlow  = 250 * time.Millisecond
	metaRetryFor   = time.Minute
)

// nextMetaRetry is when c's on-disk state is read again after a miss.
func (d *identity) nextMetaRetry(c *container) time.Time {
	now := d.now()
	if now.Sub(c.firstSeen) < metaFastFor {
		return now.Add(metaRetryEvery)
	}
	return now.Add(metaRetrySlow)
}

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
	if c.isContainer {
		if !d.readMeta(c) {
			c.nextRetry = d.nextMetaRetry(c)
		}
		d.askEngine(c)
	}
	d.byID[id] = c
	return c
}

// refresh applies engine answers that arrived, and re-reads c's on-disk
// state when it is due; it reports whether what c's KIND_CONTAINER event
// says changed since it was built.
func (d *identity) refresh(c *container) bool {
	if d.eng != nil && d.eng.ready.Load() {
		d.applyEngine()
	}
	if c.isContainer && !c.diskDone && d.now().Sub(c.firstSeen) < metaRetryFor && !d.now().Before(c.nextRetry) {
		if !d.readMeta(c) {
			c.nextRetry = d.nextMetaRetry(c)
		}
		d.askEngine(c) // the state may name the engine (docker --cgroup-parent)
	}
	if c.engTries > 0 && !c.engAsked {
		d.askEngine(c) // a retry, when it is due
	}
	return c.dirty
}

// readMeta reads the runtime's on-disk state; it reports whether the
// state was found.
func (d *identity) readMeta(c *container) bool {
	info, err := d.states.Lookup(c.ref)
	c.disk = info
	c.info = runtime.Merge(c.disk, c.eng)
	if err != nil {
		// Parse errors will not fix themselves; a state not written yet,
		// or one part of it locked by its runtime now (libpod's database
		// while podman starts containers), will.
		c.diskDone = !errors.Is(err, runtime.ErrNotFound) && !errors.Is(err, runtime.ErrIncomplete)
		c.setComplete()
		return false
	}
	if info.InitPID == 0 {
		// Found before the runtime wrote the init's pid (containerd's
		// init.pid, docker's State.Pid come after the bundle): read again.
		c.setComplete()
		return false
	}
	c.diskDone = true
	c.dirty = true
	c.setComplete()
	return true
}

// askEngine queues c's engine lookup, once per container, when an engine
// applies to it.
func (d *identity) askEngine(c *container) {
	if d.eng == nil || c.engAsked || d.now().Before(c.engRetryAt) {
		return
	}
	engine, ns := d.eng.reader.Engine(c.ref, c.disk)
	if engine == "" {
		return
	}
	c.engAsked = true
	c.engTries++
	if !d.eng.enqueue(engineReq{c: c, engine: engine, ns: ns, id: c.ref.ID}) {
		return // counted; the on-disk state alone identifies it
	}
	c.engPending = true
	c.setComplete()
}

// applyEngine applies the engines' answers to their containers (in the
// event loop: containers are only touched there).
func (d *identity) applyEngine() {
	for _, r := range d.eng.take() {
		c := r.c
		c.engPending = false
		switch {
		case r.err == nil:
			c.eng = r.info
			c.engOK = true
			c.info = runtime.Merge(c.disk, c.eng)
			c.dirty = true
		case retryEngine(r.err, c.engTries):
			// Identified from disk meanwhile; the answer, when it comes,
			// announces the container again (dirty).
			c.engAsked = false
			c.engRetryAt = d.now().Add(min(time.Duration(c.engTries)*engineRetryDelay, engineRetryMax))
			d.eng.count(r.engine, reasonEngineRetry)
		}
		c.setComplete()
	}
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
	c.dirty = false
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

			// Identity from the runtime's or engine's state only; labels
			// an image author controls never set it (runtime.Info.sanitize).
			ImageRef:    c.info.Identity.ImageRef,
			ImageDigest: c.info.Identity.ImageDigest,
			ImageId:     c.info.Identity.ImageID,
			Name:        c.info.Identity.Name,
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

// Engine lookups run in engineWorkers goroutines, off the event loop:
// at most engineQueueLen wait (a full queue is counted and the container
// is identified from disk alone), each bounded by collector.engine_timeout.
// An engine found unreachable is not asked again for engineBackoff.
const (
	engineWorkers  = 4
	engineQueueLen = 1024
	engineBackoff  = 5 * time.Second
	// A lookup that timed out is asked again engineRetryDelay × tries
	// later (at most engineRetryMax), at most engineRetries times in all
	// (about 30 s): dockerd answers inspect of a container only once its
	// start returned, which on a loaded host starting many replicas takes
	// longer than engine_timeout.
	engineRetries    = 8
	engineRetryDelay = time.Second
	engineRetryMax   = 5 * time.Second
)

// retryEngine reports whether a lookup that failed with err, after tries
// attempts, is asked again.
func retryEngine(err error, tries int) bool {
	var ee *runtime.EngineError
	return tries < engineRetries && errors.As(err, &ee) && ee.Reason == engines.ReasonTimeout
}

// Lookup failure kinds beyond engines.Reason*
// (contain_errors_total{stage="collector",kind="metadata_<engine>_<reason>"}).
const (
	reasonEngineQueueFull = "queue_full"
	reasonEngineBackoff   = "backoff"
	reasonEngineRetry     = "retry"
)

type engineReq struct {
	c              *container // not touched by the workers
	engine, ns, id string
}

type engineResult struct {
	c      *container
	engine string
	info   runtime.Info
	err    error
}

// engineLookups is the pool of engine lookups: requests in a bounded
// channel, answers in a list the event loop takes (ready says there are
// some, so the loop's check costs one atomic load).
type engineLookups struct {
	reader  runtime.EngineReader
	m       *metrics.Metrics
	log     *slog.Logger
	reqs    chan engineReq
	mu      sync.Mutex
	results []engineResult
	ready   atomic.Bool
	// downUntil[engine] is the unix ns until which the engine is not
	// asked (it was unreachable).
	downUntil map[string]*atomic.Int64
	logged    map[string]*atomic.Bool
	cancel    context.CancelFunc
	wg        sync.WaitGroup
	closers   []func() error
}

// startEngines makes clients of the engines cfg names and starts the
// lookup workers; nothing is dialled until the first lookup.
func (d *identity) startEngines(cfg Config, m *metrics.Metrics, log *slog.Logger) error {
	var r runtime.EngineReader
	var closers []func() error
	if cfg.DockerHost != "" {
		dc, err := engines.NewDocker(cfg.DockerHost, cfg.EngineTimeout)
		if err != nil {
			return fmt.Errorf("collector.docker_host: %w", err)
		}
		r.Docker = dc
		closers = append(closers, dc.Close)
	}
	if cfg.ContainerdAddress != "" {
		cc, err := engines.NewContainerd(cfg.ContainerdAddress, cfg.EngineTimeout)
		if err != nil {
			for _, c := range closers {
				_ = c()
			}
			return fmt.Errorf("collector.containerd_address: %w", err)
		}
		r.Containerd = cc
		closers = append(closers, cc.Close)
	}
	if !r.Enabled() {
		return nil
	}
	ctx, cancel := context.WithCancel(context.Background())
	e := &engineLookups{
		reader: r, m: m, log: log, reqs: make(chan engineReq, engineQueueLen), cancel: cancel, closers: closers,
		downUntil: map[string]*atomic.Int64{runtime.EngineDocker: {}, runtime.EngineContainerd: {}},
		logged:    map[string]*atomic.Bool{runtime.EngineDocker: {}, runtime.EngineContainerd: {}},
	}
	for range engineWorkers {
		e.wg.Add(1)
		go e.work(ctx)
	}
	d.eng = e
	return nil
}

// stopEngines stops the workers and closes the clients.
func (d *identity) stopEngines() {
	if d == nil || d.eng == nil {
		return
	}
	d.eng.cancel()
	d.eng.wg.Wait()
	for _, c := range d.eng.closers {
		_ = c()
	}
}

func (e *engineLookups) enqueue(r engineReq) bool {
	select {
	case e.reqs <- r:
		return true
	default:
		e.count(r.engine, reasonEngineQueueFull)
		return false
	}
}

func (e *engineLookups) count(engine, reason string) {
	e.m.Errors.WithLabelValues(metrics.StageCollector, "metadata_"+engine+"_"+reason).Inc()
}

func (e *engineLookups) work(ctx context.Context) {
	defer e.wg.Done()
	for {
		select {
		case <-ctx.Done():
			return
		case r := <-e.reqs:
			res := engineResult{c: r.c, engine: r.engine}
			res.info, res.err = e.lookup(ctx, r)
			e.mu.Lock()
			e.results = append(e.results, res)
			e.ready.Store(true)
			e.mu.Unlock()
		}
	}
}

func (e *engineLookups) lookup(ctx context.Context, r engineReq) (runtime.Info, error) {
	down := e.downUntil[r.engine]
	if time.Now().UnixNano() < down.Load() {
		e.count(r.engine, reasonEngineBackoff)
		return runtime.Info{}, &runtime.EngineError{Engine: r.engine, Reason: reasonEngineBackoff, Err: errors.New("engine unreachable recently")}
	}
	info, err := e.reader.Lookup(ctx, r.engine, r.ns, r.id)
	if err == nil {
		return info, nil
	}
	var ee *runtime.EngineError
	reason := engines.ReasonError
	if errors.As(err, &ee) {
		reason = ee.Reason
	}
	e.count(r.engine, reason)
	switch reason {
	case engines.ReasonNotFound:
		// Not this engine's container (a runc container at /<a>/<b>).
	case engines.ReasonUnreachable:
		down.Store(time.Now().Add(engineBackoff).UnixNano())
		fallthrough
	default:
		if !e.logged[r.engine].Swap(true) {
			e.log.Warn("container engine lookup failed; identifying containers from on-disk state (logged once per engine)",
				logfields.Engine, r.engine, logfields.Err, err)
		}
	}
	return runtime.Info{}, err
}

// take returns the answers that arrived.
func (e *engineLookups) take() []engineResult {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := e.results
	e.results = nil
	e.ready.Store(false)
	return out
}
