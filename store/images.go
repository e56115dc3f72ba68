package store

import (
	"context"
	"fmt"
	"time"
)

// BaselineRow is one version of a learned baseline (the analyzer's). Items
// are the baseline's entries as parallel slices: ItemKinds[i] ("exec",
// "syscall", "peer", "port", "write", ...), Items[i] (the value) and
// Counts[i] (times seen; may be nil). Doc is the writer's full document.
// Re-inserting the same (ImageDigest, Key, Version) replaces it.
type BaselineRow struct {
	Time         time.Time
	Key          string
	ImageRef     string
	ImageDigest  string
	Version      uint64
	Phase        string
	Observations uint64
	Novelty      float64
	ItemKinds    []string
	Items        []string
	Counts       []uint64
	Source       string
	Doc          string
}

// ImageAuditRow is one audit of an image (the enricher's static checks of
// what an image declares). Findings are parallel slices.
type ImageAuditRow struct {
	Time              time.Time
	ImageRef          string
	ImageDigest       string
	Auditor           string
	Verdict           string
	Score             float64
	FindingCodes      []string
	FindingMessages   []string
	FindingSeverities []string
	Doc               string
}

// DeclarationRow is what an image declares about itself (entrypoint, ports,
// executables, ...), as items: ItemKinds[i] ("entrypoint", "exposed_port",
// "executable", "setuid", ...) and Items[i]. Re-inserting the same
// (ImageDigest, ProfileVersion, Source) replaces it.
type DeclarationRow struct {
	Time           time.Time
	ImageRef       string
	ImageDigest    string
	ProfileVersion string
	Source         string
	User           string
	ItemKinds      []string
	Items          []string
	Doc            string
}

func zeroTime(t time.Time) time.Time {
	if t.IsZero() {
		return time.Now().UTC()
	}
	return t
}

var baselinesTable = &tableDef[*BaselineRow]{name: "baselines", cols: []colDef[*BaselineRow]{
	col("ts", func(r *BaselineRow) time.Time { return zeroTime(r.Time) }),
	col("baseline_key", func(r *BaselineRow) string { return r.Key }),
	col("image_ref", func(r *BaselineRow) string { return r.ImageRef }),
	col("image_digest", func(r *BaselineRow) string { return r.ImageDigest }),
	col("version", func(r *BaselineRow) uint64 { return r.Version }),
	col("phase", func(r *BaselineRow) string { return r.Phase }),
	col("observations", func(r *BaselineRow) uint64 { return r.Observations }),
	col("novelty", func(r *BaselineRow) float64 { return r.Novelty }),
	col("item_kinds", func(r *BaselineRow) []string { return nonNil(r.ItemKinds) }),
	col("items", func(r *BaselineRow) []string { return nonNil(r.Items) }),
	col("counts", func(r *BaselineRow) []uint64 {
		if r.Counts == nil {
			return make([]uint64, len(r.Items))
		}
		return r.Counts
	}),
	col("source", func(r *BaselineRow) string { return r.Source }),
	col("doc", func(r *BaselineRow) string { return r.Doc }),
}}

var imageAuditsTable = &tableDef[*ImageAuditRow]{name: "image_audits", cols: []colDef[*ImageAuditRow]{
	col("ts", func(r *ImageAuditRow) time.Time { return zeroTime(r.Time) }),
	col("image_ref", func(r *ImageAuditRow) string { return r.ImageRef }),
	col("image_digest", func(r *ImageAuditRow) string { return r.ImageDigest }),
	col("auditor", func(r *ImageAuditRow) string { return r.Auditor }),
	col("verdict", func(r *ImageAuditRow) string { return r.Verdict }),
	col("score", func(r *ImageAuditRow) float64 { return r.Score }),
	col("finding_codes", func(r *ImageAuditRow) []string { return nonNil(r.FindingCodes) }),
	col("finding_messages", func(r *ImageAuditRow) []string { return nonNil(r.FindingMessages) }),
	col("finding_severities", func(r *ImageAuditRow) []string { return nonNil(r.FindingSeverities) }),
	col("doc", func(r *ImageAuditRow) string { return r.Doc }),
}}

var declarationsTable = &tableDef[*DeclarationRow]{name: "declarations", cols: []colDef[*DeclarationRow]{
	col("ts", func(r *DeclarationRow) time.Time { return zeroTime(r.Time) }),
	col("image_ref", func(r *DeclarationRow) string { return r.ImageRef }),
	col("image_digest", func(r *DeclarationRow) string { return r.ImageDigest }),
	col("profile_version", func(r *DeclarationRow) string { return r.ProfileVersion }),
	col("source", func(r *DeclarationRow) string { return r.Source }),
	col("user", func(r *DeclarationRow) string { return r.User }),
	col("item_kinds", func(r *DeclarationRow) []string { return nonNil(r.ItemKinds) }),
	col("items", func(r *DeclarationRow) []string { return nonNil(r.Items) }),
	col("doc", func(r *DeclarationRow) string { return r.Doc }),
}}

// InsertBaseline writes baseline versions.
func (s *Store) InsertBaseline(ctx context.Context, rows ...BaselineRow) error {
	for i, r := range rows {
		if len(r.ItemKinds) != len(r.Items) || (r.Counts != nil && len(r.Counts) != len(r.Items)) {
			return fmt.Errorf("store: baseline %d (%s v%d): item_kinds, items and counts differ in length", i, r.Key, r.Version)
		}
	}
	return insertOwned(ctx, s, baselinesTable, rows)
}

// InsertImageAudit writes image audits.
func (s *Store) InsertImageAudit(ctx context.Context, rows ...ImageAuditRow) error {
	for i, r := range rows {
		if len(r.FindingCodes) != len(r.FindingMessages) || len(r.FindingCodes) != len(r.FindingSeverities) {
			return fmt.Errorf("store: image audit %d (%s): finding codes, messages and severities differ in length", i, r.ImageDigest)
		}
	}
	return insertOwned(ctx, s, imageAuditsTable, rows)
}

// InsertDeclaration writes image declarations.
func (s *Store) InsertDeclaration(ctx context.Context, rows ...DeclarationRow) error {
	for i, r := range rows {
		if len(r.ItemKinds) != len(r.Items) {
			return fmt.Errorf("store: declaration %d (%s): item_kinds and items differ in length", i, r.ImageDigest)
		}
	}
	return insertOwned(ctx, s, declarationsTable, rows)
}

func insertOwned[R any](ctx context.Context, s *Store, def *tableDef[*R], rows []R) error {
	if len(rows) == 0 {
		return nil
	}
	if err := s.Migrate(ctx); err != nil {
		return err
	}
	buf := newRowBuf(def, len(rows))
	for i := range rows {
		buf.add(&rows[i])
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.InsertTimeout)
	defer cancel()
	return insertRows(ctx, s.conn, buf, s.cfg.BatchMaxRows, s.addr)
}
