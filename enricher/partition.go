package enricher

import (
	"github.com/containsec/contain/schemas/containv1"
)

// Router routes a container's events to a partition of CONTAIN_EVENTS, the
// partition of the analyzer baseline group they belong to
// (docs/design/022-analyzer-partitions.md). analyzer.Router implements it;
// the enricher does not know how groups are formed.
type Router interface {
	// Partitions is the number of partitions; <= 1 turns routing off.
	Partitions() int
	// Group is the group a container's KIND_CONTAINER event names ("" when
	// its events fall back to their image key).
	Group(ci *containv1.ContainerInfo) string
	// Partition is the partition of an enriched event of a container of
	// group (may be ""). It may read only the event's host, container_id,
	// image_ref, image_digest and kind (the wire path hands it an event
	// with just those set, and remembers the partition of a container
	// whose entry sets both image fields: wirePartition).
	Partition(group string, ev *containv1.Event) int
}

// SetRouter makes the enricher publish each event on its partition's
// subject (containv1.EventsPartitionSubject) when r has more than one
// partition. Call it before Run.
func (e *Enricher) SetRouter(r Router) {
	if r != nil && r.Partitions() > 1 {
		e.router = r
	}
}

// outBatch is one batch to publish and its subject.
type outBatch struct {
	subject string
	batch   *containv1.Batch
}

// route makes the output batches of an enriched input batch: one per
// partition its events fall in (their order kept), each split further
// when too large (splitBatch). The partition's batch keeps the input's
// sequence with producer id suffix ~p<partition>, so a redelivered input
// is published under the same Nats-Msg-Ids.
func (e *Enricher) route(in *containv1.Batch) []outBatch {
	if e.router == nil {
		return []outBatch{{containv1.EventsSubject(in.Host), outputBatch(in)}}
	}
	parts := make([][]*containv1.Event, e.router.Partitions())
	var order []int
	var (
		last     ckey
		lastP    int
		haveLast bool
	)
	for _, ev := range in.Events {
		// Batches hold runs of one container's events: route a run once.
		k := ckey{ev.GetHost(), ev.GetContainerId()}
		if k.host == "" {
			k.host = in.Host
		}
		p := lastP
		if !haveLast || k != last || k.id == "" {
			p = e.partitionOf(in.Host, ev)
			last, lastP, haveLast = k, p, true
		}
		if parts[p] == nil {
			order = append(order, p)
		}
		parts[p] = append(parts[p], ev)
	}
	var out []outBatch
	for _, p := range order {
		sub := &containv1.Batch{
			SchemaVersion: in.SchemaVersion,
			Host:          in.Host,
			Stage:         in.Stage,
			ProducerId:    in.ProducerId + "~" + containv1.PartitionToken(p),
			Seq:           in.Seq,
			Events:        parts[p],
		}
		out = append(out, outBatch{containv1.EventsPartitionSubject(in.Host, p), outputBatch(sub)})
	}
	return out
}

// partitionOf is the partition of one enriched event: its container's
// group (from the cache, which the container's KIND_CONTAINER event
// filled) else its image key; host events (no container) go to 0.
func (e *Enricher) partitionOf(batchHost string, ev *containv1.Event) int {
	if ev == nil || ev.ContainerId == "" {
		return 0
	}
	h := ev.Host
	if h == "" {
		h = batchHost
	}
	group := ""
	e.mu.RLock()
	if en := e.cache[ckey{h, ev.ContainerId}]; en != nil {
		group = en.rec.Group
	}
	e.mu.RUnlock()
	p := e.router.Partition(group, ev)
	if p < 0 || p >= e.router.Partitions() {
		return 0
	}
	return p
}
