package store

import (
	"context"
	"slices"
	"testing"
	"time"
)

func TestImageTables(t *testing.T) {
	s := openStore(t, testConfig(t))
	ctx := context.Background()
	ts := time.Date(2026, 3, 14, 12, 0, 0, 0, time.UTC)
	b := BaselineRow{Time: ts, Key: "sha256:abc", ImageRef: "nginx:1.27", ImageDigest: "sha256:abc", Version: 7, Phase: "converged",
		Observations: 1234, Novelty: 0.01, ItemKinds: []string{"exec", "exec", "peer"}, Items: []string{"/bin/sh", "/usr/sbin/nginx", "10.0.0.1:53"},
		Counts: []uint64{3, 100, 12}, Source: "analyzer", Doc: `{"v":7}`}
	if err := s.InsertBaseline(ctx, b); err != nil {
		t.Fatal(err)
	}
	b.Time = ts.Add(time.Minute) // the same version again replaces it
	if err := s.InsertBaseline(ctx, b); err != nil {
		t.Fatal(err)
	}
	if n := queryUint(t, s, "SELECT count() FROM baselines FINAL WHERE image_digest = 'sha256:abc' AND version = 7"); n != 1 {
		t.Errorf("baselines FINAL: %d rows, want 1", n)
	}
	var execs []string
	if err := s.Conn().QueryRow(ctx, `SELECT groupArray(item) FROM (SELECT item FROM baselines FINAL
		ARRAY JOIN item_kinds AS kind, items AS item WHERE image_digest = 'sha256:abc' AND kind = 'exec' ORDER BY item)`).Scan(&execs); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(execs, []string{"/bin/sh", "/usr/sbin/nginx"}) {
		t.Errorf("baseline execs %v", execs)
	}
	if err := s.InsertBaseline(ctx, BaselineRow{ItemKinds: []string{"exec"}}); err == nil {
		t.Error("a baseline with unequal item arrays was accepted")
	}

	if err := s.InsertImageAudit(ctx, ImageAuditRow{Time: ts, ImageRef: "nginx:1.27", ImageDigest: "sha256:abc", Auditor: "enricher", Verdict: "warn",
		Score: 0.4, FindingCodes: []string{"setuid", "root_user"}, FindingMessages: []string{"/bin/su is setuid", "runs as root"},
		FindingSeverities: []string{"medium", "low"}}); err != nil {
		t.Fatal(err)
	}
	var sev string
	if err := s.Conn().QueryRow(ctx, `SELECT finding_severities[indexOf(finding_codes, 'setuid')] FROM image_audits WHERE image_digest = 'sha256:abc'`).Scan(&sev); err != nil {
		t.Fatal(err)
	}
	if sev != "medium" {
		t.Errorf("audit severity %q", sev)
	}

	if err := s.InsertDeclaration(ctx, DeclarationRow{Time: ts, ImageRef: "nginx:1.27", ImageDigest: "sha256:abc", ProfileVersion: "3", Source: "oci-config",
		User: "nginx", ItemKinds: []string{"entrypoint", "exposed_port"}, Items: []string{"/docker-entrypoint.sh", "80/tcp"}}); err != nil {
		t.Fatal(err)
	}
	var user string
	var items []string
	if err := s.Conn().QueryRow(ctx, `SELECT user, items FROM declarations WHERE image_digest = 'sha256:abc' AND profile_version = '3'`).Scan(&user, &items); err != nil {
		t.Fatal(err)
	}
	if user != "nginx" || !slices.Equal(items, []string{"/docker-entrypoint.sh", "80/tcp"}) {
		t.Errorf("declaration: %q %v", user, items)
	}
	// Prune leaves the image tables alone.
	if dropped, err := s.Prune(ctx, 24*time.Hour); err != nil || len(dropped) != 0 {
		t.Errorf("prune: %v %v", dropped, err)
	}
}
