// Package bus is contain's transport: NATS with JetStream, embedded or
// external.
//
// It consumes and emits containv1.Batch messages (one NATS message carries
// one protobuf Batch of many events) and guarantees:
//
//   - Decode and DecodeAliased accept exactly what proto.Unmarshal accepts
//     (invalid UTF-8 in a string refused; FuzzDecodeMatchesProto). With
//     ConsumerConfig.AliasPayload the handler's batches point into the
//     messages' payloads (no copy of each string): it must clone what it
//     keeps past its call (the enricher, the analyzer). With
//     ConsumerConfig.ReuseEvents the events, bodies and processes are
//     decoded into storage reused from fetch to fetch (Arena, one
//     validating walk; it accepts and reads exactly what DecodeAliased
//     does, FuzzArenaMatchesDecode): the handler keeps none of them (the
//     analyzer).
//   - Decode is a pure function; a message that fails to decode is counted
//     (contain_malformed_messages_total), logged once per stage, terminated
//     (never redelivered, still kept in the stream for forensics) and the
//     consumer goes on.
//   - Consume acknowledges a message only after its handler returned nil, so
//     a failing downstream (ClickHouse down) loses nothing: messages are
//     redelivered after a back-off.
//   - An Eager consumer (the detection path) fetches from a long pull: one
//     subscription and pull requests kept open, so a message costs a
//     delivery and an ack, not a pull round trip. What it buffered is
//     Nak'd when it stops (ConsumerConfig.Stop, ctx) or backs off, and so
//     redelivered at once, to the next owner of an analyzer partition
//     too, not after AckWait (design 032). With ConsumerConfig.Linger a
//     busy Eager consumer waits that long after a fetch's first message
//     for more; a quiet one never waits.
//   - Consume splits fleet messages as ConsumeMessages does (below), and
//     skips a part it acknowledged before (the enricher published its
//     fetch again, regrouped: partsseen.go), counted as
//     contain_dropped_total{reason="duplicate"}.
//   - ConsumeMessages keeps these guarantees for a handler that decodes
//     a fetch message by message itself (Messages.Batch), so a sink never
//     holds a fetch decoded at once (the store); a malformed or
//     wrong-host message is refused when first decoded. A fleet message
//     (containv1.SchemaVersionFleet on a fleet subject, design 036) is
//     split (FleetParts) before anything is decoded: each part is an item
//     read as if alone on its host's subject (CheckFleetPart). A refused
//     part is counted as a refused message is, without terminating its
//     message; a failed fleet message is retried with all its parts.
//   - Messages.PublishAll (a ConsumeMessages handler that republishes
//     what it consumes: the enricher) publishes through the consumer's
//     relay (docs/design/035-relay.md): stream acks read from one inbox by
//     the handler's goroutine; a publish not acknowledged as stored is
//     published again (same Nats-Msg-Id) as PublishAll does. The fetch's
//     acknowledgements are then deferred to the write of the next
//     fetch's publishes, and written at once when a fetch comes back
//     empty, a handler does not publish or fails, and when the consumer
//     ends: a message is still acknowledged only after its handler
//     succeeded and its output was stored.
//   - A failed fetch is retried message by message, so one poison batch
//     holds back none of the others. A message its handler failed on
//     MaxDeliver times (nats.max_deliver, default 5) while succeeding on
//     others, or panicked on (recovered; stack logged once per consumer),
//     is copied to the CONTAIN_DLQ stream (contain.v1.dlq.<stage>.<subject>,
//     headers naming subject, stage, reason, error, deliveries), then
//     terminated; counted (contain_dead_lettered_total{stage,reason}) and
//     logged. A downstream failing on everything dead-letters nothing. A
//     copy that fails keeps the message. ListDLQ, ReplayDLQ (contain dlq).
//   - Publish classifies errors (classify): transient ones are retried
//     with back-off, counted (contain_publish_retries_total{stage,reason})
//     and logged once a minute per cause, and a minute of retries sets
//     contain_publish_stalled; permanent ones (max_payload, permission,
//     no_stream, too_large, ...) are counted
//     (contain_publish_failed_total{stage,reason}), logged once per cause
//     and returned at once. The counters come from the Reporter in the
//     context (WithReporter); without one nothing is counted.
//   - Messages removed from a stream (max_age, max_bytes) before a consumer
//     received them are counted (contain_expired_total{stream,durable})
//     and logged: exactly for an unfiltered consumer; at most what was
//     pending for it for a filtered one.
//   - Each consumer exports its lag (contain_consumer_lag) and its oldest
//     unacknowledged message's age (contain_consumer_oldest_unacked_seconds)
//     and reports them to the Reporter's Health against its bounds;
//     Health.ReadyHandler serves /readyz (NATSCheck: connected, JetStream
//     answering within a bound).
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
