package bus

import (
	"hash/maphash"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/containsec/contain/schemas/containv1"
)

// partsRemembered bounds how many fleet parts a consumer remembers as
// handled (~0.75 MB when full, per consumer: per partition an analyzer
// holds). A partition gets about one part per raw batch, so at 200 hosts
// (200 parts a second) that is 160 s, several times the enricher's ack
// wait after which a fetch it did not acknowledge is published again; at
// ten times the hosts, 16 s: a part published again later than that is
// handled twice (its alerts keep their ids; design 036).
const partsRemembered = 1 << 15

// partsSeen remembers the message ids (MsgID) of the fleet parts a
// consumer handled, so that a part published again in another fleet
// batch is handled once (design 036: an enricher that fails after
// publishing a fetch publishes it again when the fetch is redelivered,
// grouped with other raw batches, so under another Nats-Msg-Id that
// JetStream does not de-duplicate). A part is remembered only once its
// message was acknowledged after its handler succeeded: a part whose
// handling failed is handled when it comes again. Ids are kept as 64-bit
// hashes in a ring of the last partsRemembered; a hash collision (odds
// ~2⁻⁴⁸ per part) would skip one part. Not safe for concurrent use: one
// per consumer loop.
type partsSeen struct {
	seed  maphash.Seed
	max   int
	set   map[uint64]struct{}
	ring  []uint64
	next  int
	fetch map[uint64]struct{} // parts taken in the fetch being read
}

func newPartsSeen(n int) *partsSeen {
	return &partsSeen{seed: maphash.MakeSeed(), max: n} // the ring is made on the first part
}

func (p *partsSeen) key(id string) uint64 { return maphash.String(p.seed, id) }

// newFetch starts reading a fetch.
func (p *partsSeen) newFetch() { clear(p.fetch) }

// take reports whether the part id is to be handled: not handled before,
// nor taken earlier in this fetch.
func (p *partsSeen) take(id string) bool {
	k := p.key(id)
	if _, ok := p.set[k]; ok {
		return false
	}
	if _, ok := p.fetch[k]; ok {
		return false
	}
	if p.fetch == nil {
		p.fetch = map[uint64]struct{}{}
	}
	p.fetch[k] = struct{}{}
	return true
}

// noteFleet remembers as handled the parts of the fleet messages among
// msgs (acknowledged): batches[spans[i][0]:spans[i][1]] are msgs[i]'s.
func (p *partsSeen) noteFleet(msgs []jetstream.Msg, spans [][2]int, batches []*containv1.Batch) {
	for i, msg := range msgs {
		if !isFleetMsg(msg.Subject(), msg.Data()) {
			continue
		}
		for _, b := range batches[spans[i][0]:spans[i][1]] {
			p.add(p.key(MsgID(b)))
		}
	}
}

func (p *partsSeen) add(k uint64) {
	if p.set == nil {
		p.set, p.ring = map[uint64]struct{}{}, make([]uint64, 0, p.max)
	}
	if _, ok := p.set[k]; ok {
		return
	}
	if len(p.ring) < cap(p.ring) {
		p.ring = append(p.ring, k)
	} else {
		delete(p.set, p.ring[p.next])
		p.ring[p.next] = k
		p.next = (p.next + 1) % len(p.ring)
	}
	p.set[k] = struct{}{}
}
