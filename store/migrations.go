package store

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/containsec/contain/internal/logfields"
)

// A migration is a numbered list of DDL statements. Migrations are applied
// in order, each once, and recorded in schema_migrations. Every statement
// must itself be idempotent (IF NOT EXISTS), so two stores migrating at the
// same moment, or a crash between a statement and its record, are harmless.
// Never edit a released migration: append a new one.
//
// The DDL must run on ClickHouse 18.16 and on current releases: no
// DateTime64, IPv4/IPv6, Map, Bool, JSON, TTL, CODEC or skip indexes.
type migration struct {
	version uint32
	name    string
	stmts   []string
	// columns are added after stmts, each only if missing (18.16 has no
	// ADD COLUMN IF NOT EXISTS).
	columns []column
	// retyped are columns whose type changes after columns, each only
	// if its type differs (MODIFY COLUMN; never a sort-key column).
	retyped []column
}

// column is a column a migration adds to an existing table.
type column struct {
	table, name, typ string
}

// migrations is the schema's history.
var migrations = []migration{
	{1, "events, alerts, actions", []string{ddlEvents, ddlAlerts, ddlActions}, nil, nil},
	{2, "per-container per-minute counts", []string{ddlEventsPerMinute, ddlEventsPerMinuteMV}, nil, nil},
	{3, "baselines, image_audits, declarations", []string{ddlBaselines, ddlImageAudits, ddlDeclarations}, nil, nil},
	{4, "file ownership and path resolution, container addresses", nil, []column{
		{"events", "file_uid", "UInt32"},
		{"events", "file_gid", "UInt32"},
		{"events", "file_path_relative", "UInt8"},
		{"events", "file_path_unresolved", "UInt8"},
		{"events", "file_new_path_unresolved", "UInt8"},
		{"events", "ct_addresses", "Array(String)"},
		{"events", "ct_host_network", "UInt8"},
	}, nil},
	{5, "alert incidents", nil, []column{{"alerts", "incident_id", "UUID"}}, nil},
	{6, "alert pod, namespace and labels", nil, []column{
		{"alerts", "pod", "String"},
		{"alerts", "namespace", "LowCardinality(String)"},
		// Parallel arrays sorted by key (no Map type on every server):
		// label_values[indexOf(label_keys, 'app')].
		{"alerts", "label_keys", "Array(String)"},
		{"alerts", "label_values", "Array(String)"},
	}, nil},
	{7, "commits and container audits", []string{ddlCommits, ddlContainerAudits}, nil, nil},
	// Values every event of a container repeats, as dictionary keys: the
	// store fills them through its LowCardinality path (lowcard.go) and
	// the server writes and merges a key per row instead of the string
	// (docs/design/021-store-inserts.md, "migration 8"). container_id is
	// in the sort key: ClickHouse refuses to change its type. The
	// events_per_minute view casts image_ref back to String: that column
	// is in its table's sort key, and 18.16 does not convert a view's
	// LowCardinality result to its target's String column.
	{8, "per-container event columns as LowCardinality",
		[]string{ddlDropEventsPerMinuteMV, ddlEventsPerMinuteMVCast}, nil, lowCardEventColumns},
}

// lowCardEventColumns are migration 8's retyped columns.
var lowCardEventColumns = []column{
	{"events", "container_name", lowCardString},
	{"events", "image_ref", lowCardString},
	{"events", "image_digest", lowCardString},
	{"events", "profile_ref", lowCardString},
	{"events", "batch_producer", lowCardString},
}

const lowCardString = "LowCardinality(String)"

const ddlMigrations = `CREATE TABLE IF NOT EXISTS schema_migrations (
    version    UInt32,
    name       String,
    applied_at DateTime
) ENGINE = ReplacingMergeTree()
ORDER BY version`

// events: one row per event, flat. The sort key serves "everything
// container X did between t1 and t2"; ReplacingMergeTree collapses a
// redelivered batch (same container, ts, event_id) at merge time; use
// FINAL or uniqExact(toString(event_id)) when exact counts matter before
// merges (over the UUID itself 18.16's uniqExact hung at ~2M rows).
const ddlEvents = `CREATE TABLE IF NOT EXISTS events (
    ts              DateTime,
    ts_ns           UInt32,
    event_id        UUID,
    kind            LowCardinality(String),
    host            LowCardinality(String),
    container_id    String,
    container_name  String,
    image_ref       String,
    image_digest    String,
    mono_ns         UInt64,
    cgroup_id       UInt64,
    profile_ref     String,
    schema_version  UInt32,
    pid             UInt32,
    tgid            UInt32,
    ppid            UInt32,
    ns_pid          UInt32,
    uid             UInt32,
    gid             UInt32,
    euid            UInt32,
    comm            String,
    non_utf8        UInt8,
    exec_filename   String,
    exec_argv       Array(String),
    exec_argc       UInt32,
    exec_argv_truncated UInt8,
    exec_cwd        String,
    exec_exe        String,
    proc_op         LowCardinality(String),
    proc_child_tgid UInt32,
    proc_exit_code  Int32,
    syscall_mode    LowCardinality(String),
    syscall_nr      UInt32,
    syscall_name    LowCardinality(String),
    syscall_args    Array(UInt64),
    syscall_ret     Int64,
    syscall_count   UInt64,
    syscall_sequence Array(UInt32),
    net_op          LowCardinality(String),
    net_protocol    LowCardinality(String),
    net_family      UInt16,
    local_addr      FixedString(16),
    local_port      UInt16,
    remote_addr     FixedString(16),
    remote_port     UInt16,
    net_result      Int32,
    file_op         LowCardinality(String),
    file_path       String,
    file_new_path   String,
    file_flags      UInt32,
    file_mode       UInt32,
    file_result     Int32,
    loss_source     LowCardinality(String),
    loss_reason     String,
    loss_count      UInt64,
    ct_runtime      LowCardinality(String),
    ct_cgroup_path  String,
    ct_bundle       String,
    ct_init_pid     UInt32,
    ct_pod          String,
    ct_namespace    String,
    label_keys      Array(String),
    label_values    Array(String),
    batch_stage     LowCardinality(String),
    batch_producer  String,
    batch_seq       UInt64,
    raw             String,
    inserted_at     DateTime DEFAULT now()
) ENGINE = ReplacingMergeTree()
PARTITION BY toYYYYMMDD(ts)
ORDER BY (container_id, ts, event_id)`

// alerts: one row per alert; the sort key serves "all alerts for image Y".
const ddlAlerts = `CREATE TABLE IF NOT EXISTS alerts (
    ts               DateTime,
    ts_ns            UInt32,
    alert_id         UUID,
    host             LowCardinality(String),
    container_id     String,
    container_name   String,
    image_ref        String,
    image_digest     String,
    cgroup_id        UInt64,
    profile_ref      String,
    score            Float64,
    rule             LowCardinality(String),
    priority         LowCardinality(String),
    baseline_version String,
    count            UInt64,
    reason_codes     Array(String),
    reason_messages  Array(String),
    reason_scores    Array(Float64),
    mitre            Array(String),
    evidence_ids     Array(UUID),
    trigger_event_id UUID,
    trigger_kind     LowCardinality(String),
    trigger_ts       DateTime,
    trigger_ts_ns    UInt32,
    trigger_pid      UInt32,
    trigger_comm     String,
    trigger_exec_filename String,
    trigger_exec_argv Array(String),
    trigger_syscall_name String,
    trigger_remote_addr FixedString(16),
    trigger_remote_port UInt16,
    trigger_file_path String,
    trigger_raw      String,
    batch_stage      LowCardinality(String),
    batch_producer   String,
    batch_seq        UInt64,
    inserted_at      DateTime DEFAULT now()
) ENGINE = ReplacingMergeTree()
PARTITION BY toYYYYMMDD(ts)
ORDER BY (image_ref, ts, alert_id)`

// actions: one row per responder action, keyed like events by container.
const ddlActions = `CREATE TABLE IF NOT EXISTS actions (
    ts             DateTime,
    ts_ns          UInt32,
    action_id      UUID,
    host           LowCardinality(String),
    container_id   String,
    container_name String,
    image_ref      String,
    image_digest   String,
    cgroup_id      UInt64,
    type           LowCardinality(String),
    result         LowCardinality(String),
    actor          String,
    reason         String,
    method         LowCardinality(String),
    detail         String,
    alert_id       UUID,
    score          Float64,
    latency_ns     Int64,
    batch_stage    LowCardinality(String),
    batch_producer String,
    batch_seq      UInt64,
    inserted_at    DateTime DEFAULT now()
) ENGINE = ReplacingMergeTree()
PARTITION BY toYYYYMMDD(ts)
ORDER BY (container_id, ts, action_id)`

// events_per_minute is fed by a materialized view on every insert into
// events. A redelivered batch is counted again (the view sees inserts, not
// merged rows): it is an overview, events is the truth.
const ddlEventsPerMinute = `CREATE TABLE IF NOT EXISTS events_per_minute (
    minute       DateTime,
    container_id String,
    image_ref    String,
    kind         LowCardinality(String),
    events       UInt64
) ENGINE = SummingMergeTree()
PARTITION BY toYYYYMMDD(minute)
ORDER BY (container_id, minute, kind, image_ref)`

const ddlEventsPerMinuteMV = `CREATE MATERIALIZED VIEW IF NOT EXISTS events_per_minute_mv
TO events_per_minute AS
SELECT toStartOfMinute(ts) AS minute, container_id, image_ref, kind, count() AS events
FROM events
GROUP BY minute, container_id, image_ref, kind`

// ddlDropEventsPerMinuteMV and ddlEventsPerMinuteMVCast replace the view
// (migration 8). Rows inserted into events between the two statements
// are not counted: events_per_minute is an overview.
const ddlDropEventsPerMinuteMV = `DROP TABLE IF EXISTS events_per_minute_mv`

const ddlEventsPerMinuteMVCast = `CREATE MATERIALIZED VIEW IF NOT EXISTS events_per_minute_mv
TO events_per_minute AS
SELECT toStartOfMinute(ts) AS minute, container_id, CAST(image_ref AS String) AS image_ref, kind, count() AS events
FROM events
GROUP BY minute, container_id, image_ref, kind`

// The image-level tables are small histories written by the analyzer and
// the enricher (InsertBaseline, InsertImageAudit, InsertDeclaration): no
// day partitions, so Prune keeps them. Items are parallel arrays
// (item_kinds[i], items[i], counts[i]) so they ARRAY JOIN; doc keeps the
// writer's full document (JSON) for replay.
const ddlBaselines = `CREATE TABLE IF NOT EXISTS baselines (
    ts               DateTime,
    baseline_key     String,
    image_ref        String,
    image_digest     String,
    version          UInt64,
    phase            String,
    observations     UInt64,
    novelty          Float64,
    item_kinds       Array(String),
    items            Array(String),
    counts           Array(UInt64),
    source           String,
    doc              String,
    inserted_at      DateTime DEFAULT now()
) ENGINE = ReplacingMergeTree(ts)
ORDER BY (image_digest, baseline_key, version)`

const ddlImageAudits = `CREATE TABLE IF NOT EXISTS image_audits (
    ts                 DateTime,
    image_ref          String,
    image_digest       String,
    auditor            String,
    verdict            String,
    score              Float64,
    finding_codes      Array(String),
    finding_messages   Array(String),
    finding_severities Array(String),
    doc                String,
    inserted_at        DateTime DEFAULT now()
) ENGINE = ReplacingMergeTree()
ORDER BY (image_digest, auditor, ts)`

const ddlDeclarations = `CREATE TABLE IF NOT EXISTS declarations (
    ts              DateTime,
    image_ref       String,
    image_digest    String,
    profile_version String,
    source          String,
    user            String,
    item_kinds      Array(String),
    items           Array(String),
    doc             String,
    inserted_at     DateTime DEFAULT now()
) ENGINE = ReplacingMergeTree(ts)
ORDER BY (image_digest, profile_version, source)`

// migrate creates schema_migrations and applies the migrations it does
// not list yet, in order, in sc's form.
func migrate(ctx context.Context, conn driver.Conn, sc schema, log *slog.Logger) error {
	applied, err := appliedMigrations(ctx, conn)
	if err != nil {
		return err
	}
	for _, m := range migrations {
		if applied[m.version] {
			continue
		}
		if err := applyMigration(ctx, conn, sc, m); err != nil {
			return err
		}
		log.Info("applied schema migration", logfields.Version, m.version, logfields.Name, m.name)
	}
	return nil
}

// appliedMigrations creates schema_migrations if needed (a plain table of
// the server, on a cluster too) and returns the versions it lists.
func appliedMigrations(ctx context.Context, conn driver.Conn) (map[uint32]bool, error) {
	if err := conn.Exec(ctx, ddlMigrations); err != nil {
		return nil, fmt.Errorf("creating schema_migrations: %w", err)
	}
	applied := map[uint32]bool{}
	rows, err := conn.Query(ctx, "SELECT DISTINCT version FROM schema_migrations")
	if err != nil {
		return nil, fmt.Errorf("reading schema_migrations: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var v uint32
		if err := rows.Scan(&v); err != nil {
			return nil, fmt.Errorf("reading schema_migrations: %w", err)
		}
		applied[v] = true
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("reading schema_migrations: %w", err)
	}
	return applied, nil
}

// applyMigration runs m's statements and column additions in sc's form and
// records m.
func applyMigration(ctx context.Context, conn driver.Conn, sc schema, m migration) error {
	for i, stmt := range m.stmts {
		stmts, err := sc.stmts(stmt)
		if err != nil {
			return fmt.Errorf("migration %d (%s) statement %d: %w", m.version, m.name, i+1, err)
		}
		for _, st := range stmts {
			if err := conn.Exec(ctx, st); err != nil {
				return fmt.Errorf("migration %d (%s) statement %d: %w", m.version, m.name, i+1, err)
			}
		}
	}
	for _, c := range m.columns {
		for _, t := range sc.columnTables(c.table) {
			if err := addColumn(ctx, conn, column{t, c.name, c.typ}); err != nil {
				return fmt.Errorf("migration %d (%s): %w", m.version, m.name, err)
			}
		}
	}
	for _, cs := range byTable(m.retyped) {
		for _, t := range sc.columnTables(cs[0].table) {
			if err := retypeColumns(ctx, conn, t, cs); err != nil {
				return fmt.Errorf("migration %d (%s): %w", m.version, m.name, err)
			}
		}
	}
	if err := record(ctx, conn, m); err != nil {
		return fmt.Errorf("recording migration %d: %w", m.version, err)
	}
	return nil
}

// addColumn adds c unless the table already has it (a crash between the
// ALTER and the migration's record, or two stores migrating at once).
func addColumn(ctx context.Context, conn driver.Conn, c column) error {
	var n uint64
	q := fmt.Sprintf("SELECT count() FROM system.columns WHERE database = currentDatabase() AND table = '%s' AND name = '%s'", c.table, c.name)
	if err := conn.QueryRow(ctx, q).Scan(&n); err != nil {
		return fmt.Errorf("checking column %s.%s: %w", c.table, c.name, err)
	}
	if n > 0 {
		return nil
	}
	if err := conn.Exec(ctx, fmt.Sprintf("ALTER TABLE %s ADD COLUMN %s %s", c.table, c.name, c.typ)); err != nil {
		if strings.Contains(err.Error(), "already exists") {
			return nil
		}
		return fmt.Errorf("adding column %s.%s: %w", c.table, c.name, err)
	}
	return nil
}

// byTable groups cs by table, in the order the tables first appear.
func byTable(cs []column) [][]column {
	var out [][]column
	idx := map[string]int{}
	for _, c := range cs {
		i, ok := idx[c.table]
		if !ok {
			i = len(out)
			idx[c.table] = i
			out = append(out, nil)
		}
		out[i] = append(out[i], c)
	}
	return out
}

// retypeColumns gives table's columns cs their types, those that lack it
// in one ALTER (one rewrite of the table's parts). On 18.16 the ALTER
// rewrites the columns in every part before it returns (~0.5-0.7 s
// per million events rows here, docs/benchmarks.md); current releases change
// the metadata and rewrite the parts in a background mutation, reading
// the old parts converted meanwhile.
func retypeColumns(ctx context.Context, conn driver.Conn, table string, cs []column) error {
	var modify []string
	for _, c := range cs {
		var typ string
		q := fmt.Sprintf("SELECT type FROM system.columns WHERE database = currentDatabase() AND table = '%s' AND name = '%s'", table, c.name)
		if err := conn.QueryRow(ctx, q).Scan(&typ); err != nil {
			return fmt.Errorf("checking column %s.%s: %w", table, c.name, err)
		}
		if typ != c.typ {
			modify = append(modify, fmt.Sprintf("MODIFY COLUMN %s %s", c.name, c.typ))
		}
	}
	if len(modify) == 0 {
		return nil
	}
	if err := conn.Exec(ctx, fmt.Sprintf("ALTER TABLE %s %s", table, strings.Join(modify, ", "))); err != nil {
		return fmt.Errorf("retyping columns of %s: %w", table, err)
	}
	return nil
}

// record notes m as applied. (An INSERT ... VALUES through Exec hangs on
// 18.16: inserts go through a batch.)
func record(ctx context.Context, conn driver.Conn, m migration) error {
	b, err := conn.PrepareBatch(ctx, "INSERT INTO schema_migrations (version, name, applied_at)")
	if err != nil {
		return err
	}
	if err := b.Append(m.version, m.name, time.Now().UTC()); err != nil {
		_ = b.Abort()
		return err
	}
	return b.Send()
}
