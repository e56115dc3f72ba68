// Package notify is contain's push stage: it sends alerts and the
// responder's actions to where responders look — webhooks (generic JSON or
// a Slack-compatible message), syslog (RFC 5424) and Falcosidekick (Falco
// JSON, so Falcosidekick's outputs work). It imports schemas/ and
// internal/ only. See docs/outputs.md and docs/design/015-outputs.md.
//
// Consumes: KIND_ALERT events from CONTAIN_ALERTS (durable
// "<durable_prefix>-alerts", every host) and KIND_ACTION events from
// CONTAIN_ACTIONS (durable "<durable_prefix>-actions"), through
// internal/bus's consume loop (malformed and host-mismatched batches are
// refused and counted there). NATS role: notify (internal/auth).
//
// Emits: one notification per alert scoring at least Config.MinScore
// (when Config.Alerts) and per action that did something: quarantine
// (pause OK), release (release OK), refused (a pause refused: not a
// container), failed, dry_run; skipped actions are not pushed. A
// quarantine carries its alert's evidence (reasons, score, ATT&CK ids, the
// triggering process, kept from the alert when notify saw it), the
// forensic snapshot summary and the exact release command. Nothing is
// published to NATS.
//
// Guarantees:
//   - a message is acknowledged to JetStream only after every output
//     accepted each of its notifications or counted it dropped; an output
//     that still fails after its retries (exponential back-off) leaves the
//     message to JetStream's redelivery, and the outputs that had accepted
//     it are not sent it again (ids remembered per output, the latest
//     65,536), so a receiver that is down loses nothing;
//   - each output has a bounded queue (queue_len): a notification that
//     finds it full is dropped, counted in
//     contain_notify_dropped_total{output,reason="queue_full"} and logged
//     once; a 4xx refusal (not 408/429) is dropped with reason "rejected";
//   - at most max_in_flight deliveries per output at once, each bounded by
//     timeout; contain_notify_delivered_total, _failed_total,
//     _retries_total count what happened, per output;
//   - delivery is at least once: a receiver that accepted a request but
//     whose answer was lost gets it again; every HTTP request carries the
//     notification id (X-Contain-Id) to deduplicate on.
package notify
