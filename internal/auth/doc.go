// Package auth is who may do what on contain's NATS: the permission table
// (roles → publish/subscribe allow lists), the credentials that prove a
// role (nkey seed files), and the signatures that prove an operator's
// identity to the stage acting on a request.
//
// It consumes the stages' consumer and bucket names (Names) and emits:
//
//   - Table: the users of a set of hosts with their permissions; the
//     embedded server (ServerUsers) and deploy/nats/contain.conf
//     (WriteConf) are both made from it, so they cannot drift.
//   - Ensure/LoadSeed: per-user credential files (<dir>/<user>.nk, 0600
//     root; operator and reader 0640 root:<group> when the group exists).
//   - Signer/Verifier: ed25519 envelopes over a request, its purpose, the
//     signer's name and OS user, a time and a nonce.
//
// It guarantees:
//
//   - A per-host user (collector-<host>, responder-<host>) is granted only
//     its own host's subjects and consumers.
//   - A user allowed ephemeral consumers on a stream is denied every named
//     durable of another user there.
//   - Verify refuses, with a reason (RefusedError), an envelope that is
//     malformed, unsigned, signed by an unknown key, forged, for another
//     purpose, outside the time window, or seen before.
package auth
