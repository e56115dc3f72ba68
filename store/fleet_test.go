package store

import (
	"context"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/protobuf/proto"

	"github.com/containsec/contain/internal/bus"
	"github.com/containsec/contain/internal/metrics"
	"github.com/containsec/contain/internal/testenv"
	"github.com/containsec/contain/schemas/containv1"
)

// TestRoundTripFleet: a fleet batch (design 036) on the events stream is
// stored as its parts, each as the batch it would have been alone on its
// host's subject: one row per event of each part, with its part's host
// and container (expanded from a part's dictionary). A part not bound to
// its host is refused, its events not stored, while the others are. Rows
// are read from the wire (wire) and from decoded events (store_raw).
func TestRoundTripFleet(t *testing.T) {
	for _, raw := range []bool{false, true} {
		name := "wire"
		if raw {
			name = "store_raw"
		}
		t.Run(name, func(t *testing.T) { roundTripFleet(t, raw) })
	}
}

func roundTripFleet(t *testing.T, storeRaw bool) {
	cfg := testConfig(t)
	cfg.StoreRaw = storeRaw
	s := openStore(t, cfg)
	m := metrics.New()
	_, _, js := testenv.NATS(t)
	runStoreOn(t, s, m, js)
	ctx := context.Background()

	ids := containv1.NewIDGen()
	base := time.Date(2026, 3, 14, 15, 9, 26, 0, time.UTC)
	// part makes host's part: sampleEvents of container cid, moved to host
	// (the liar: its batch says host, its events name about).
	part := func(host, about, cid string, compact bool) (*containv1.Batch, []byte) {
		evs := sampleEvents(ids, cid, base)
		for _, ev := range evs {
			ev.Host = about
		}
		b := bus.NewProducer(host, "enricher").Batch(evs)
		want := proto.Clone(b).(*containv1.Batch)
		if compact {
			b.Compact()
			if len(b.Containers) != 1 {
				t.Fatalf("%s's dictionary has %d containers, want 1", host, len(b.Containers))
			}
		}
		data, err := bus.Encode(b)
		if err != nil {
			t.Fatal(err)
		}
		return want, data
	}
	a, aData := part("host-a", "host-a", "c-fleet-a", true)
	b, bData := part("host-b", "host-b", "c-fleet-b", false)
	_, liarData := part("host-c", "host-d", "c-fleet-liar", false)
	fleet := bus.AppendFleetHeader(nil, "enricher", "p1", 1)
	for _, p := range [][]byte{aData, liarData, bData} {
		fleet = bus.AppendFleetPart(fleet, p)
	}
	if _, err := js.Publish(ctx, containv1.FleetSubject(0), fleet); err != nil {
		t.Fatal(err)
	}

	want := len(a.Events) + len(b.Events)
	testenv.WaitForState(t, 20*time.Second, "both good parts' rows", func() (bool, string) {
		n := queryUintNoFail(s, "SELECT count() FROM events WHERE container_id LIKE 'c-fleet-%'")
		return n == uint64(want), "rows " + itoa(n) + ", want " + itoa(uint64(want))
	})
	testenv.WaitForState(t, 5*time.Second, "the liar's part refused", func() (bool, string) {
		n := testutil.ToFloat64(m.Refused.WithLabelValues(metrics.StageStore, bus.ReasonEventHost))
		return n == 1, "refused{event_host_mismatch} = " + itoa(uint64(n))
	})

	byID := map[uuid.UUID]*containv1.Event{}
	for _, batch := range []*containv1.Batch{a, b} {
		for _, ev := range batch.Events {
			byID[uuid.UUID(ev.Id)] = ev
		}
	}
	kinds := map[containv1.Kind]string{containv1.Kind_KIND_EXEC: "exec", containv1.Kind_KIND_SYSCALL: "syscall",
		containv1.Kind_KIND_NETWORK: "network", containv1.Kind_KIND_FILE: "file", containv1.Kind_KIND_LOSS: "loss",
		containv1.Kind_KIND_CONTAINER: "container", containv1.Kind_KIND_PROCESS: "process"}
	rows, err := s.Conn().Query(ctx, `SELECT event_id, kind, ts, host, container_id, container_name, image_ref, image_digest, profile_ref,
		mono_ns, cgroup_id, batch_stage, raw FROM events WHERE container_id LIKE 'c-fleet-%'`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	n := 0
	for rows.Next() {
		var (
			id                                                        uuid.UUID
			kind, host, cid, name, ref, digest, profile, stage, rawEv string
			ts                                                        time.Time
			mono, cg                                                  uint64
		)
		if err := rows.Scan(&id, &kind, &ts, &host, &cid, &name, &ref, &digest, &profile, &mono, &cg, &stage, &rawEv); err != nil {
			t.Fatal(err)
		}
		n++
		ev := byID[id]
		if ev == nil {
			t.Errorf("row %v (host %s, container %s) is no good part's event", id, host, cid)
			continue
		}
		delete(byID, id)
		if kind != kinds[ev.Kind] || !ts.Equal(time.Unix(0, ev.WallNs).Truncate(time.Second)) || host != ev.Host || cid != ev.ContainerId ||
			name != ev.ContainerName || ref != ev.ImageRef || digest != ev.ImageDigest || profile != ev.ProfileRef || mono != ev.MonoNs ||
			cg != ev.CgroupId || stage != "enricher" {
			t.Errorf("row %v: kind=%s ts=%v host=%s container=%s name=%s ref=%s digest=%s profile=%s mono=%d cg=%d stage=%s; want the event %v",
				id, kind, ts, host, cid, name, ref, digest, profile, mono, cg, stage, ev)
		}
		if !storeRaw {
			if rawEv != "" {
				t.Errorf("row %v: raw kept without store_raw", id)
			}
			continue
		}
		var got containv1.Event
		if err := proto.Unmarshal([]byte(rawEv), &got); err != nil || !proto.Equal(&got, ev) {
			t.Errorf("row %v: raw %v (%v), want %v", id, &got, err, ev)
		}
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if n != want || len(byID) != 0 {
		t.Errorf("%d rows, want %d; %d events not stored", n, want, len(byID))
	}
	for _, host := range []string{"host-a", "host-b"} {
		if got := queryUint(t, s, "SELECT count() FROM events WHERE container_id LIKE 'c-fleet-%' AND host = ?", host); got != uint64(len(a.Events)) {
			t.Errorf("%d rows of %s, want %d", got, host, len(a.Events))
		}
	}
	if got := testutil.ToFloat64(m.Malformed.WithLabelValues(metrics.StageStore)); got != 0 {
		t.Errorf("malformed %v, want 0", got)
	}
}
