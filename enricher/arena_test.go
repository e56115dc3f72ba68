package enricher

import (
	"bytes"
	"context"
	"math/rand/v2"
	"testing"
	"time"
	"unsafe"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/containsec/contain/analyzer"
	"github.com/containsec/contain/internal/bus"
	"github.com/containsec/contain/internal/testenv"
	"github.com/containsec/contain/schemas/containv1"
)

// TestWireArena: the output messages of one fetch are disjoint, none
// can grow into another; a fetch does not write over the last one's
// messages unless they were recycled (published), and then it writes
// into the recycled chunk.
func TestWireArena(t *testing.T) {
	e := wireTestEnricher(memKV{}, analyzer.NewRouter(analyzer.Config{GroupBy: analyzer.GroupByDigest, Partitions: 3}), 0)
	ctx := context.Background()
	r := rand.New(rand.NewPCG(5, 6))
	subject := containv1.RawSubject("h1")
	fetch := func(min int) []*nats.Msg {
		t.Helper()
		for range 100 {
			data, err := bus.Encode(randomBatch(r, false, true, 60, 300))
			if err != nil {
				t.Fatal(err)
			}
			msgs, _, err := e.fetchMessages(ctx, &oneFetch{subject: subject, data: data})
			if err != nil {
				t.Fatal(err)
			}
			if len(msgs) >= min {
				return msgs
			}
		}
		t.Fatalf("no batch made %d messages", min)
		return nil
	}
	a := fetch(2)
	type span struct{ lo, hi uintptr }
	var spans []span
	var kept [][]byte
	for i, m := range a {
		if cap(m.Data) != len(m.Data) {
			t.Fatalf("message %d: %d bytes of capacity %d: appending to it writes over the next", i, len(m.Data), cap(m.Data))
		}
		lo := uintptr(unsafe.Pointer(unsafe.SliceData(m.Data)))
		s := span{lo, lo + uintptr(len(m.Data))}
		for j, o := range spans {
			if s.lo < o.hi && o.lo < s.hi {
				t.Fatalf("messages %d and %d share bytes", j, i)
			}
		}
		spans = append(spans, s)
		kept = append(kept, bytes.Clone(m.Data))
	}
	b := fetch(1) // not recycled: a's messages stay
	for i, m := range a {
		if !bytes.Equal(m.Data, kept[i]) {
			t.Fatalf("message %d of the first fetch changed by the second", i)
		}
	}
	e.recycle()
	chunk := e.scratch.free
	if len(chunk) == 0 || unsafe.SliceData(chunk) != unsafe.SliceData(b[0].Data) {
		t.Fatal("recycle did not keep the second fetch's chunk")
	}
	c := fetch(1)
	if unsafe.SliceData(c[0].Data) != unsafe.SliceData(chunk) {
		t.Error("the fetch after recycle did not write into the recycled chunk")
	}
	if _, err := bus.Decode(c[0].Data); err != nil {
		t.Fatalf("the recycled chunk's message: %v", err)
	}
}

// TestWireArenaPublished: on a real server, the messages of fetches
// written one after another into one recycled chunk are stored as they
// were when published (the client copies them), and each publish lets
// the next fetch recycle.
func TestWireArenaPublished(t *testing.T) {
	_, _, js := testenv.NATS(t)
	e := wireTestEnricher(memKV{}, analyzer.NewRouter(analyzer.Config{GroupBy: analyzer.GroupByDigest, Partitions: 3}), 0)
	e.js = js
	ctx := context.Background()
	r := rand.New(rand.NewPCG(7, 8))
	want := map[string][]byte{} // Nats-Msg-Id -> bytes published
	var chunk *byte
	for i := range 8 {
		b := randomBatch(r, false, true, 60, 300)
		b.Seq = uint64(i + 1)
		data, err := bus.Encode(b)
		if err != nil {
			t.Fatal(err)
		}
		msgs, _, err := e.fetchMessages(ctx, &oneFetch{subject: containv1.RawSubject("h1"), data: data})
		if err != nil {
			t.Fatal(err)
		}
		if i > 0 && unsafe.SliceData(msgs[0].Data) != chunk {
			t.Fatalf("fetch %d did not write into the recycled chunk", i)
		}
		for _, m := range msgs {
			want[m.Header.Get(jetstream.MsgIDHeader)] = bytes.Clone(m.Data)
		}
		if err := bus.PublishAll(ctx, js, msgs, "enricher"); err != nil {
			t.Fatal(err)
		}
		e.published()
		if chunk = unsafe.SliceData(e.scratch.free); chunk == nil {
			t.Fatalf("fetch %d: nothing recycled after its publish", i)
		}
	}
	cons, err := js.OrderedConsumer(ctx, containv1.StreamEvents, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	for len(want) > 0 {
		batch, err := cons.Fetch(len(want), jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for m := range batch.Messages() {
			n++
			id := m.Headers().Get(jetstream.MsgIDHeader)
			w, ok := want[id]
			if !ok {
				t.Fatalf("stored %s: not published, or twice", id)
			}
			if !bytes.Equal(m.Data(), w) {
				t.Fatalf("stored %s differs from what was published", id)
			}
			delete(want, id)
		}
		if n == 0 {
			t.Fatalf("%d published messages not stored", len(want))
		}
	}
}
