// Package bus is contain's transport: NATS with JetStream, embedded or
// external.
//
// It consumes and emits containv1.Batch messages (one NATS message carries
// one protobuf Batch of many events) and guarantees:
//
//   - Decode is a pure function; a message that fails to decode is counted
//     (contain_malformed_messages_total), logged once per stage, terminated
//     (never redelivered, still kept in the stream for forensics) and the
//     consumer goes on.
//   - Consume acknowledges a message only after its handler returned nil, so
//     a failing downstream (ClickHouse down) loses nothing: messages are
//     redelivered after a back-off.
//   - Batcher never blocks its producer: its queue is bounded and every event
//     it cannot take is counted by reason (contain_dropped_total).
//   - Every batch carries a Nats-Msg-Id, so a retried publish is stored once.
//   - Consume binds each batch to its subject's host (CheckHost): a batch
//     whose host, or one of whose events' host, is not the host of the
//     subject contain.v1.<kind>.<host> it arrived on is refused, counted
//     (contain_refused_total{stage,reason}), logged once per reason and
//     terminated. Per-host credentials may publish only their own host's
//     subjects, so one host cannot speak for another.
//   - StartEmbedded with users refuses anonymous clients.
package bus
