// Package store is contain's ClickHouse sink, for forensics and SOC queries.
//
// Consumes: the CONTAIN_EVENTS, CONTAIN_ALERTS and CONTAIN_ACTIONS
// JetStream streams (containv1.Batch messages), through durable pull
// consumers <prefix>-events, <prefix>-alerts and <prefix>-actions.
//
// Emits: rows in ClickHouse (native protocol; 18.16 and current releases),
// in the database of Config.Database:
//
//   - events: one flat row per event of any kind but alert and action
//     (sorted by container_id, ts);
//   - alerts: one row per alert with its reasons, MITRE techniques,
//     evidence ids and trigger event (sorted by image_ref, ts);
//   - actions: one row per responder action (sorted by container_id, ts);
//   - events_per_minute: per container, minute and kind, fed by a
//     materialized view;
//   - baselines, image_audits, declarations: image-level histories that the
//     analyzer and the enricher write through InsertBaseline,
//     InsertImageAudit and InsertDeclaration;
//   - schema_migrations: the applied schema versions.
//
// Guarantees:
//
//   - At least once: a fetch is acknowledged only after all its rows were
//     inserted. While ClickHouse is unreachable the first failure is logged
//     at Error with the address, every failure is counted
//     (contain_errors_total{stage="store",kind="insert"|"migrate"}), and the
//     messages are redelivered after a doubling back-off (RetryDelay up to
//     30s); InsertTimeout + FlushInterval < AckWait, so a hung insert fails
//     and backs off rather than racing NATS's own redelivery.
//   - Idempotent rows: tables are ReplacingMergeTree keyed by the event id,
//     so a redelivered batch collapses at merge time (query with FINAL or
//     uniqExact(id) for exact counts before merges).
//   - A message that does not decode is counted
//     (contain_malformed_messages_total{stage="store"}) and skipped; every
//     decoded event makes a row: values are bounded to their column types,
//     a missing or invalid id gets a stable derived one.
//   - The schema is created by ordered, numbered migrations, each applied
//     once and made of idempotent statements; Open may run concurrently.
//   - Retention is by day partition: Prune drops whole days.
package store
