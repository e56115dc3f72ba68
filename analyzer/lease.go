package analyzer

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/containsec/contain/internal/bus"
	"github.com/containsec/contain/internal/logfields"
	"github.com/containsec/contain/internal/metrics"
	"github.com/containsec/contain/schemas/containv1"
	"github.com/containsec/contain/schemas/kvdoc"
)

// LeasesBucket is the NATS KV bucket of partition leases ("p.<n>": the
// owning instance id) and instance heartbeats ("m.<id>"). Its TTL is
// analyzer.lease_ttl: a key not renewed for that long disappears.
const LeasesBucket = kvdoc.AnalyzerLeasesBucket

const (
	memberPrefix = "m."
	leasePrefix  = "p."
	// releaseGrace bounds how long a stopping instance waits for its
	// partitions' in-flight fetches to be handled and acknowledged.
	releaseGrace = 5 * time.Second
)

// Partition changes (contain_analyzer_partition_changes_total{change}).
const (
	changeAcquired = "acquired" // lease taken, baselines loaded, consuming
	changeReleased = "released" // handed over: consumed to the end, persisted, lease deleted
	changeLost     = "lost"     // lease taken by another or not renewed in time
)

func leaseKey(p int) string { return leasePrefix + strconv.Itoa(p) }

// fenceAfter is how long an instance keeps its partitions without a
// successful round: a quarter of the TTL before its leases expire on the
// server (renewed at the start of its last good round), the margin for
// the clocks and the round's own latency.
func fenceAfter(ttl time.Duration) time.Duration { return ttl * 3 / 4 }

// ownedPartition is a partition this instance holds the lease of and
// consumes.
type ownedPartition struct {
	rev  uint64        // lease revision
	stop chan struct{} // closed to end the consumer after its fetch in hand
	done chan struct{} // closed when the consumer returned
}

// partitioner holds this instance's partition leases and runs one
// consumer per partition held (docs/design/022-analyzer-partitions.md).
type partitioner struct {
	a   *Analyzer
	id  string
	n   int
	ttl time.Duration
	kv  jetstream.KeyValue

	// cctx outlives Run's context by releaseGrace, so that a stopping
	// instance acknowledges what it handled.
	cctx    context.Context
	ccancel context.CancelFunc

	mu     sync.Mutex
	owned  map[int]*ownedPartition
	lastOK time.Time // last round whose renewals all succeeded
	failed bool      // the last round failed (logged once per streak)

	changes *prometheus.CounterVec
	gauge   prometheus.Gauge
}

func newPartitioner(a *Analyzer) *partitioner {
	id := a.cfg.InstanceID
	if id == "" {
		id = defaultInstanceID()
	}
	pt := &partitioner{a: a, id: id, n: a.cfg.Partitions, ttl: a.cfg.LeaseTTL, owned: map[int]*ownedPartition{}}
	pt.changes = metrics.Register(a.m, metrics.StageAnalyzer, prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "contain", Subsystem: "analyzer", Name: "partition_changes_total",
		Help: "Partitions this instance acquired, released (handed over) or lost (lease taken or expired).",
	}, []string{"change"}))
	pt.gauge = metrics.Register(a.m, metrics.StageAnalyzer, prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: "contain", Subsystem: "analyzer", Name: "partitions_owned",
		Help: "Partitions of CONTAIN_EVENTS the analyzer instances of this process hold the lease of.",
	}))
	return pt
}

// defaultInstanceID is the host name (as a key token) and a random
// suffix.
func defaultInstanceID() string {
	host, _ := os.Hostname()
	host = strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' {
			return r
		}
		return '_'
	}, host)
	if len(host) > 48 {
		host = host[:48]
	}
	var b [4]byte
	_, _ = rand.Read(b[:])
	return host + "-" + hex.EncodeToString(b[:])
}

// run holds leases until ctx ends, then hands every partition over.
func (pt *partitioner) run(ctx context.Context) {
	pt.cctx, pt.ccancel = context.WithCancel(context.WithoutCancel(ctx))
	defer pt.ccancel()
	if err := pt.open(ctx); err != nil {
		return
	}
	defer pt.releaseAll()
	t := time.NewTicker(max(pt.ttl/4, 50*time.Millisecond))
	defer t.Stop()
	// The first round only announces this instance: it acquires from the
	// second on, having seen the others that start with it.
	for acquire := false; ; acquire = true {
		pt.round(ctx, acquire)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// open creates or binds the leases bucket, retrying until ctx ends.
func (pt *partitioner) open(ctx context.Context) error {
	for {
		kv, err := pt.a.js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
			Bucket:      LeasesBucket,
			Description: "contain analyzer partition leases (docs/design/022)",
			History:     1,
			TTL:         pt.ttl,
			Storage:     jetstream.MemoryStorage,
			Replicas:    max(pt.a.cfg.KVReplicas, 1),
		})
		if err == nil {
			pt.kv = kv
			pt.a.log.Info("analyzer instance joining", logfields.Instance, pt.id, logfields.Bucket, LeasesBucket)
			return nil
		}
		pt.a.m.Errors.WithLabelValues(metrics.StageAnalyzer, "lease").Inc()
		pt.a.log.Warn("opening leases bucket, retrying", logfields.Bucket, LeasesBucket, logfields.Err, err)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

// round renews this instance's heartbeat and leases, hands over the
// partitions the assignment gives another live instance and, when
// acquire, takes the free ones it gives this one.
func (pt *partitioner) round(ctx context.Context, acquire bool) {
	rctx, cancel := context.WithTimeout(ctx, max(pt.ttl/2, 100*time.Millisecond))
	defer cancel()
	started := time.Now()
	if _, err := pt.kv.Put(rctx, memberPrefix+pt.id, []byte(time.Now().UTC().Format(time.RFC3339Nano))); err != nil {
		pt.fail(err)
		return
	}
	for _, p := range pt.ownedList() {
		o := pt.get(p)
		rev, err := pt.kv.Update(rctx, leaseKey(p), []byte(pt.id), o.rev)
		if err != nil {
			if leaseConflict(err) {
				pt.lose(p, err)
				continue
			}
			pt.fail(err)
			return
		}
		o.rev = rev
	}
	// Renewed: the leases hold until started+TTL on the server, whatever
	// the view below says.
	pt.mu.Lock()
	pt.lastOK, pt.failed = started, false
	pt.mu.Unlock()
	members, holders, err := pt.view(rctx)
	if err != nil {
		pt.fail(err)
		return
	}
	want := assign(members, pt.n)
	for _, p := range pt.ownedList() {
		if want[p] != pt.id {
			pt.release(ctx, p)
		}
	}
	if !acquire {
		return
	}
	for p, owner := range want {
		if owner != pt.id || pt.get(p) != nil {
			continue
		}
		h, held := holders[p]
		var rev uint64
		switch {
		case !held:
			rev, err = pt.kv.Create(rctx, leaseKey(p), []byte(pt.id))
		case h.id == pt.id: // held by an earlier run of this instance id
			rev, err = pt.kv.Update(rctx, leaseKey(p), []byte(pt.id), h.rev)
		default:
			continue // its holder hands it over, or its lease expires
		}
		if err != nil {
			continue // taken meanwhile, or transient: next round
		}
		pt.acquire(ctx, p, rev)
	}
}

type holder struct {
	id  string
	rev uint64
}

// view lists the live instances and each held partition's holder.
func (pt *partitioner) view(ctx context.Context) (members []string, holders map[int]holder, err error) {
	lister, err := pt.kv.ListKeys(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("listing leases: %w", err)
	}
	defer func() { _ = lister.Stop() }()
	holders = map[int]holder{}
	for k := range lister.Keys() {
		if id, ok := strings.CutPrefix(k, memberPrefix); ok {
			members = append(members, id)
			continue
		}
		ps, ok := strings.CutPrefix(k, leasePrefix)
		if !ok {
			continue
		}
		p, err := strconv.Atoi(ps)
		if err != nil || p < 0 || p >= pt.n {
			continue
		}
		e, err := pt.kv.Get(ctx, k)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue
		}
		if err != nil {
			return nil, nil, fmt.Errorf("reading lease %s: %w", k, err)
		}
		holders[p] = holder{id: string(e.Value()), rev: e.Revision()}
	}
	if !slices.Contains(members, pt.id) {
		members = append(members, pt.id) // our heartbeat was just written
	}
	return members, holders, nil
}

// acquire loads partition p's baselines from the bucket, then consumes
// it. A failed load gives the lease back: the next round retries.
func (pt *partitioner) acquire(ctx context.Context, p int, rev uint64) {
	a := pt.a
	lctx, cancel := context.WithTimeout(ctx, loadTimeout)
	a.mu.Lock()
	n, bad, fellBack, err := a.store.LoadMatching(lctx, a.engine, a.log, func(key string) bool {
		return containv1.Partition(key, pt.n) == p
	})
	a.mu.Unlock()
	cancel()
	a.m.Errors.WithLabelValues(metrics.StageAnalyzer, kindBaselineCorrupt).Add(float64(bad))
	a.m.Errors.WithLabelValues(metrics.StageAnalyzer, kindBaselineFallback).Add(float64(fellBack))
	if err != nil {
		a.m.Errors.WithLabelValues(metrics.StageAnalyzer, kindBaselineLoad).Inc()
		a.log.Warn("loading a partition's baselines failed; giving its lease back", logfields.Partition, p, logfields.Err, err)
		dctx, dcancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
		_ = pt.kv.Delete(dctx, leaseKey(p), jetstream.LastRevision(rev))
		dcancel()
		a.mu.Lock()
		a.engine.dropPartition(p, pt.n)
		a.mu.Unlock()
		return
	}
	o := &ownedPartition{rev: rev, stop: make(chan struct{}), done: make(chan struct{})}
	pt.mu.Lock()
	pt.owned[p] = o
	pt.gauge.Inc()
	pt.mu.Unlock()
	pt.changes.WithLabelValues(changeAcquired).Inc()
	a.log.Info("partition acquired", logfields.Instance, pt.id, logfields.Partition, p, logfields.Loaded, n, logfields.Revision, rev)
	go pt.consume(p, o)
}

// Durable is the consumer name of partition p.
func partitionDurable(durable string, p int) string {
	return durable + "-" + containv1.PartitionToken(p)
}

// consume runs partition p's durable consumer until o.stop is closed (or
// the instance's consumers are cancelled).
func (pt *partitioner) consume(p int, o *ownedPartition) {
	defer close(o.done)
	a := pt.a
	err := bus.Consume(pt.cctx, a.js, bus.ConsumerConfig{
		Stream:        containv1.StreamEvents,
		Durable:       partitionDurable(a.cfg.Durable, p),
		FilterSubject: containv1.EventsPartitionFilter(p),
		Stage:         metrics.StageAnalyzer,
		Fetch:         a.cfg.Fetch,
		AckWait:       a.cfg.AckWait,
		Stop:          o.stop,
		Eager:         true, // on the detection path: a lone event goes at once
		// The engine copies what it keeps (TestEngineKeepsNoPayload)
		// and keeps no event past Observe: decoded into reused storage
		// (design 031).
		AliasPayload: true,
		ReuseEvents:  true,
	}, a.handle, a.m, a.log)
	if err != nil {
		a.log.Error("partition consumer ended", logfields.Partition, p, logfields.Err, err)
	}
}

// stopConsumer ends p's consumer after its fetch in hand and waits for it
// (at most releaseGrace, then it is cancelled).
func (pt *partitioner) stopConsumer(o *ownedPartition) {
	close(o.stop)
	select {
	case <-o.done:
	case <-time.After(releaseGrace):
		pt.ccancel()
		<-o.done
	}
}

// release hands partition p over: its consumer ends after the fetch in
// hand is handled and acknowledged, the baselines are written, forgotten,
// and the lease deleted, so that the next owner loads what was learned.
// When a baseline cannot be written the partition is kept (consumed
// again) and the next round retries.
func (pt *partitioner) release(ctx context.Context, p int) {
	o := pt.get(p)
	if o == nil {
		return
	}
	pt.stopConsumer(o)
	a := pt.a
	if failed := a.persist(ctx); failed > 0 {
		a.log.Warn("not handing a partition over: baselines not written", logfields.Partition, p, logfields.Count, failed)
		o.stop, o.done = make(chan struct{}), make(chan struct{})
		if pt.cctx.Err() == nil {
			go pt.consume(p, o)
		}
		return
	}
	a.mu.Lock()
	a.engine.dropPartition(p, pt.n)
	a.mu.Unlock()
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
	_ = pt.kv.Delete(dctx, leaseKey(p), jetstream.LastRevision(o.rev))
	cancel()
	pt.forget(p)
	pt.changes.WithLabelValues(changeReleased).Inc()
	a.log.Info("partition released", logfields.Instance, pt.id, logfields.Partition, p)
}

// lose stops consuming p without writing its baselines: another instance
// holds it (or may, the lease having expired) and loaded them.
func (pt *partitioner) lose(p int, why error) {
	o := pt.get(p)
	if o == nil {
		return
	}
	pt.stopConsumer(o)
	pt.a.mu.Lock()
	pt.a.engine.dropPartition(p, pt.n)
	pt.a.mu.Unlock()
	pt.forget(p)
	pt.changes.WithLabelValues(changeLost).Inc()
	pt.a.log.Warn("partition lost", logfields.Instance, pt.id, logfields.Partition, p, logfields.Err, why)
}

// fail counts a failed round; once no round succeeded for 3/4 of a lease
// TTL (two renewals missed) every partition is given up, before the
// leases expire on the server and another instance may take them.
func (pt *partitioner) fail(err error) {
	pt.a.m.Errors.WithLabelValues(metrics.StageAnalyzer, "lease").Inc()
	pt.mu.Lock()
	first := !pt.failed
	pt.failed = true
	expired := !pt.lastOK.IsZero() && time.Since(pt.lastOK) > fenceAfter(pt.ttl)
	pt.mu.Unlock()
	if first {
		pt.a.log.Warn("renewing partition leases failed; retrying", logfields.Instance, pt.id, logfields.Err, err)
	}
	if expired {
		for _, p := range pt.ownedList() {
			pt.lose(p, fmt.Errorf("leases not renewed for %s: %w", fenceAfter(pt.ttl), err))
		}
	}
}

// releaseAll hands every partition over and leaves (ctx has ended).
func (pt *partitioner) releaseAll() {
	ctx, cancel := context.WithTimeout(context.Background(), releaseGrace)
	defer cancel()
	for _, p := range pt.ownedList() {
		pt.release(ctx, p)
	}
	_ = pt.kv.Delete(ctx, memberPrefix+pt.id)
}

func (pt *partitioner) get(p int) *ownedPartition {
	pt.mu.Lock()
	defer pt.mu.Unlock()
	return pt.owned[p]
}

func (pt *partitioner) forget(p int) {
	pt.mu.Lock()
	if _, ok := pt.owned[p]; ok {
		delete(pt.owned, p)
		pt.gauge.Dec()
	}
	pt.mu.Unlock()
}

// ownedList is the partitions held, ascending.
func (pt *partitioner) ownedList() []int {
	pt.mu.Lock()
	defer pt.mu.Unlock()
	out := make([]int, 0, len(pt.owned))
	for p := range pt.owned {
		out = append(out, p)
	}
	slices.Sort(out)
	return out
}

// ready is nil while the leases are renewed: the instance has joined and
// its last renewed round is recent.
func (pt *partitioner) ready() error {
	pt.mu.Lock()
	defer pt.mu.Unlock()
	switch {
	case pt.lastOK.IsZero():
		return errors.New("analyzer partitions: not joined yet (leases bucket " + LeasesBucket + ")")
	case time.Since(pt.lastOK) > fenceAfter(pt.ttl):
		return fmt.Errorf("analyzer partitions: leases not renewed for %s", time.Since(pt.lastOK).Round(time.Millisecond))
	}
	return nil
}

// owns reports whether key's partition is held.
func (pt *partitioner) owns(key string) bool {
	return pt.get(containv1.Partition(key, pt.n)) != nil
}

// leaseConflict: the lease is gone or another instance holds it.
func leaseConflict(err error) bool {
	if errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) {
		return true
	}
	var api *jetstream.APIError
	return errors.As(err, &api) && (api.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
		api.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant)
}
