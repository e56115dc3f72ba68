// Package console is contain's web console: a server-rendered application
// (net/http, html/template, embedded assets, no CDN, no build step) for the
// people who answer contain's alerts.
//
// Views:
//   - Now: live alerts and actions (server-sent events), filtered by host,
//     image, namespace and severity, paginated.
//   - Quarantine: every frozen container across hosts, with why (reasons,
//     score, ATT&CK ids), when, by which method, and the forensic snapshot
//     the responder took; Release with a required reason, optionally
//     approved by a second operator.
//   - Container: the alerts and actions of one container, with its process
//     tree from the snapshot.
//   - Baselines: learned and declared per image; lock and unlock.
//   - Health: stage readiness, drops and lag, from the metrics.
//
// Contract: the console consumes contain.v1 alert and action events (fed to
// a Feed by its caller) and acts only through a Backend its caller
// provides (the responder's signed control requests, the baselines
// bucket). It imports no stage. Every state change needs a logged-in
// operator, a CSRF token bound to the session and a same-origin request;
// analysts (role "analyst") read only. The actor recorded for a release is
// the logged-in user, vouched for by the console's operator credential.
package console
