package enricher

import (
	"context"
	"maps"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/containsec/contain/internal/bus"
	"github.com/containsec/contain/internal/metrics"
	"github.com/containsec/contain/internal/testenv"
	"github.com/containsec/contain/schemas/containv1"
)

const testDigest = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

// startEnricher runs an enricher until the returned stop is called.
func startEnricher(t *testing.T, cfg Config, js jetstream.JetStream, m *metrics.Metrics) (stop func()) {
	t.Helper()
	e, err := New(cfg, js, m, testenv.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	return testenv.Go(t, 10*time.Second, e.Run)
}

// eventsReader reads CONTAIN_EVENTS from the start, in order.
type eventsReader struct {
	t    *testing.T
	cons jetstream.Consumer
}

func newEventsReader(t *testing.T, js jetstream.JetStream) *eventsReader {
	t.Helper()
	cons, err := js.OrderedConsumer(context.Background(), containv1.StreamEvents, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	return &eventsReader{t: t, cons: cons}
}

// next returns the next n batches, failing after 10s.
func (r *eventsReader) next(n int) []*containv1.Batch {
	r.t.Helper()
	var out []*containv1.Batch
	deadline := time.Now().Add(10 * time.Second)
	for len(out) < n && time.Now().Before(deadline) {
		msgs, err := r.cons.Fetch(n-len(out), jetstream.FetchMaxWait(200*time.Millisecond))
		if err != nil {
			r.t.Fatal(err)
		}
		for msg := range msgs.Messages() {
			// A fleet batch (enricher.fleet_batches, the default) is
			// read as its parts, each with the subject it stands for.
			parts := [][]byte{msg.Data()}
			fleet := bus.IsFleet(msg.Data())
			if fleet {
				if msg.Subject() != containv1.FleetSubject(-1) {
					r.t.Errorf("fleet batch on %q, want %q", msg.Subject(), containv1.FleetSubject(-1))
				}
				if parts, err = bus.FleetParts(msg.Data(), nil); err != nil {
					r.t.Fatalf("output fleet batch: %v", err)
				}
			}
			for _, part := range parts {
				b, err := bus.Decode(part)
				if err != nil {
					r.t.Fatalf("output batch: %v", err)
				}
				subject := msg.Subject()
				if fleet {
					subject = containv1.FleetPartSubject(subject, b.Host)
				}
				if want := containv1.EventsSubject("h1"); subject != want && subject != containv1.EventsSubject("h2") {
					r.t.Errorf("output subject %q, want %q", subject, want)
				}
				out = append(out, b)
			}
		}
	}
	if len(out) < n {
		r.t.Fatalf("got %d output batches after 10s, want %d", len(out), n)
	}
	return out
}

func containerEvent(host, id string, labels map[string]string) *containv1.Event {
	return &containv1.Event{
		Host: host, ContainerId: id, ContainerName: id + "-name", Kind: containv1.Kind_KIND_CONTAINER,
		SchemaVersion: containv1.SchemaVersion,
		Body:          &containv1.Event_Container{Container: &containv1.ContainerInfo{Runtime: "runc", Labels: maps.Clone(labels)}},
	}
}

func execEvent(host, id string, mono uint64) *containv1.Event {
	return &containv1.Event{
		Host: host, ContainerId: id, Kind: containv1.Kind_KIND_EXEC, MonoNs: mono,
		SchemaVersion: containv1.SchemaVersion,
		Body:          &containv1.Event_Exec{Exec: &containv1.Exec{Filename: "/bin/sh", Argv: []string{"sh"}}},
	}
}

func publishRaw(t *testing.T, js jetstream.JetStream, p *bus.Producer, events ...*containv1.Event) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := bus.Publish(ctx, js, containv1.RawSubject(p.Host), p.Batch(events)); err != nil {
		t.Fatal(err)
	}
}

func testConfig() Config {
	cfg := DefaultConfig()
	cfg.Workers = 0
	cfg.FetchWait = 50 * time.Millisecond
	return cfg
}

// TestEnrichSlice is the acceptance test of the end-to-end slice: image
// ref and digest from a container event's OCI annotations land on every
// event of that container, in order; unknown containers and host events
// pass through; a malformed message is counted; a restarted enricher still
// knows the container.
func TestEnrichSlice(t *testing.T) {
	_, nc, js := testenv.NATS(t)
	m := metrics.New()
	stop := startEnricher(t, testConfig(), js, m)
	out := newEventsReader(t, js)
	p := bus.NewProducer("h1", metrics.StageCollector)

	labels := map[string]string{
		"org.opencontainers.image.ref.name": "registry.local/shop/web:1.2",
		"io.contain.image.digest":           testDigest,
		"unrelated":                         "x",
	}
	publishRaw(t, js, p,
		containerEvent("h1", "c1", labels),
		execEvent("h1", "c1", 1),
		execEvent("h1", "unknown", 2),
		execEvent("h1", "c1", 3),
		&containv1.Event{Host: "h1", Kind: containv1.Kind_KIND_EXEC, MonoNs: 4, SchemaVersion: 1}, // host process
	)
	if _, err := js.Publish(context.Background(), containv1.RawSubject("h1"), []byte("\xff\x00not a batch")); err != nil {
		t.Fatal(err)
	}
	publishRaw(t, js, p, execEvent("h1", "c1", 5), execEvent("h1", "c1", 6))

	got := out.next(2)
	if got[0].Stage != metrics.StageEnricher || got[0].Host != "h1" {
		t.Errorf("output batch stage %q host %q", got[0].Stage, got[0].Host)
	}
	var mono []uint64
	for _, b := range got {
		for _, ev := range b.Events {
			mono = append(mono, ev.MonoNs)
			switch ev.ContainerId {
			case "c1":
				if ev.ImageRef != "registry.local/shop/web:1.2" || ev.ImageDigest != testDigest {
					t.Errorf("event %d of c1: image %q digest %q", ev.MonoNs, ev.ImageRef, ev.ImageDigest)
				}
				if ev.ContainerName != "c1-name" {
					t.Errorf("event %d of c1: name %q", ev.MonoNs, ev.ContainerName)
				}
			default:
				if ev.ImageRef != "" || ev.ImageDigest != "" {
					t.Errorf("event %d of %q enriched: %q %q", ev.MonoNs, ev.ContainerId, ev.ImageRef, ev.ImageDigest)
				}
			}
		}
	}
	if want := []uint64{0, 1, 2, 3, 4, 5, 6}; !equal(mono, want) {
		t.Errorf("events out of order or lost: mono %v, want %v", mono, want)
	}
	testenv.WaitFor(t, 10*time.Second, "malformed counted", func() bool { return testutil.ToFloat64(m.Malformed.WithLabelValues(metrics.StageEnricher)) == 1 })
	if n := testutil.ToFloat64(newEnricherMetrics(m).unknown); n != 1 {
		t.Errorf("unknown_container events %v, want 1", n)
	}

	// Restart: a new instance with new metrics on the same NATS.
	stop()
	m2 := metrics.New()
	startEnricher(t, testConfig(), js, m2)
	publishRaw(t, js, p, execEvent("h1", "c1", 7))
	got = out.next(1)
	if ev := got[0].Events[0]; ev.ImageRef != "registry.local/shop/web:1.2" || ev.ImageDigest != testDigest {
		t.Errorf("after restart: image %q digest %q", ev.ImageRef, ev.ImageDigest)
	}
	testenv.WaitFor(t, 10*time.Second, "restarted enricher counts its event", func() bool {
		return testutil.ToFloat64(m2.EventsOut.WithLabelValues(metrics.StageEnricher)) >= 1
	})
	if n := testutil.ToFloat64(m2.EventsOut.WithLabelValues(metrics.StageEnricher)); n != 1 {
		t.Errorf("restarted enricher passed %v events, want 1 (old batches redelivered?)", n)
	}
	_ = nc
}

func equal(a, b []uint64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
