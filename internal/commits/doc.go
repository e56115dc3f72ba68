// Package commits traces commits of containers into images.
//
// Consumes: the engines' own event streams — the Docker Engine events API
// (container "commit", whose attributes name the new image), podman's
// events (`podman events`, container "commit"; the new image is the
// newest image whose parent is the container's image), and containerd's
// events service (topic /images/create in every namespace: a pull,
// import, tag or a client's commit such as `nerdctl commit`; containerd
// does not say which, so these carry no source container).
//
// Emits: one contain.v1.Event of KIND_COMMIT per commit, through the
// Publish function it is given (contain publishes them on the collector's
// raw subject, so the enricher, analyzer and store see them like any
// other event). The envelope names the source container and its image;
// the body names the new image, the author and comment, the writable
// layer's diff summary (from the engine's diff API, read when the commit
// is reported: the container still exists then) and the lineage (the new
// image's ancestors, nearest first, from the engine's parent chain).
//
// Guarantees: an engine that is not reachable is retried every
// Config.Retry and logged once per outage; a commit reported while an
// engine's stream was down is lost (counted in Stats.Reconnects). Paths in
// a diff are bounded (Config.MaxPaths) and made valid UTF-8.
package commits
