// Package loadtest drives contain at scale and measures it.
//
// A Generator publishes raw batches to contain.v1.raw.<host> as a fleet of
// collectors would (bus.Producer and bus.Publish, so batch sequence numbers,
// Nats-Msg-Id de-duplication and JetStream acks are the real ones): N
// simulated hosts × M containers, each container's KIND_CONTAINER event
// first, then a mix of exec, process, syscall, network and file events of
// realistic sizes, and after DeviateAfter a fraction of deviations (unseen
// executables in /tmp, connections to unseen peers), at a target rate or
// as fast as the bus takes them, bounded in count and time.
//
// Run starts the real stages of one `contain run` in this process, wired
// as cmd/contain does (enricher, analyzer, store into ClickHouse, one
// dry-run responder per simulated host) on an embedded NATS whose store
// lives in a temporary directory — or, with Config.NATS, on an external
// NATS (a cluster), each stage through its own server URL — feeds them
// from the Generator, waits for
// every consumer to drain and measures:
//
//   - events/s through each stage, from contain_events_in_total and
//     contain_events_out_total of the shared metrics value;
//   - end-to-end lag: event wall time → its row in ClickHouse (probe events,
//     looked up every ProbePoll), → alert published, → responder action;
//   - drops, malformed messages and errors (every non-zero series);
//   - JetStream consumer pending (NumPending + NumAckPending), sampled;
//   - Go heap and peak RSS; CPU time of this process, of ClickHouse and of
//     the rest of the machine (other work sharing the cores).
//
// Result.Check fails unless every published event is a distinct row in
// the events table (uniqExact(event_id)) and nothing was dropped. The
// command loadtest/cmd/loadtest prints the Result and exits non-zero then.
package loadtest
