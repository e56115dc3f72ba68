// Package responder is contain's response stage: it pauses containers that
// the analyzer flags, and releases them on request.
//
// Cgroup roots: Config.FreezerRoot and Config.Cgroup2Root "" are detected
// from the mount table at New (internal/cgroups.Detect; a cgroup2-only host
// has no v1 freezer), RootDisabled turns one off; crun containers are
// located from Config.CrunRoot. See docs/design/010-cgroup-layouts.md.
//
// Consumes: KIND_ALERT events in batches from the CONTAIN_ALERTS stream,
// subject containv1.AlertsSubject(host) only (durable consumer
// "responder-<host token>"); a batch whose events name another host than
// the subject's is refused and counted (bus.CheckHost). Who may publish
// alerts is enforced by NATS permissions (internal/auth's table): a
// batch's self-declared stage is no authority;
// at start it replays its host's actions through the consumer
// "responder-<host token>-restore" on CONTAIN_ACTIONS. Serves core-NATS request/reply on
// containv1.ControlSubject(host, "release") and (host, "quarantine.list").
// A release request must be signed (auth.Signed, purpose
// ReleasePurpose(host)) by a key of Config.OperatorKeys, recent and not
// replayed; others are refused and counted in
// contain_refused_total{stage="responder",reason}.
//
// Emits: one KIND_ACTION event per alert and per release request, on
// containv1.ActionsSubject(host), with container_id, image_ref and
// image_digest copied from the alert, alert_id, score, the alert's reasons
// joined as reason, actor "responder@<host>" (for a release, the verified
// signer: "<credential>/<os user>"; the request's note goes in the reason), the freeze method, latency_ns (from the alert's trigger wall
// time to verified frozen) and a JSON Detail: the decision in words, the
// policy rule and threshold, and for a pause a bounded forensic snapshot
// (processes with argv, sockets, files changed in the writable layer).
//
// Guarantees:
//   - every decision is recorded as an action with its reason: OK (paused
//     and verified frozen), SKIPPED (below threshold, allowlisted,
//     never-pause, already quarantined, circuit breaker open), DRY_RUN, or
//     FAILED (not found, exited before the freeze, not verified in time);
//   - only proven containers are frozen (freezer.Prove): known to a
//     runtime (its state, or the Docker Engine API's pid), the cgroup the
//     runtime recorded, named after the container, holding the recorded
//     init (same start time), and neither holding nor an ancestor of the
//     responder's own process, ProtectPids, ProtectCgroups or the
//     listeners of ProtectAddrs (NATS, ClickHouse). Anything else (the
//     root cgroup, a host slice, service or session scope, a cgroup named
//     like an id that no runtime knows, a traversal id, a host process) is
//     recorded FAILED "refused: not a container: ...", counted in
//     contain_responder_refused_total{reason} and logged at error;
//   - never paused: containers carrying a NeverPauseLabels value whose
//     key is listed in Policy.TrustedLabels (the policy sees no other
//     label: an image's label exempts nothing), ids in
//     Policy.NeverPauseIDs, Policy.Allow scopes;
//   - docker and containerd containers are paused through their engine
//     (responder.docker_methods, containerd_methods), verified by the
//     engine and the cgroup, and released through the same engine; when
//     the engine is unreachable or refuses, the cgroup freezes and the
//     action records the method and the failed attempt (detail.fallback);
//   - a freeze that cannot be verified, or that finds the container empty,
//     is undone and recorded FAILED; a container is never reported frozen
//     when it is not;
//   - an alert is acknowledged only after its action was published, so a
//     crash re-handles it; a container found already frozen is SKIPPED,
//     never frozen twice;
//   - the quarantine list survives a restart: it is rebuilt at start from
//     the host's actions in CONTAIN_ACTIONS, keeping containers still
//     frozen, and so are release grace and the circuit breaker's window;
//   - a crash between a freeze and its action loses nothing: the intent is
//     recorded (Config.StateDir, fsynced) before the freeze, and at start a
//     container frozen under a pending intent gets its PAUSE/OK action and
//     joins the quarantine list, one not frozen is rolled back and its
//     redelivered alert decided again
//     (docs/design/011-responder-crash-windows.md);
//   - an alert older than Config.MaxAlertAge on arrival is SKIPPED and
//     counted (contain_responder_stale_alerts_total), never acted on;
//   - responses are idempotent per alert id: an alert an action already
//     answered (its acknowledgement lost, or raised again under the same
//     id by the analyzer instance that took its partition over) is neither
//     decided nor answered again, only counted
//     (contain_dropped_total{stage="responder",reason="duplicate_alert"}).
//     The answered ids (the last 65536) are rebuilt at start from the
//     host's actions (Action.alert_id), like the quarantine list (handled.go).
//
// The policy is Config.Decide, a pure function of the alert and the
// Situation (decide.go); the action on its verdict is in pause.go. The
// logger passed to New is scoped to the stage by its caller.
package responder
