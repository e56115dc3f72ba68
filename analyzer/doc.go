// Package analyzer is contain's detection stage.
//
// It consumes enriched event batches from the CONTAIN_EVENTS stream
// (durable consumer "analyzer") and emits KIND_ALERT events, in batches,
// to containv1.AlertsSubject(host of the container) on CONTAIN_ALERTS.
//
// For each group of containers (Config.GroupBy: image digest by default,
// else image reference, else "container:<id>"; or image repository,
// compose service, Kubernetes workload from the labels of the
// KIND_CONTAINER event) it keeps a Baseline: executables with their argv
// shapes, parent→child edges, effective uids, syscalls, a syscall sequence model
// (sequence mode: seqmodel.go, docs/design/018),
// outbound peers, listen ports, file-write path prefixes, sensitive
// files read and behaviours (code, executable, key). A baseline learns
// from the first event of its image for LearningWindow of event time (or
// until its novelty rate converges), then scores every deviation in [0,1]
// from the score of its class (classes.go; analyzer.class_scores
// overrides), how rare it is for the image, and whether it contradicts the
// image's declared Profile (contradictions are scored even while
// learning). A container whose events name a profile (profile_ref, e.g.
// its compose service's, with the peer services' addresses) is judged
// against that one rather than its image's: a connect to an address
// outside its peer_addresses raises net.peer.undeclared.
//
// Policies (commits.go) are scored learning or not: a KIND_COMMIT of a
// container outside analyzer.commits.allow_containers/allow_images is
// commit.unallowed; a write refused with EROFS is file.write.readonly
// (never learned).
//
// Behaviours (behaviours.go: shell or interpreter from a service, drift,
// exec from tmpfs or memory, persistence, credential reads and searches,
// escapes, reverse shells, scans, privilege gain, ...; the table is
// docs/detection.md) are named by what the event says, whether or not its
// executable is in the baseline; what the image's own program did while
// learning is learned per behaviour and executable. A busybox shell's
// child that runs an applet without exec (only its comm changes, which
// the collector reports as a prctl PR_SET_NAME) is observed as that
// applet's exec. An alert's score is the noisy-OR of its
// reasons; the distinct reasons of one process tree (the container's own,
// or one exec session) within CombineWindow combine the same way, capped
// at CombineCap (reason incident.combined). An alert carries the
// container's pod, namespace and labels (at most 32, from its
// KIND_CONTAINER event) for outputs and the alerts table; they are never
// scored.
//
// Origin (Process.origin, decided by lineage in the collector):
// ORIGIN_RUNTIME events are neither learned nor scored
// (contain_analyzer_events_runtime_total); ORIGIN_EXEC_SESSION events
// follow ExecSessions: "behaviours" (default: one exec.session alert,
// score 0.4, per session naming its command, and the session's attack
// behaviours, SessionBehaviours, scored at their class; an operator's
// routine activity neither learned nor scored), "record" (the exec.session
// alert only), "alert" (all scored, never learned), "container" (the
// container's own) or "ignore" (counted,
// contain_analyzer_events_exec_session_total).
// ORIGIN_CONTAINER events are learned and scored with no exemption by
// name.
//
// Guarantees:
//   - Events are decoded in place (bus.Arena, ConsumerConfig.ReuseEvents:
//     strings point into the message, events into storage reused from
//     fetch to fetch); whatever the engine keeps (baseline items,
//     container state, alerts) is its own copy, so no message outlives its
//     handler call (TestEngineKeepsNoPayload) and no event its fetch
//     (TestArenaObservesAsDecoded).
//   - Scoring is deterministic: time is the events' wall time, never the
//     clock, and alert ids derive from the trigger's id, so replaying a
//     stream reproduces the same alerts.
//   - Identical deviations (same container, reason code and subject)
//     raise one alert per GroupWindow; the others are counted into the
//     next alert's count.
//   - Events of ORIGIN_UNSPECIFIED (older collectors): what the
//     container runtime does inside a container before it execs the
//     container's program (runc's init stages, comm "runc:[N:...]":
//     unshare, mount, pivot_root, keyctl, setuid, capset at every start and
//     `runc exec`) is attributed to the runtime, neither learned nor
//     scored, unless the process is one the container executed or forked
//     (KIND_EXEC, KIND_PROCESS) and the event came after that exec in
//     monotonic time (runc's threads killed by the exec may be reported
//     after it). Periodic syscall counts are skipped:
//     their syscalls were reported one by one.
//   - Redelivered duplicates of a deviating event raise nothing; events
//     of unknown kind, without a container, without wall time or beyond
//     MaxImages are counted and skipped, never fatal.
//   - An alert is acknowledged upstream only once published; alerts that
//     failed to publish are retried before new ones.
//   - Baselines are persisted in the NATS KV bucket "contain_baselines"
//     with a checksum; a corrupt one is reported and counted, never
//     loaded: the newest valid revision of its history is loaded instead
//     (counted, kind baseline_fallback) and written back over it.
//   - The baselines are loaded before any event is consumed: a failed load
//     (bucket unreachable or unreadable) is retried with a doubling delay
//     up to 5 s, logged and counted (contain_errors_total{kind=
//     "baseline_load"}), and Ready (the analyzer's /readyz check) fails
//     until it succeeds, so no image relearns over its stored baseline.
//   - Partitioned (Config.Partitions > 1): a baseline group is scored by
//     the one instance holding its partition's lease, which loaded the
//     group's stored baseline before consuming the partition; a partition
//     is handed over only after its fetch in hand is acknowledged and its
//     baselines written; an instance that cannot renew its leases for 3/4
//     of Config.LeaseTTL stops consuming before they can expire.
//   - A manual operation (lock, unlock, reset, import) is applied only when
//     signed by a key of Config.OperatorKeys (Doc.OpSig over the key, op,
//     content and actor; Doc.OpActor is the signer "<credential>/<os
//     user>"); an unsigned, forged or replayed one is refused, counted in
//     contain_refused_total{stage="analyzer",reason}, and the analyzer's
//     own version is written back over it.
//
// Partitions (docs/design/022-analyzer-partitions.md): with
// Config.Partitions > 1 (analyzer.partitions) several instances share the
// work, each baseline group owned by exactly one of them at a time. The
// enricher, given NewRouter(cfg) (enricher.SetRouter), publishes each
// event on contain.v1.events.<host>.p<N>, N = containv1.Partition(group
// key, Partitions). Each instance heartbeats and holds leases in the KV
// bucket LeasesBucket (TTL Config.LeaseTTL), takes the partitions the
// deterministic assignment (rendezvous hashing over the live instances)
// gives it, loads their baselines from the baselines bucket, then consumes
// each through the durable "<durable>-p<N>". It hands a partition over by
// consuming to the end of its fetch in hand, acknowledging, writing its
// baselines and deleting the lease; a dead instance's leases expire after
// LeaseTTL and the next owner loads the last written baselines. Starting
// one instance:
//
//	cfg := analyzer.DefaultConfig()
//	cfg.Partitions, cfg.InstanceID = 12, "analyzer-1" // same Partitions everywhere
//	a, err := analyzer.New(cfg, js, metrics.New(), log)
//	go a.Run(ctx)      // returns after handing its partitions over
//	a.Partitions()     // the partitions it holds now
//
// and the enricher: e.SetRouter(analyzer.NewRouter(cfg)). `contain run`
// does both from the config (analyzer.partitions, analyzer.instance_id,
// analyzer.lease_ttl); with the default, 1 partition, nothing changes.
//
// The Engine type is the pure scoring core (no I/O); Analyzer wraps it
// with NATS. Files by concern:
//   - engine.go: the Engine, its containers and baselines, Observe (one
//     event: which baseline, learn or score, raise);
//   - declared.go: the declared profile a baseline is seeded from, and the
//     per-container profile an event's profile_ref names;
//   - learn.go: learning items, novelty and convergence;
//   - observe.go: what each event kind (exec, syscall, network, file,
//     process) deviates from;
//   - alert.go: deviations to one alert (scores, absorbing, grouping,
//     incidents, the alert event); behave.go combines an incident's reasons;
//   - behaviours.go, classes.go: named behaviours and reason codes;
//   - seqengine.go, seqmodel.go, seqscore.go: the syscall-sequence model;
//   - baseline.go, lifecycle.go, opsign.go: the persisted document
//     (schemas/kvdoc) and manual operations; store.go, control.go: NATS KV;
//   - analyzer.go: the stage (consume, publish, persist);
//   - partition.go, lease.go: routing, assignment and leases of partitions.
package analyzer
