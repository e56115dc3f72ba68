package store

import (
	"context"
	"encoding/json"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/containsec/contain/analyzer"
	"github.com/containsec/contain/enricher"
	"github.com/containsec/contain/internal/bus"
	"github.com/containsec/contain/internal/imagecfg"
	"github.com/containsec/contain/internal/metrics"
	"github.com/containsec/contain/schemas/containv1"
)

// socAlertID is the alert id the examples in docs/forensics.md use.
const socAlertID = "00000000-0000-8000-8000-00000000a1e7"

var sqlBlock = regexp.MustCompile("(?s)```sql\n(.*?)```")

// forensicsDoc holds the ready queries, relative to this package.
const forensicsDoc = "../docs/forensics.md"

// TestForensicsQueries runs every sql block of docs/forensics.md against a database
// holding one container's events, an alert and a pause, and checks that
// the queries about that container, image and alert find rows.
func TestForensicsQueries(t *testing.T) {
	doc, err := os.ReadFile(forensicsDoc)
	if err != nil {
		t.Fatal(err)
	}
	blocks := sqlBlock.FindAllStringSubmatch(string(doc), -1)
	if len(blocks) < 20 {
		t.Fatalf("found %d sql blocks in %s, want >= 20", len(blocks), forensicsDoc)
	}

	s := openStore(t, testConfig(t))
	ctx := context.Background()
	ids := containv1.NewIDGen()
	evs := sampleEvents(ids, "c-soc-1", time.Now().Add(-5*time.Minute))
	evs[5].GetContainer().Labels["app"] = "web"
	aid := uuid.MustParse(socAlertID)
	alert := &containv1.Event{Id: aid[:], Host: "host-a", ContainerId: "c-soc-1", ContainerName: "web-1",
		ImageRef: "docker.io/library/nginx:1.27", WallNs: time.Now().Add(-4 * time.Minute).UnixNano(),
		Body: &containv1.Event_Alert{Alert: &containv1.Alert{Score: 0.95, Rule: "baseline.deviation", Priority: "Critical",
			Reasons:     []*containv1.Reason{{Code: "network.unseen_peer", Message: "connect to 10.1.2.3:4444", Score: 0.95, Mitre: []string{"T1071"}}},
			EvidenceIds: [][]byte{evs[2].Id}, Trigger: evs[2], IncidentId: aid[:],
			Pod: "web-7d4b9c8f6d-x2x9q", Namespace: "shop", Labels: map[string]string{"app": "web"}}}}
	action := &containv1.Event{Id: ids.Next(), Host: "host-a", ContainerId: "c-soc-1", ContainerName: "web-1",
		ImageRef: "docker.io/library/nginx:1.27", WallNs: time.Now().Add(-4 * time.Minute).UnixNano(),
		Body: &containv1.Event_Action{Action: &containv1.Action{Type: containv1.Action_TYPE_PAUSE, Result: containv1.Action_RESULT_OK,
			AlertId: aid[:], Score: 0.95, LatencyNs: 3_000_000}}}
	all := append(append([]*containv1.Event{}, evs...), alert, action)
	if err := s.handle(ctx, s.bufs(), decoded([]*containv1.Batch{bus.NewProducer("host-a", "test").Batch(all)}), metrics.New()); err != nil {
		t.Fatal(err)
	}
	insertImageHistory(t, s)
	// Two commits: web-1 (c-soc-1) committed as web:patched, and a
	// container of web:patched committed again.
	now := time.Now().UTC().Truncate(time.Second)
	if err := s.InsertCommits(ctx,
		CommitRow{Time: now.Add(-3 * time.Minute), EventID: uuid.New(), Host: "host-a", Engine: "docker", SourceContainerID: "c-soc-1",
			SourceContainerName: "web-1", SourceImageRef: "docker.io/library/nginx:1.27", SourceImageID: "sha256:base",
			ImageID: "sha256:img1", ImageRef: "registry.local/web:patched", Author: "ops", Actor: "uid 0",
			FilesAdded: 2, FilesChanged: 1, Paths: []string{"/usr/local/bin/x", "/etc/nginx/nginx.conf"}, Lineage: []string{"sha256:base"}},
		CommitRow{Time: now.Add(-2 * time.Minute), EventID: uuid.New(), Host: "host-a", Engine: "podman", SourceContainerID: "c-soc-2",
			SourceContainerName: "web-2", SourceImageRef: "registry.local/web:patched", SourceImageID: "sha256:img1",
			ImageID: "sha256:img2", ImageRef: "registry.local/web:patched2", Lineage: []string{"sha256:img1", "sha256:base"}},
	); err != nil {
		t.Fatal(err)
	}

	for _, b := range blocks {
		for _, q := range strings.Split(b[1], ";\n") {
			q = strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(q), ";"))
			if q == "" {
				continue
			}
			title := strings.SplitN(q, "\n", 2)[0]
			if !strings.HasPrefix(q, "SELECT") {
				if err := s.Conn().Exec(ctx, q); err != nil {
					t.Errorf("statement %q: %v", q, err)
				}
				continue
			}
			rows, err := s.Conn().Query(ctx, q)
			if err != nil {
				t.Errorf("query %q: %v", q, err)
				continue
			}
			n := 0
			for rows.Next() {
				n++
			}
			if err := rows.Err(); err != nil {
				t.Errorf("query %q: %v", q, err)
			}
			rows.Close()
			if n == 0 {
				t.Errorf("query found no rows in the sample data: %s", q)
			}
			t.Logf("%d rows: %s", n, title)
		}
	}
	if n := queryUint(t, s, "SELECT sum(events) FROM events_per_minute WHERE container_id = 'c-soc-1'"); n != uint64(len(evs)) {
		t.Errorf("events_per_minute after the rebuild: %d, want %d", n, len(evs))
	}
}

// insertImageHistory stores, through the KV row decoders, an image
// declaration, two versions of its declared profile and two baseline
// versions, the second having learned an executable the image does not
// ship and a new peer.
func insertImageHistory(t *testing.T, s *Store) {
	t.Helper()
	ctx := context.Background()
	at := time.Now().UTC().Add(-time.Hour).Truncate(time.Second)
	decl := sampleDecl("/usr/sbin/nginx")
	raw, _ := json.Marshal(decl)
	img, err := imageRow(enricher.DigestKey(decl.Digest), raw, at)
	if err != nil {
		t.Fatal(err)
	}
	var decls []DeclarationRow
	decls = append(decls, img)
	for i, d := range []*imagecfg.Declaration{decl, sampleDecl("/usr/local/bin/web")} {
		p := enricher.DeriveProfile(d, nil, nil, "")
		praw, _ := json.Marshal(p)
		r, err := profileRow(enricher.ProfileKey(p.ImageDigest, p.Version), praw, at.Add(time.Duration(i)*time.Minute))
		if err != nil {
			t.Fatal(err)
		}
		decls = append(decls, r)
	}
	if err := s.InsertDeclaration(ctx, decls...); err != nil {
		t.Fatal(err)
	}
	v2 := sampleDoc(2, "converged")
	v2.Executables["/tmp/.x"] = 1
	v2.Peers["203.0.113.9:4444"] = 1
	var rows []BaselineRow
	for i, d := range []*analyzer.Doc{sampleDoc(1, "learning"), v2} {
		raw, err := analyzer.MarshalJSONDoc(d)
		if err != nil {
			t.Fatal(err)
		}
		r, err := baselineRow(raw, at.Add(time.Duration(i)*time.Minute))
		if err != nil {
			t.Fatal(err)
		}
		rows = append(rows, r)
	}
	if err := s.InsertBaseline(ctx, rows...); err != nil {
		t.Fatal(err)
	}
}
