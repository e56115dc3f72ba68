package store

import (
	"context"
	"time"

	"github.com/google/uuid"

	"github.com/containsec/contain/schemas/containv1"
)

// Commits and container audits (migration 7, docs/design/016-commits.md).
//
// commits has one row per KIND_COMMIT event: the source container and
// image, the new image, the diff summary and lineage (the new image's
// ancestors, nearest first). A redelivered event replaces its row
// (ReplacingMergeTree on event_id); lineage queries use DISTINCT.
const ddlCommits = `CREATE TABLE IF NOT EXISTS commits (
    ts                    DateTime,
    event_id              UUID,
    host                  String,
    engine                String,
    namespace             String,
    source_container_id   String,
    source_container_name String,
    source_image_ref      String,
    source_image_id       String,
    image_id              String,
    image_digest          String,
    image_ref             String,
    author                String,
    comment               String,
    actor                 String,
    files_added           UInt32,
    files_changed         UInt32,
    files_deleted         UInt32,
    paths                 Array(String),
    paths_truncated       UInt8,
    lineage               Array(String),
    inserted_at           DateTime DEFAULT now()
) ENGINE = ReplacingMergeTree()
ORDER BY (source_container_id, image_id, event_id)`

// container_audits has one row per container per audit (contain audit
// --running --policy ...): what the engine says of its root filesystem,
// mounts and user, and the policy's verdict.
const ddlContainerAudits = `CREATE TABLE IF NOT EXISTS container_audits (
    ts               DateTime,
    host             String,
    engine           String,
    container_id     String,
    container_name   String,
    image_ref        String,
    image_id         String,
    policy           String,
    verdict          String,
    read_only_rootfs UInt8,
    runs_as_root     UInt8,
    writable_mounts  Array(String),
    finding_codes    Array(String),
    finding_messages Array(String),
    auditor          String,
    inserted_at      DateTime DEFAULT now()
) ENGINE = ReplacingMergeTree()
ORDER BY (host, container_id, policy, ts)`

// CommitRow is one commit (a KIND_COMMIT event).
type CommitRow struct {
	Time                time.Time
	EventID             uuid.UUID
	Host                string
	Engine              string
	Namespace           string
	SourceContainerID   string
	SourceContainerName string
	SourceImageRef      string
	SourceImageID       string
	ImageID             string
	ImageDigest         string
	ImageRef            string
	Author              string
	Comment             string
	Actor               string
	FilesAdded          uint32
	FilesChanged        uint32
	FilesDeleted        uint32
	Paths               []string
	PathsTruncated      bool
	Lineage             []string
}

// CommitRowOf reads ev's commit; ok is false when ev carries none.
func CommitRowOf(ev *containv1.Event) (CommitRow, bool) {
	c := ev.GetCommit()
	if c == nil {
		return CommitRow{}, false
	}
	r := CommitRow{
		Host: ev.GetHost(), Engine: c.Engine, Namespace: c.Namespace,
		SourceContainerID: c.SourceContainerId, SourceContainerName: c.SourceContainerName,
		SourceImageRef: c.SourceImageRef, SourceImageID: c.SourceImageId,
		ImageID: c.ImageId, ImageDigest: c.ImageDigest, ImageRef: c.ImageRef,
		Author: c.Author, Comment: c.Comment, Actor: c.Actor,
		FilesAdded: c.FilesAdded, FilesChanged: c.FilesChanged, FilesDeleted: c.FilesDeleted,
		Paths: c.Paths, PathsTruncated: c.PathsTruncated, Lineage: c.Lineage,
	}
	if r.SourceContainerID == "" {
		r.SourceContainerID = ev.GetContainerId()
	}
	if r.SourceContainerName == "" {
		r.SourceContainerName = ev.GetContainerName()
	}
	if id := ev.GetId(); len(id) == 16 {
		r.EventID = uuid.UUID(id)
	}
	r.Time, _ = wallTime(ev.GetWallNs(), time.Now())
	return r, true
}

var commitsTable = &tableDef[*CommitRow]{name: "commits", cols: []colDef[*CommitRow]{
	col("ts", func(r *CommitRow) time.Time { return zeroTime(r.Time) }),
	col("event_id", func(r *CommitRow) uuid.UUID { return r.EventID }),
	col("host", func(r *CommitRow) string { return r.Host }),
	col("engine", func(r *CommitRow) string { return r.Engine }),
	col("namespace", func(r *CommitRow) string { return r.Namespace }),
	col("source_container_id", func(r *CommitRow) string { return r.SourceContainerID }),
	col("source_container_name", func(r *CommitRow) string { return r.SourceContainerName }),
	col("source_image_ref", func(r *CommitRow) string { return r.SourceImageRef }),
	col("source_image_id", func(r *CommitRow) string { return r.SourceImageID }),
	col("image_id", func(r *CommitRow) string { return r.ImageID }),
	col("image_digest", func(r *CommitRow) string { return r.ImageDigest }),
	col("image_ref", func(r *CommitRow) string { return r.ImageRef }),
	col("author", func(r *CommitRow) string { return r.Author }),
	col("comment", func(r *CommitRow) string { return r.Comment }),
	col("actor", func(r *CommitRow) string { return r.Actor }),
	col("files_added", func(r *CommitRow) uint32 { return r.FilesAdded }),
	col("files_changed", func(r *CommitRow) uint32 { return r.FilesChanged }),
	col("files_deleted", func(r *CommitRow) uint32 { return r.FilesDeleted }),
	col("paths", func(r *CommitRow) []string { return nonNil(r.Paths) }),
	col("paths_truncated", func(r *CommitRow) uint8 { return b2u(r.PathsTruncated) }),
	col("lineage", func(r *CommitRow) []string { return nonNil(r.Lineage) }),
}}

// ContainerAuditRow is one container's audit against a policy.
type ContainerAuditRow struct {
	Time            time.Time
	Host            string
	Engine          string
	ContainerID     string
	ContainerName   string
	ImageRef        string
	ImageID         string
	Policy          string
	Verdict         string // pass, fail
	ReadOnlyRootfs  bool
	RunsAsRoot      bool
	WritableMounts  []string
	FindingCodes    []string
	FindingMessages []string
	Auditor         string
}

var containerAuditsTable = &tableDef[*ContainerAuditRow]{name: "container_audits", cols: []colDef[*ContainerAuditRow]{
	col("ts", func(r *ContainerAuditRow) time.Time { return zeroTime(r.Time) }),
	col("host", func(r *ContainerAuditRow) string { return r.Host }),
	col("engine", func(r *ContainerAuditRow) string { return r.Engine }),
	col("container_id", func(r *ContainerAuditRow) string { return r.ContainerID }),
	col("container_name", func(r *ContainerAuditRow) string { return r.ContainerName }),
	col("image_ref", func(r *ContainerAuditRow) string { return r.ImageRef }),
	col("image_id", func(r *ContainerAuditRow) string { return r.ImageID }),
	col("policy", func(r *ContainerAuditRow) string { return r.Policy }),
	col("verdict", func(r *ContainerAuditRow) string { return r.Verdict }),
	col("read_only_rootfs", func(r *ContainerAuditRow) uint8 { return b2u(r.ReadOnlyRootfs) }),
	col("runs_as_root", func(r *ContainerAuditRow) uint8 { return b2u(r.RunsAsRoot) }),
	col("writable_mounts", func(r *ContainerAuditRow) []string { return nonNil(r.WritableMounts) }),
	col("finding_codes", func(r *ContainerAuditRow) []string { return nonNil(r.FindingCodes) }),
	col("finding_messages", func(r *ContainerAuditRow) []string { return nonNil(r.FindingMessages) }),
	col("auditor", func(r *ContainerAuditRow) string { return r.Auditor }),
}}

// InsertCommits writes commits.
func (s *Store) InsertCommits(ctx context.Context, rows ...CommitRow) error {
	return insertOwned(ctx, s, commitsTable, rows)
}

// InsertContainerAudits writes container audits.
func (s *Store) InsertContainerAudits(ctx context.Context, rows ...ContainerAuditRow) error {
	return insertOwned(ctx, s, containerAuditsTable, rows)
}

// insertCommits writes the commits of a fetch (the store stage's hook: a
// commit is an event row and a commits row).
func (s *Store) insertCommits(ctx context.Context, rows []CommitRow) error {
	if len(rows) == 0 {
		return nil
	}
	buf := newRowBuf(commitsTable, len(rows))
	for i := range rows {
		buf.add(&rows[i])
	}
	return insertRows(ctx, s.conn, buf, s.cfg.BatchMaxRows, s.addr)
}

// Lineage queries (docs/design/016-commits.md), each with one parameter.
const (
	// QueryImagesFromContainer: every image descended from container ?
	// (committed from it, or from a container of an image that was).
	QueryImagesFromContainer = `SELECT DISTINCT image_id, image_ref FROM commits
WHERE image_id != '' AND (source_container_id = ?
   OR hasAny(lineage, (SELECT groupArray(image_id) FROM commits WHERE source_container_id = ? AND image_id != '')))
ORDER BY image_id`
	// QueryImagesFromAlertedContainers: images committed from containers
	// that had an alert at or above score ? (the image, its source, the
	// alerts' count and top score).
	QueryImagesFromAlertedContainers = `SELECT image_id, any(image_ref), source_container_id, a.n, a.top FROM commits
ANY INNER JOIN (SELECT container_id AS source_container_id, count() AS n, max(score) AS top FROM alerts WHERE score >= ? GROUP BY container_id) AS a
USING source_container_id
GROUP BY image_id, source_container_id, a.n, a.top
ORDER BY image_id`
)
