// Package engines talks to the container engines' APIs: the Docker Engine
// API (github.com/moby/moby/client) and containerd's gRPC services
// (github.com/containerd/containerd/api, without containerd's client
// library). It reads what identifies a container (name, image reference
// and digest, labels, pod annotations) and pauses and resumes containers
// the way the engine itself does, so `docker ps` and `ctr tasks ls` agree
// with what contain did.
//
// Every call takes a context and is bounded by the client's timeout; every
// error names the engine and its address. Nothing here logs or retries:
// callers (the collector's identity cache, the responder's freezer) decide.
package engines
