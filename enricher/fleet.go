package enricher

import (
	"fmt"
	"hash/fnv"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/containsec/contain/internal/bus"
	"github.com/containsec/contain/internal/metrics"
	"github.com/containsec/contain/schemas/containv1"
)

// fleetMessages regroups a fetch's output messages (enricher.fleet_batches,
// design 036 proposal 1): the messages of one partition, of every host
// of the fetch, become the parts of fleet batches on
// containv1.FleetSubject(p), each as large as the payload limit allows,
// in the order of their first message. A part is the message's payload
// unchanged, so a consumer reads it as the batch it was, bound to the
// subject it had. A fleet batch's id hashes its parts' ids: published
// again with the same parts (a fetch redelivered alone) it is stored
// once; regrouped otherwise, its parts are recognised by the consumers
// (bus: parts already handled are skipped, the store's rows by event id).
func (e *Enricher) fleetMessages(msgs []*nats.Msg) ([]*nats.Msg, error) {
	if len(msgs) == 0 {
		return msgs, nil
	}
	type group struct {
		p    int
		msgs []*nats.Msg
	}
	var groups []group
	find := func(p int) *group {
		for i := range groups {
			if groups[i].p == p {
				return &groups[i]
			}
		}
		groups = append(groups, group{p: p})
		return &groups[len(groups)-1]
	}
	for _, m := range msgs {
		g := find(subjectPartition(m.Subject))
		g.msgs = append(g.msgs, m)
	}
	limit := e.payloadLimit() - 1024
	out := make([]*nats.Msg, 0, len(groups))
	e.scratchMu.Lock()
	defer e.scratchMu.Unlock()
	for _, g := range groups {
		for rest := g.msgs; len(rest) > 0; {
			// As many parts as fit (at least one: each fit alone).
			size, n := 0, 0
			for n < len(rest) {
				add := bus.FleetPartSize(rest[n].Data)
				if n > 0 && size+add+fleetHeaderMax > limit {
					break
				}
				size += add
				n++
			}
			m, err := e.fleetMessage(g.p, rest[:n], size)
			if err != nil {
				return nil, err
			}
			out = append(out, m)
			rest = rest[n:]
		}
	}
	return out, nil
}

// fleetHeaderMax bounds a fleet batch's header (AppendFleetHeader with
// fleetProducer's id).
const fleetHeaderMax = 64

// fleetMessage writes parts (partsSize bytes as parts) as one fleet batch
// of partition p (-1: unpartitioned) in the output arena.
func (e *Enricher) fleetMessage(p int, parts []*nats.Msg, partsSize int) (*nats.Msg, error) {
	h := fnv.New64a()
	for _, m := range parts {
		_, _ = h.Write([]byte(m.Header.Get(jetstream.MsgIDHeader)))
		_, _ = h.Write([]byte{0})
	}
	producer := containv1.FleetToken + "~" + strconv.FormatUint(h.Sum64(), 36) + "~" + strconv.Itoa(len(parts))
	size := bus.FleetHeaderSize(metrics.StageEnricher, producer, 0) + partsSize
	sc := &e.scratch
	buf, at := sc.arenaBuf(size)
	buf = bus.AppendFleetHeader(buf, metrics.StageEnricher, producer, 0)
	for _, m := range parts {
		buf = bus.AppendFleetPart(buf, m.Data)
	}
	if len(buf) <= size {
		sc.arena = sc.arena[:at+len(buf)]
	}
	buf = buf[:len(buf):len(buf)]
	msg, err := bus.NewEncodedMsg(containv1.FleetSubject(p), metrics.StageEnricher, producer, 0, containv1.SchemaVersionFleet, buf)
	if err != nil {
		e.em.publishErrors.Inc()
		return nil, fmt.Errorf("enricher: fleet batch: %w", err)
	}
	e.em.fleetParts.Observe(float64(len(parts)))
	return msg, nil
}

// subjectPartition is the partition of an events subject
// (contain.v1.events.<host>.p<n>), -1 for one without.
func subjectPartition(subject string) int {
	i := strings.LastIndexByte(subject, '.')
	if i < 0 {
		return -1
	}
	if p, ok := containv1.ParsePartitionToken(subject[i+1:]); ok && strings.Count(subject, ".") == 4 {
		return p
	}
	return -1
}

// linger is the consumer's Linger: enricher.fleet_linger with fleet
// batches, else none (a fetch's messages are published one by one).
func (e *Enricher) linger() time.Duration {
	if !e.cfg.FleetBatches {
		return 0
	}
	return e.cfg.FleetLinger
}
