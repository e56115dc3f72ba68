// Package enricher is contain's enrichment stage.
//
// Consumes: CONTAIN_RAW (contain.v1.raw.<host>), every host, with the
// durable consumer "enricher". Container events (KIND_CONTAINER) carry the
// runtime's labels and OCI annotations, from which the image reference and
// digest are read (see RefLabels, DigestLabels).
//
// Emits: each input batch, same events in the same order, on
// contain.v1.events.<host> (CONTAIN_EVENTS), with image_ref, image_digest
// and profile_ref ("<image digest>@<profile version>") set on every event
// of a known container. Full declarations are stored once, not per event:
// NATS KV buckets contain_containers (host+container id -> image),
// contain_profiles (declared profiles by image digest) and contain_images
// (image declarations by digest); formats in schemas/profile.md. A
// compose-service profile that declares peers carries peer_addresses, the
// addresses of the peer services' known containers (from the container
// events' ContainerInfo.addresses); it is re-published as a new version,
// and set on the service's events, when a peer container appears.
// With enricher.fleet_batches (off by default) a fetch's output batches of
// one partition, of every host, go as the parts of one fleet batch on
// contain.v1.events.@fleet[.p<n>] (fleet.go, design 036); each part is the
// batch that would have gone alone.
//
// Guarantees:
//   - Events are relayed on the wire (docs/design/030-enricher-wire.md):
//     a raw batch is scanned and checked as decoding would check it
//     (bus.ScanBatch, bound to its subject's host), each event's bytes are
//     copied into its output batch followed by its container's enrichment
//     fields (the last occurrence of a field wins), and only container
//     events are decoded. A raw batch with a container dictionary (the
//     collector's, design 036) is read so too: an event's container
//     fields come from its entry (rawdict.go). What the scan leaves to
//     decoding is decoded
//     (bus.DecodeAliased), refused and counted as by every consumer, or
//     enriched decoded and re-encoded; both paths publish the same
//     batches (FuzzWireMatchesDecoded). What the enricher writes is made
//     UTF-8 when its container record is stored; records it keeps are
//     copies (ContainerImage.clone).
//   - A container's image (ref, digest, name) comes from
//     ContainerInfo.image_ref/image_digest/name, which the collector reads
//     from the runtime only, whenever they are set; labels are read only
//     when they are absent (a collector predating them). A label never
//     overrides the runtime's digest (counted as
//     dropped{reason="label_digest_overridden"}), and a container whose
//     identity came from the runtime keeps it when a later record has
//     labels only (IdentityOf, docs/security.md).
//   - An input batch is acknowledged only after its output batch is stored
//     by JetStream (and a container record it carries is in KV: the
//     records of a fetch are published with its output batches and
//     awaited with them, docs/design/035-relay.md). A redelivered input
//     is republished with the same Nats-Msg-Id, so the output stream
//     stores it once.
//   - Events are never delayed by image resolution nor dropped: an event of
//     an unknown container passes through unenriched and is counted
//     (contain_enricher_events_total{result="unknown_container"}). Image
//     declarations are resolved by background workers from a bounded queue
//     (a full queue is counted in contain_dropped_total).
//   - A restarted enricher loads every container record from KV before it
//     consumes, so it still enriches containers whose container event it
//     acknowledged earlier.
//   - Bad input (a malformed batch, container record, image config,
//     Dockerfile or compose file, an unreachable registry) is counted and
//     never stops the stage.
//   - It reads nothing from the host: it runs unprivileged, anywhere that
//     reaches NATS (and, for declarations, the registries and files it is
//     configured with).
package enricher
