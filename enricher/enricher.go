package enricher

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/containsec/contain/internal/bus"
	"github.com/containsec/contain/internal/logfields"
	"github.com/containsec/contain/internal/metrics"
	"github.com/containsec/contain/schemas/containv1"
	"github.com/containsec/contain/schemas/kvdoc"
)

// ckey identifies a container: ids are only unique per host.
type ckey struct{ host, id string }

// entry is the immutable enrichment of one container; updates replace it.
// Make it with newEntry.
type entry struct {
	rec        ContainerImage
	profileRef string
	// wire is what applyEntry sets but the container name, as event
	// fields to append (wire.go); nameWire the container name's field.
	wire, nameWire []byte
	// part is 1 + the partition of the container's events once computed
	// (wirePartition), when the entry alone decides it.
	part atomic.Int32
	// dict is the entry's place in the container dictionary of the output
	// batch the wire path writes now (dictionary.go): valid while its gen
	// is that batch's; touched only under scratchMu.
	dict dictMemo
}

// Enricher consumes raw batches, attaches image reference, digest and
// declared-profile reference to each event and republishes the batches on
// CONTAIN_EVENTS. See doc.go.
type Enricher struct {
	cfg Config
	js  jetstream.JetStream
	m   *metrics.Metrics
	em  *enricherMetrics
	log *slog.Logger

	containers jetstream.KeyValue
	profilesKV jetstream.KeyValue
	imagesKV   jetstream.KeyValue
	res        *resolver

	mu       sync.RWMutex
	cache    map[ckey]*entry
	misses   map[ckey]time.Time
	profiles map[string]string // image digest -> profile ref
	digests  map[string]string // image ref -> digest learnt by resolution

	peersMu  sync.Mutex // serialises service-profile updates; taken before mu
	services map[svcKey]*svcProfile

	// router, when set with more than one partition, routes each event to
	// its baseline group's partition (partition.go).
	router Router

	// maxPayload, when set (tests), replaces bus.MaxPayload as the size
	// past which an output batch is split.
	maxPayload int

	// deferPuts, set by handleMessages for its call, makes containerEvent
	// queue container records' puts in puts instead of putting them.
	deferPuts bool
	puts      []containerPut

	// scratch is the wire path's buffers (wire.go), reused by each
	// handler call under scratchMu.
	scratchMu sync.Mutex
	scratch   wireScratch
}

// New makes an Enricher; Run starts it. js may be used by other stages too.
// log is used as given: the caller scopes it once (logfields.Stage).
func New(cfg Config, js jetstream.JetStream, m *metrics.Metrics, log *slog.Logger) (*Enricher, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if js == nil || m == nil || log == nil {
		return nil, errors.New("enricher: jetstream, metrics and logger are required")
	}
	e := &Enricher{
		cfg:      cfg,
		js:       js,
		m:        m,
		em:       newEnricherMetrics(m),
		log:      log,
		cache:    make(map[ckey]*entry),
		misses:   make(map[ckey]time.Time),
		profiles: make(map[string]string),
		digests:  make(map[string]string),
		services: make(map[svcKey]*svcProfile),
	}
	if cfg.Workers > 0 {
		r, err := newResolver(e)
		if err != nil {
			return nil, err
		}
		e.res = r
	}
	return e, nil
}

// Run opens the KV buckets, loads the known containers, then consumes
// CONTAIN_RAW until ctx ends. It returns an error only when it cannot start.
func (e *Enricher) Run(ctx context.Context) error {
	if err := e.open(ctx); err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	if err := e.watchContainers(ctx, &wg); err != nil {
		return err
	}
	if e.res != nil {
		e.res.start(ctx, &wg)
	}
	err := bus.ConsumeMessages(ctx, e.js, bus.ConsumerConfig{
		Stream:        containv1.StreamRaw,
		Durable:       e.cfg.Durable,
		FilterSubject: e.cfg.FilterSubject,
		Stage:         metrics.StageEnricher,
		Fetch:         e.cfg.Fetch,
		FetchWait:     e.cfg.FetchWait,
		AckWait:       e.cfg.AckWait,
		Eager:         true, // on the detection path: a lone event goes at once
		Linger:        e.linger(),
		// The events are relayed on the wire (wire.go); a batch left to
		// decoding is re-encoded before the handler returns. What the
		// enricher keeps (container records, misses) is cloned.
		AliasPayload: true,
	}, e.handleMessages, e.m, e.log)
	cancel()
	wg.Wait()
	return err
}

// open creates or binds the KV buckets, retrying while NATS is not ready.
func (e *Enricher) open(ctx context.Context) error {
	for {
		err := e.openOnce(ctx)
		if err == nil {
			return nil
		}
		e.m.Errors.WithLabelValues(metrics.StageEnricher, errKV).Inc()
		e.log.Warn("opening kv buckets, retrying", logfields.Err, err)
		select {
		case <-ctx.Done():
			return fmt.Errorf("enricher: %w", err)
		case <-time.After(time.Second):
		}
	}
}

func (e *Enricher) openOnce(ctx context.Context) error {
	var err error
	e.containers, err = e.js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      e.cfg.ContainersBucket,
		Description: "contain: container id -> image (enricher)",
		TTL:         e.cfg.ContainersTTL,
		History:     1,
		Replicas:    max(e.cfg.KVReplicas, 1),
	})
	if err != nil {
		return fmt.Errorf("kv %s: %w", e.cfg.ContainersBucket, err)
	}
	e.profilesKV, err = openProfiles(ctx, e.js, e.cfg.ProfilesBucket, e.cfg.KVReplicas)
	if err != nil {
		return err
	}
	e.imagesKV, err = e.js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      e.cfg.ImagesBucket,
		Description: "contain: image declarations by digest (enricher)",
		History:     1,
		Replicas:    max(e.cfg.KVReplicas, 1),
	})
	if err != nil {
		return fmt.Errorf("kv %s: %w", e.cfg.ImagesBucket, err)
	}
	return nil
}

// watchContainers loads every container record, then keeps applying
// updates (from this or another enricher instance) until ctx ends.
func (e *Enricher) watchContainers(ctx context.Context, wg *sync.WaitGroup) error {
	w, err := e.containers.WatchAll(ctx)
	if err != nil {
		return fmt.Errorf("enricher: watching %s: %w", e.cfg.ContainersBucket, err)
	}
	loaded := make(chan struct{})
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer func() { _ = w.Stop() }()
		initial := true
		for {
			select {
			case <-ctx.Done():
				return
			case kve, ok := <-w.Updates():
				if !ok {
					return
				}
				if kve == nil {
					if initial {
						initial = false
						close(loaded)
					}
					continue
				}
				if kve.Operation() != jetstream.KeyValuePut {
					continue
				}
				rec, err := decodeContainerRecord(kve.Value())
				if err != nil {
					e.m.Malformed.WithLabelValues(metrics.StageEnricher).Inc()
					e.log.Warn("skipping malformed container record", logfields.Key, kve.Key(), logfields.Err, err)
					continue
				}
				if e.store(rec) {
					if e.res != nil {
						e.res.request(rec)
					}
					e.refreshPeers(ctx, rec.ComposeProject, rec.ComposeService)
				}
			}
		}
	}()
	select {
	case <-loaded:
	case <-ctx.Done():
	case <-time.After(30 * time.Second):
		e.log.Warn("container records still loading after 30s; going on")
	}
	e.mu.RLock()
	n := len(e.cache)
	e.mu.RUnlock()
	e.log.Info("known containers loaded", logfields.Containers, n)
	return nil
}

// decodeContainerRecord parses a containers-bucket value.
func decodeContainerRecord(b []byte) (ContainerImage, error) {
	var rec ContainerImage
	if err := json.Unmarshal(b, &rec); err != nil {
		return rec, fmt.Errorf("container record: %w", err)
	}
	if rec.ContainerID == "" {
		return rec, errors.New("container record: no container_id")
	}
	if rec.ImageDigest != "" && !kvdoc.ValidDigest(rec.ImageDigest) {
		return rec, fmt.Errorf("container record: bad image_digest %q", rec.ImageDigest)
	}
	return rec, nil
}

// store puts rec in the memory cache and reports whether it changed.
// What enrichBatch copies into events from an entry is made UTF-8 here,
// so that the enriched batches need no second check (bus.NewMsgChecked).
func (e *Enricher) store(rec ContainerImage) bool {
	k := ckey{rec.Host, rec.ContainerID}
	e.mu.Lock()
	defer e.mu.Unlock()
	if rec.ImageDigest == "" && rec.ImageRef != "" {
		rec.ImageDigest = e.digests[rec.ImageRef]
	}
	rec.ImageRef, rec.ImageDigest, rec.Name = validUTF8(rec.ImageRef), validUTF8(rec.ImageDigest), validUTF8(rec.Name)
	old, ok := e.cache[k]
	if ok {
		rec = keepRuntimeIdentity(old.rec, rec)
	}
	if ok && sameImage(old.rec, rec) {
		return false
	}
	if !ok && len(e.cache) >= e.cfg.MaxContainers {
		for victim := range e.cache { // evict one; the KV bucket still has it
			delete(e.cache, victim)
			e.m.Dropped.WithLabelValues(metrics.StageEnricher, "container_cache_full").Inc()
			break
		}
	}
	e.cache[k] = newEntry(rec, validUTF8(e.profiles[rec.ImageDigest]))
	delete(e.misses, k)
	e.em.containers.Set(float64(len(e.cache)))
	return true
}

// validUTF8 is s with each invalid UTF-8 sequence replaced by U+FFFD.
func validUTF8(s string) string {
	if utf8.ValidString(s) {
		return s
	}
	return strings.ToValidUTF8(s, "\uFFFD")
}

// lookup returns the entry of k, asking the KV bucket at most once per
// MissRecheck for a container the cache does not know.
func (e *Enricher) lookup(ctx context.Context, k ckey) *entry {
	e.mu.RLock()
	en := e.cache[k]
	var missedAt time.Time
	if en == nil {
		missedAt = e.misses[k]
	}
	e.mu.RUnlock()
	if en != nil {
		return en
	}
	now := time.Now()
	if !missedAt.IsZero() && now.Sub(missedAt) < e.cfg.MissRecheck {
		return nil
	}
	if kve, err := e.containers.Get(ctx, kvdoc.ContainerKey(k.host, k.id)); err == nil {
		if rec, err := decodeContainerRecord(kve.Value()); err == nil {
			e.store(rec)
			e.mu.RLock()
			en = e.cache[k]
			e.mu.RUnlock()
			return en
		}
	} else if !errors.Is(err, jetstream.ErrKeyNotFound) {
		e.m.Errors.WithLabelValues(metrics.StageEnricher, errKV).Inc()
	}
	e.mu.Lock()
	if len(e.misses) >= e.cfg.MaxContainers {
		clear(e.misses)
	}
	e.misses[ckey{strings.Clone(k.host), strings.Clone(k.id)}] = now // k points into a payload
	e.mu.Unlock()
	return nil
}

// messages enriches batches and encodes the output messages, with the
// number of events of each.
func (e *Enricher) messages(ctx context.Context, batches []*containv1.Batch) ([]*nats.Msg, []int, error) {
	msgs := make([]*nats.Msg, 0, len(batches))
	sizes := make([]int, 0, len(batches))
	for _, b := range batches {
		if err := e.enrichBatch(ctx, b); err != nil {
			return nil, nil, err
		}
		for _, out := range e.route(b) {
			// The events were decoded (UTF-8 checked) and what enrichBatch
			// wrote into them is UTF-8 (store): no second check.
			msg, err := bus.NewMsgChecked(out.subject, out.batch)
			tooLarge := errors.Is(err, bus.ErrTooLarge) || (err == nil && len(msg.Data) > e.payloadLimit()-1024)
			if tooLarge && len(out.batch.Events) > 1 {
				// Grown past MaxPayload by the enrichment: in parts.
				var parts []*nats.Msg
				for _, p := range splitBatch(out.batch, e.payloadLimit()) {
					if msg, err = bus.NewMsgChecked(out.subject, p); err != nil {
						break
					}
					parts = append(parts, msg)
					sizes = append(sizes, len(p.Events))
				}
				if err == nil {
					msgs = append(msgs, parts...)
					continue
				}
			}
			if err != nil {
				e.em.publishErrors.Inc()
				return nil, nil, fmt.Errorf("enricher: %w", err)
			}
			msgs = append(msgs, msg)
			sizes = append(sizes, len(out.batch.Events))
		}
	}
	return msgs, sizes, nil
}

// enrichBatch sets image_ref, image_digest and profile_ref on every event
// of a known container, in place. Container events update the cache (and
// the KV bucket) before the events that follow them.
func (e *Enricher) enrichBatch(ctx context.Context, b *containv1.Batch) error {
	var m entryMemo
	for _, ev := range b.Events {
		if ev == nil {
			continue
		}
		h := ev.Host
		if h == "" {
			h = b.Host
		}
		if ev.Kind == containv1.Kind_KIND_CONTAINER && ev.ContainerId != "" {
			if err := e.containerEvent(ctx, h, ev); err != nil {
				return err
			}
			m.forget()
		}
		if en := m.find(ctx, e, h, ev.ContainerId); en != nil {
			applyEntry(ev, en)
		}
	}
	m.count(e.em)
	return nil
}

// entryMemo is the per-event step of enrichBatch and wireEnrich: the
// entry of each event's container, looked up once per run of one
// container's events, and the events counted by result.
type entryMemo struct {
	key                     ckey
	en                      *entry
	ok                      bool
	enriched, unknown, host int
}

// find returns the entry of container id on host h: nil for a host event
// (no id) or an unknown container.
func (m *entryMemo) find(ctx context.Context, e *Enricher, h, id string) *entry {
	if id == "" {
		m.host++
		return nil
	}
	if k := (ckey{h, id}); !m.ok || k != m.key {
		m.key, m.en, m.ok = k, e.lookup(ctx, k), true
	}
	if m.en == nil {
		m.unknown++
	} else {
		m.enriched++
	}
	return m.en
}

// forget drops the memo: a container event may have changed the cache.
func (m *entryMemo) forget() { m.ok = false }

// count adds the counts to the enricher's metrics.
func (m *entryMemo) count(em *enricherMetrics) {
	em.enriched.Add(float64(m.enriched))
	em.unknown.Add(float64(m.unknown))
	em.host.Add(float64(m.host))
}

// applyEntry writes en's enrichment into ev. Values the collector already
// set are kept when the enricher knows nothing better.
func applyEntry(ev *containv1.Event, en *entry) {
	en.override(&ev.ContainerName, &ev.ImageRef, &ev.ImageDigest, &ev.ProfileRef)
}

// override is the one rule by which an entry enriches an event's
// container fields, decoded (applyEntry) or scanned (entryOf): the
// entry's image, digest and profile over the event's own when it has
// them, its name only where the event has none.
func (en *entry) override(name, ref, digest, profile *string) {
	if en.rec.ImageRef != "" {
		*ref = en.rec.ImageRef
	}
	if en.rec.ImageDigest != "" {
		*digest = en.rec.ImageDigest
	}
	if en.profileRef != "" {
		*profile = en.profileRef
	}
	if *name == "" {
		*name = en.rec.Name
	}
}

// containerEvent records the image of the container ev describes and
// persists it when it changed. A KV failure fails the batch, so that it is
// redelivered instead of acknowledged without its record.
func (e *Enricher) containerEvent(ctx context.Context, host string, ev *containv1.Event) error {
	var labels map[string]string
	if ci := ev.GetContainer(); ci != nil {
		labels = ci.Labels
	}
	rec := containerFromLabels(host, ev.ContainerId, ev.ContainerName, labels, ev.WallNs)
	if e.router != nil {
		rec.Group = e.router.Group(ev.GetContainer())
	}
	id := IdentityOf(ev.GetContainer(), ev.ContainerName)
	rec.ImageRef, rec.ImageDigest, rec.Name, rec.IdentitySource = id.Ref, id.Digest, id.Name, id.Source
	if id.Conflict {
		e.m.Dropped.WithLabelValues(metrics.StageEnricher, "label_digest_overridden").Inc()
		e.log.Warn("a label names another image digest than the runtime: the runtime's is kept",
			logfields.Host, host, logfields.ContainerID, ev.ContainerId, logfields.Digest, id.Digest, logfields.LabelDigest, truncateLabel(labels))
	}
	if ci := ev.GetContainer(); ci != nil {
		var bad int
		rec.Addresses, bad = addressStrings(ci.Addresses)
		rec.HostNetwork = ci.HostNetwork
		if bad > 0 {
			e.m.Malformed.WithLabelValues(metrics.StageEnricher).Inc()
		}
	}
	if rec.ImageRef == "" && rec.ImageDigest == "" {
		// The collector may already have set them on the envelope.
		rec.ImageRef, rec.ImageDigest = ev.ImageRef, ev.ImageDigest
		if rec.ImageDigest != "" && !kvdoc.ValidDigest(rec.ImageDigest) {
			rec.ImageDigest = ""
		}
	}
	// ev points into the message's payload (AliasPayload): what is kept
	// is copied.
	rec = rec.clone()
	if !e.store(rec) {
		return nil
	}
	e.mu.RLock()
	rec = e.cache[ckey{host, ev.ContainerId}].rec
	e.mu.RUnlock()
	data, err := json.Marshal(rec)
	if err != nil {
		return fmt.Errorf("enricher: encoding container record: %w", err)
	}
	if e.deferPuts {
		// Published with the fetch's output batches, and awaited with
		// them (handleMessages): the input is acknowledged only once
		// both are stored.
		e.puts = append(e.puts, containerPut{key: ckey{rec.Host, rec.ContainerID},
			msg: &nats.Msg{Subject: "$KV." + e.cfg.ContainersBucket + "." + kvdoc.ContainerKey(host, ev.ContainerId), Data: data}})
		e.afterPut(ctx, rec)
		return nil
	}
	if _, err := e.containers.Put(ctx, kvdoc.ContainerKey(host, ev.ContainerId), data); err != nil {
		e.m.Errors.WithLabelValues(metrics.StageEnricher, errKV).Inc()
		e.mu.Lock()
		delete(e.cache, ckey{host, ev.ContainerId}) // stored again on redelivery
		e.mu.Unlock()
		return fmt.Errorf("enricher: storing container %s: %w", ev.ContainerId, err)
	}
	e.afterPut(ctx, rec)
	return nil
}

// afterPut is what follows a container record's put: resolution of its
// image, service profiles naming it as a peer. With deferred puts it runs
// before the put is stored, as the events after the container event see
// its effects; a put that then fails fails the fetch (unstore).
func (e *Enricher) afterPut(ctx context.Context, rec ContainerImage) {
	e.log.Debug("container", logfields.Host, rec.Host, logfields.ContainerID, rec.ContainerID, logfields.Image, rec.ImageRef, logfields.Digest, rec.ImageDigest)
	if e.res != nil {
		e.res.request(rec)
	}
	e.refreshPeers(ctx, rec.ComposeProject, rec.ComposeService)
}

// containerPut is a container record's put deferred to the fetch's
// publish (handleMessages).
type containerPut struct {
	key ckey
	msg *nats.Msg
}

// unstore forgets the containers whose deferred puts were not stored, so
// that the redelivered container events store and put them again.
func (e *Enricher) unstore(puts []containerPut) {
	if len(puts) == 0 {
		return
	}
	e.mu.Lock()
	for _, p := range puts {
		delete(e.cache, p.key)
	}
	e.mu.Unlock()
}

// outputBatch wraps in's events as the enricher's batch. The batch keeps
// the input's producer id and sequence so that a redelivered input is
// published under the same Nats-Msg-Id (and stored once).
func outputBatch(in *containv1.Batch) *containv1.Batch {
	return &containv1.Batch{
		SchemaVersion: containv1.SchemaVersion,
		Host:          in.Host,
		Stage:         metrics.StageEnricher,
		Seq:           in.Seq,
		ProducerId:    in.ProducerId,
		Events:        in.Events,
	}
}

// splitBatch cuts an output batch grown past limit (bus.MaxPayload) by
// the enrichment in parts, each with a producer id suffix ~<part>.
func splitBatch(in *containv1.Batch, limit int) []*containv1.Batch {
	var parts []*containv1.Batch
	var split func(evs []*containv1.Event)
	split = func(evs []*containv1.Event) {
		p := &containv1.Batch{
			SchemaVersion: containv1.SchemaVersion,
			Host:          in.Host,
			Stage:         metrics.StageEnricher,
			Seq:           in.Seq,
			Events:        evs,
		}
		if len(evs) < 2 || p.SizeVT() <= limit-1024 {
			parts = append(parts, p)
			return
		}
		split(evs[:len(evs)/2])
		split(evs[len(evs)/2:])
	}
	split(in.Events)
	for i, p := range parts {
		p.ProducerId = in.ProducerId + "~" + strconv.Itoa(i)
	}
	return parts
}
