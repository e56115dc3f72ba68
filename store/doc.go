// Package store is contain's ClickHouse sink, for forensics and SOC queries.
//
// Consumes: the CONTAIN_EVENTS, CONTAIN_ALERTS and CONTAIN_ACTIONS
// JetStream streams (containv1.Batch messages), through durable pull
// consumers <prefix>-events, <prefix>-alerts and <prefix>-actions; and
// every version written to the NATS KV buckets contain_images (image
// declarations, internal/imagecfg), contain_profiles (declared profiles,
// schemas/profile.md) and contain_baselines (kvdoc.Baseline), through durable
// consumers <prefix>-kv-images, -kv-profiles and -kv-baselines on their
// KV_<bucket> streams (Config.ImagesBucket, ProfilesBucket,
// BaselinesBucket; empty skips one).
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
//   - baselines: one row per baseline version (from contain_baselines);
//   - declarations: one row per image declaration (source
//     "enricher:image", profile_version "d1-<hash of the value>") and per
//     declared-profile version (source "enricher:profile"; only the
//     versioned keys "<digest key>.<version>" make rows, the digest key
//     holds a copy);
//   - image_audits: `contain audit --store` (InsertImageAudit);
//   - commits: one row per KIND_COMMIT event (source container and image,
//     new image, diff summary, lineage: the new image's ancestors), with
//     the lineage queries QueryImagesFromContainer and
//     QueryImagesFromAlertedContainers;
//   - container_audits: `contain audit --running --policy ... --store`
//     (InsertContainerAudits): one row per container and policy;
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
//   - Idempotent rows: before sending a fetch's rows, the store looks up
//     which of its event, alert and action ids the tables already hold
//     (within the fetch's time range and containers or images; the ids
//     are read from the encoded messages, and the query runs while the
//     rows are converted) and skips them,
//     counted as contain_dropped_total{stage="store",reason="duplicate"};
//     so a batch delivered twice (retry, replay, restart) adds no row and
//     plain count() is exact. Tables are also ReplacingMergeTree keyed by
//     the id, which folds what two stores inserting one batch at the same
//     instant leave (docs/design/017-forensics.md).
//   - A fetch is read message by message (bus.ConsumeMessages): each
//     message is validated without decoding (bus.ScanBatch accepts only
//     what decoding accepts; anything else is decoded, so refusals are
//     the decoder's), its events read from the wire into column buffers
//     (alerts, actions, container and commit events decoded one by one),
//     so a fetch is never held decoded (docs/design/021-store-inserts.md).
//     A fleet batch (design 036) is read as its parts, each stored as the
//     batch it would have been alone on its host's subject.
//   - A message that does not decode is counted
//     (contain_malformed_messages_total{stage="store"}) and skipped; every
//     decoded event makes a row: values are bounded to their column types,
//     a missing or invalid id gets a stable derived one.
//   - KV versions: Run waits for each bucket to exist; an entry is
//     acknowledged only after its row was inserted, so a restart resumes
//     after the last inserted version, nothing written meanwhile is lost
//     (as far as the bucket's history keeps it), and a redelivered version
//     replaces its own row (keys (image_digest, baseline_key, version) and
//     (image_digest, profile_version, source)). Deletes and purges make no
//     row. A value that does not decode, or whose baseline fails the
//     format's checks (kvdoc.UnmarshalBaseline: checksum, items), is counted
//     (contain_malformed_messages_total{stage="store"} and
//     contain_errors_total{stage="store",kind="kv_malformed"}) and skipped.
//   - The schema is created by ordered, numbered migrations, each applied
//     once and made of idempotent statements; Open may run concurrently.
//   - Retention is by day partition: Prune drops whole days; with
//     Config.Retention set, Run calls it at start and then daily (failures
//     counted as kind="prune" and retried after a minute). Image-level
//     tables are never pruned.
//   - On a ClickHouse cluster (Config.Cluster, docs/design/023-clickhouse-cluster.md)
//     the same table names are Distributed tables over <table>_local on
//     every node, sharded by container, so readers and SQL are unchanged;
//     an INSERT returns only once every shard holds its rows (either write
//     mode), and Open refuses an addr that misses a node of the cluster.
package store
