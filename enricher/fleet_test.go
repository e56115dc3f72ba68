package enricher

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/containsec/contain/internal/bus"
	"github.com/containsec/contain/schemas/containv1"
)

// manyFetch is a fetch of several raw messages.
type manyFetch struct{ subjects, data []string }

func (f *manyFetch) Len() int { return len(f.data) }

func (f *manyFetch) Wire(i int, wb *bus.WireBatch) bool {
	return bus.ScanBatch([]byte(f.data[i]), wb) && wb.BoundTo(f.subjects[i])
}

func (f *manyFetch) Batch(i int) *containv1.Batch {
	b, err := bus.DecodeAliased([]byte(f.data[i]))
	if err != nil || bus.CheckHost(f.subjects[i], b) != nil {
		return nil
	}
	return b
}

// TestFleetMessages: a fetch of many hosts' raw batches, regrouped as fleet
// batches (enricher.fleet_batches), carries exactly the messages the
// enricher publishes one by one: per partition, in order, each part the
// message's bytes unchanged and accepted by the consumers' binding to the
// part's host (bus.CheckHost on containv1.FleetPartSubject). A fleet batch
// stays under the payload limit (several per partition when the parts do
// not fit in one), and the same fetch gives the same message ids (a fetch
// redelivered alone is stored once).
func TestFleetMessages(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for ri, router := range routers() {
		for _, limit := range []int{0, 16 << 10} {
			t.Run(fmt.Sprintf("router%d/limit=%d", ri, limit), func(t *testing.T) {
				e := wireTestEnricher(memKV{}, router, limit)
				f := &manyFetch{}
				for h := range 12 {
					host := fmt.Sprintf("h%d", 1+h%6) // some hosts twice in one fetch
					b := randomBatch(r, true, true, 120, 40)
					b.Host, b.ProducerId, b.Seq = host, "col-"+host, uint64(1+h)
					for _, ev := range b.Events {
						ev.Host = host
					}
					data, err := bus.Encode(b)
					if err != nil {
						t.Fatal(err)
					}
					f.subjects, f.data = append(f.subjects, containv1.RawSubject(host)), append(f.data, string(data))
				}
				ctx := context.Background()
				// A first pass fills the cache (lookups, remembered
				// partitions): the passes compared below see the same.
				if _, _, err := e.fetchMessages(ctx, f); err != nil {
					t.Fatal(err)
				}
				e.recycle()
				plain, _, err := e.fetchMessages(ctx, f)
				if err != nil {
					t.Fatal(err)
				}
				// The plain messages are rewritten by the next fetch
				// (the output arena): kept as copies.
				want := map[string][]*nats.Msg{} // by the fleet subject they go to
				for _, m := range plain {
					c := *m
					c.Data = bytes.Clone(m.Data)
					s := containv1.FleetSubject(subjectPartition(m.Subject))
					want[s] = append(want[s], &c)
				}
				// fleetOf is the fetch f enriched again, as fleet batches.
				fleetOf := func() []*nats.Msg {
					t.Helper()
					e.recycle()
					msgs, _, err := e.fetchMessages(ctx, f)
					if err != nil {
						t.Fatal(err)
					}
					fleet, err := e.fleetMessages(msgs)
					if err != nil {
						t.Fatal(err)
					}
					return fleet
				}
				fleet := fleetOf()
				got := map[string][]*nats.Msg{}
				perSubject := map[string]int{}
				var ids []string
				for _, m := range fleet {
					if len(m.Data) > e.payloadLimit() {
						t.Errorf("fleet batch of %d bytes past the limit %d", len(m.Data), e.payloadLimit())
					}
					if !containv1.IsFleetSubject(m.Subject) {
						t.Fatalf("fleet batch on %q", m.Subject)
					}
					if v := m.Header.Get(bus.HeaderSchema); v != "3" {
						t.Errorf("fleet batch header %s = %q, want 3", bus.HeaderSchema, v)
					}
					ids = append(ids, m.Header.Get(jetstream.MsgIDHeader))
					perSubject[m.Subject]++
					parts, err := bus.FleetParts(m.Data, nil)
					if err != nil {
						t.Fatal(err)
					}
					for _, p := range parts {
						b, err := bus.Decode(p)
						if err != nil {
							t.Fatalf("part: %v", err)
						}
						sub := containv1.FleetPartSubject(m.Subject, b.Host)
						if err := bus.CheckHost(sub, b); err != nil {
							t.Errorf("part refused by its consumers: %v", err)
						}
						got[m.Subject] = append(got[m.Subject], &nats.Msg{Subject: sub, Data: p})
					}
				}
				if len(got) != len(want) {
					t.Fatalf("fleet subjects %v, want %v", slices.Sorted(keys(got)), slices.Sorted(keys(want)))
				}
				for s, w := range want {
					g := got[s]
					if len(g) != len(w) {
						t.Fatalf("%s: %d parts, want the %d messages", s, len(g), len(w))
					}
					for i := range w {
						if g[i].Subject != w[i].Subject || !bytes.Equal(g[i].Data, w[i].Data) {
							t.Fatalf("%s: part %d is not message %d (%s, %d bytes; want %s, %d bytes)", s, i, i, g[i].Subject, len(g[i].Data), w[i].Subject, len(w[i].Data))
						}
					}
				}
				split := false
				for s, w := range want {
					total := 0
					for _, m := range w {
						total += bus.FleetPartSize(m.Data)
					}
					if total > e.payloadLimit() {
						split = true
						if perSubject[s] < 2 {
							t.Errorf("%s: %d bytes of parts in one fleet batch, past the limit %d", s, total, e.payloadLimit())
						}
					}
				}
				if limit > 0 && router == nil && !split {
					t.Error("no fleet batch had to be split under the small limit")
				}
				var ids2 []string
				for _, m := range fleetOf() {
					ids2 = append(ids2, m.Header.Get(jetstream.MsgIDHeader))
				}
				if !slices.Equal(ids, ids2) || len(slices.Compact(slices.Sorted(slices.Values(ids)))) != len(ids) {
					t.Errorf("fleet message ids %v, then %v: want the same, distinct", ids, ids2)
				}
			})
		}
	}
}

func keys[K comparable, V any](m map[K]V) func(func(K) bool) {
	return func(yield func(K) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}
