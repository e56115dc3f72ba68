package responder

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/containsec/contain/internal/bus"
	"github.com/containsec/contain/internal/metrics"
	"github.com/containsec/contain/internal/testenv"
	"github.com/containsec/contain/schemas/containv1"
)

// An alert delivered again — its acknowledgement lost with a NATS node,
// or raised again under the same id by the analyzer instance that took its
// partition over — is answered once: a dry-run responder publishes one
// action for it, before and after a restart, and counts the duplicates.
func TestRedeliveredAlertAnsweredOnce(t *testing.T) {
	_, nc, js := testenv.NATS(t)
	dry := func(c *Config) { c.DryRun = true; c.Snapshot = false }
	h := startOn(t, nc, js, dry)
	al := h.alert("dup-1", 0.95)
	h.publish(al)
	wantAction(t, h.nextFor(al), containv1.Action_TYPE_PAUSE, containv1.Action_RESULT_DRY_RUN, "dup-1")

	// Delivered again (another batch: JetStream's de-duplication does not
	// apply), then twice in one batch with another alert.
	h.publish(al)
	other := h.alert("dup-2", 0.95)
	h.publish(al, other, al)
	if a := h.nextFor(other); string(a.GetAction().GetAlertId()) != string(other.Id) {
		t.Fatalf("next action answers %x", a.GetAction().GetAlertId())
	}
	dups := func(h *harness) float64 {
		return testutil.ToFloat64(h.m.Dropped.WithLabelValues(metrics.StageResponder, reasonDuplicateAlert))
	}
	if n := dups(h); n != 3 {
		t.Fatalf("%v duplicates counted, want 3", n)
	}

	// A restarted responder knows from CONTAIN_ACTIONS what it answered.
	h.stop()
	h2 := startOn(t, nc, js, dry)
	h2.publish(al)
	third := h2.alert("dup-3", 0.95)
	h2.publish(third)
	h2.nextFor(third)
	if n := dups(h2); n != 1 {
		t.Fatalf("after a restart: %v duplicates counted, want 1", n)
	}
	if n := actionsFor(t, js, al.Id); n != 1 {
		t.Fatalf("%d actions answer the alert delivered 5 times, want 1", n)
	}
}

// actionsFor counts testHost's actions answering alert id.
func actionsFor(t *testing.T, js jetstream.JetStream, id []byte) int {
	t.Helper()
	cons, err := js.OrderedConsumer(context.Background(), containv1.StreamActions, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{containv1.ActionsSubject(testHost)},
	})
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for {
		msg, err := cons.Next(jetstream.FetchMaxWait(300 * time.Millisecond))
		if err != nil {
			return n
		}
		b, err := bus.Decode(msg.Data())
		if err != nil {
			t.Fatal(err)
		}
		for _, ev := range b.Events {
			if string(ev.GetAction().GetAlertId()) == string(id) {
				n++
			}
		}
	}
}

func TestHandledSetBounded(t *testing.T) {
	h := newHandledSet(4)
	for i := range 6 {
		h.add([]byte{byte(i)})
	}
	for i := range 6 {
		if got, want := h.has([]byte{byte(i)}), i >= 2; got != want {
			t.Errorf("id %d remembered=%v, want %v", i, got, want)
		}
	}
	if len(h.ids) != 4 {
		t.Fatalf("%d ids held, want 4", len(h.ids))
	}
}
