// Package kvdoc holds the NATS KV document formats that stages share: the
// bucket names, the key codecs, the declared profile (written by the
// enricher, read by the analyzer and the store; schemas/profile.md) and
// the baseline document (written by the analyzer and by operators' manual
// operations, read by the analyzer and the store).
//
// It is a leaf: it imports no stage, so that no stage imports another
// (scripts/check-stages.sh). Decoders here are pure and fuzzed; what a
// stage does with a document (seeding, scoring, rows) stays in the stage.
//
// Keys:
//   - contain_containers: ContainerKey(host, container id).
//   - contain_images: DigestKey(image digest).
//   - contain_profiles: DigestKey(image digest) for an image's profile,
//     ProfileKey(digest, version) for every version (and for a compose
//     service's profile).
//   - contain_baselines: EscapeKey(baseline key).
package kvdoc
