package store

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/containsec/contain/internal/bus"
	"github.com/containsec/contain/internal/metrics"
	"github.com/containsec/contain/internal/testenv"
	"github.com/containsec/contain/schemas/containv1"
)

// TestCommitLineage: KIND_COMMIT events through the store stage make
// commits rows; the lineage queries find an image two commits away from
// its container, and the images of a container that had an alert.
func TestCommitLineage(t *testing.T) {
	cfg := testConfig(t)
	s := openStore(t, cfg)
	_, _, js := testenv.NATS(t)
	runStoreOn(t, s, metrics.New(), js)
	ctx := context.Background()
	ids := containv1.NewIDGen()
	at := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	commit := func(i int, ctr, srcImage, img string, lineage ...string) *containv1.Event {
		return &containv1.Event{Id: ids.Next(), Host: "h", ContainerId: ctr, ContainerName: ctr + "-name", WallNs: at.Add(time.Duration(i) * time.Second).UnixNano(),
			Kind: containv1.Kind_KIND_COMMIT, SchemaVersion: containv1.SchemaVersion,
			Body: &containv1.Event_Commit{Commit: &containv1.Commit{Engine: "docker", SourceContainerId: ctr, SourceImageId: srcImage,
				ImageId: img, ImageRef: img + ":tag", FilesAdded: uint32(i), Paths: []string{"A /x"}, Lineage: lineage}}}
	}
	// ctr-a (image base) → img1; ctr-b runs img1 → img2; ctr-c (other) → img3.
	evs := []*containv1.Event{
		commit(1, "ctr-a", "sha256:base", "sha256:img1", "sha256:base"),
		commit(2, "ctr-b", "sha256:img1", "sha256:img2", "sha256:img1", "sha256:base"),
		commit(3, "ctr-c", "sha256:other", "sha256:img3", "sha256:other"),
	}
	alert := &containv1.Event{Id: ids.Next(), Host: "h", ContainerId: "ctr-b", WallNs: at.Add(5 * time.Second).UnixNano(), Kind: containv1.Kind_KIND_ALERT,
		Body: &containv1.Event_Alert{Alert: &containv1.Alert{Score: 0.7, Rule: "commit", Reasons: []*containv1.Reason{{Code: "commit.unallowed", Score: 0.7}}}}}
	p := bus.NewProducer("h", "test")
	// The commits twice: a redelivery adds no row to what the queries return.
	for range 2 {
		if err := bus.Publish(ctx, js, containv1.EventsSubject("h"), p.Batch(evs)); err != nil {
			t.Fatal(err)
		}
	}
	if err := bus.Publish(ctx, js, containv1.AlertsSubject("h"), p.Batch([]*containv1.Event{alert})); err != nil {
		t.Fatal(err)
	}
	testenv.WaitForState(t, 20*time.Second, "commit rows and the alert", func() (bool, string) {
		c := queryUintNoFail(s, "SELECT uniqExact(event_id) FROM commits")
		a := queryUintNoFail(s, "SELECT count() FROM alerts WHERE container_id = 'ctr-b'")
		return c == 3 && a == 1, "commits " + itoa(c) + " alerts " + itoa(a)
	})
	var (
		lineage []string
		paths   []string
		added   uint32
	)
	if err := s.Conn().QueryRow(ctx, "SELECT lineage, paths, files_added FROM commits WHERE image_id = 'sha256:img2' LIMIT 1").Scan(&lineage, &paths, &added); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(lineage, []string{"sha256:img1", "sha256:base"}) || !slices.Equal(paths, []string{"A /x"}) || added != 2 {
		t.Errorf("img2 row: lineage %q paths %q added %d", lineage, paths, added)
	}

	rows, err := s.Conn().Query(ctx, QueryImagesFromContainer, "ctr-a", "ctr-a")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for rows.Next() {
		var id, ref string
		if err := rows.Scan(&id, &ref); err != nil {
			t.Fatal(err)
		}
		got = append(got, id)
	}
	rows.Close()
	if !slices.Equal(got, []string{"sha256:img1", "sha256:img2"}) {
		t.Errorf("images descended from ctr-a: %q, want img1 and img2", got)
	}

	rows, err = s.Conn().Query(ctx, QueryImagesFromAlertedContainers, 0.5)
	if err != nil {
		t.Fatal(err)
	}
	got = got[:0]
	for rows.Next() {
		var (
			id, ref, src string
			n            uint64
			top          float64
		)
		if err := rows.Scan(&id, &ref, &src, &n, &top); err != nil {
			t.Fatal(err)
		}
		if src != "ctr-b" || n != 1 || top != 0.7 {
			t.Errorf("alerted row: %s from %s, %d alerts top %v", id, src, n, top)
		}
		got = append(got, id)
	}
	rows.Close()
	if !slices.Equal(got, []string{"sha256:img2"}) {
		t.Errorf("images from alerted containers: %q, want img2", got)
	}
}
