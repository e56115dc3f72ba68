package bus_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/containsec/contain/internal/bus"
	"github.com/containsec/contain/internal/metrics"
	"github.com/containsec/contain/internal/testenv"
	"github.com/containsec/contain/schemas/containv1"
)

// TestBatcherContainerDictionary: with ContainerDictionary a batcher
// publishes a batch whose containers have several events each with a
// container dictionary (header Contain-Schema: 2, fewer bytes), which
// reads back as the events appended; a batch of one event per container
// is published as it was (version 1).
func TestBatcherContainerDictionary(t *testing.T) {
	_, _, js := testenv.NATS(t)
	m := metrics.New()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	b, err := bus.NewBatcher(js, bus.BatcherConfig{
		Subject: containv1.RawSubject("h1"), Stage: metrics.StageCollector, Host: "h1",
		QueueLen: 1000, MaxEvents: 1000, MaxBytes: 1 << 20, FlushInterval: time.Hour, ContainerDictionary: true,
	}, m, testenv.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = b.Run(ctx); close(done) }()
	ids := containv1.NewIDGen()
	id := func(c int) string { return strings.Repeat(fmt.Sprint(c), 64) }
	mk := func(c, i int) *containv1.Event {
		ev := execEvent(ids, id(c), fmt.Sprintf("/bin/x%d", i))
		ev.ContainerName = fmt.Sprintf("web-%d", c)
		return ev
	}
	var want [][]*containv1.Event
	for _, perContainer := range []int{5, 1} {
		var batch []*containv1.Event
		for i := range 3 * perContainer {
			batch = append(batch, mk(i%3, i))
		}
		// What the events are before the batcher owns them.
		var copies []*containv1.Event
		for _, ev := range batch {
			copies = append(copies, proto.Clone(ev).(*containv1.Event))
			b.Append(ev)
		}
		want = append(want, copies)
		b.Flush()
		testenv.WaitFor(t, 5*time.Second, "batch published", func() bool {
			s, err := js.Stream(ctx, containv1.StreamRaw)
			if err != nil {
				return false
			}
			info, err := s.Info(ctx)
			return err == nil && info.State.Msgs == uint64(len(want))
		})
	}
	cancel()
	<-done
	s, err := js.Stream(context.Background(), containv1.StreamRaw)
	if err != nil {
		t.Fatal(err)
	}
	for seq, w := range want {
		msg, err := s.GetMsg(context.Background(), uint64(seq+1))
		if err != nil {
			t.Fatal(err)
		}
		got, err := bus.Decode(msg.Data)
		if err != nil {
			t.Fatal(err)
		}
		plain := len(mustEncode(t, &containv1.Batch{SchemaVersion: 1, Host: got.Host, Stage: got.Stage, ProducerId: got.ProducerId, Seq: got.Seq, Events: w}))
		wantSchema, dict := "1", seq == 0
		if dict {
			wantSchema = "2"
			if len(msg.Data) >= plain {
				t.Errorf("batch %d: %d bytes with a dictionary, %d without", seq, len(msg.Data), plain)
			}
		} else if len(msg.Data) != plain {
			t.Errorf("batch %d (one event per container): %d bytes, want %d as written without a dictionary", seq, len(msg.Data), plain)
		}
		if h := msg.Header.Get(bus.HeaderSchema); h != wantSchema {
			t.Errorf("batch %d: %s %q, want %q", seq, bus.HeaderSchema, h, wantSchema)
		}
		if len(got.Events) != len(w) {
			t.Fatalf("batch %d: %d events, want %d", seq, len(got.Events), len(w))
		}
		for i, ev := range got.Events {
			if ev.ContainerId != w[i].ContainerId || ev.ContainerName != w[i].ContainerName || ev.GetExec().GetFilename() != w[i].GetExec().GetFilename() {
				t.Errorf("batch %d event %d read back %v, want %v", seq, i, ev, w[i])
			}
		}
	}
}

func mustEncode(t *testing.T, b *containv1.Batch) []byte {
	t.Helper()
	data, err := bus.Encode(b)
	if err != nil {
		t.Fatal(err)
	}
	return data
}
