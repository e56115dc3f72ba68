// Package freezer locates a container's cgroups and freezes or thaws it
// through the host's means, verifying the result.
//
// Locate reads the runtimes' state only (runc's <root>/<id>/state.json, the
// same file in dockerd's runc root and in containerd's
// <root>/<namespace>/<id>); the state's directory tells the Target's
// runtime (docker, containerd and its namespace, runc), and the cgroup
// paths, init pid and its start time are the runtime's record. The cgroup
// tree is never searched by name. LocateByPid builds a Target from the
// init pid an engine's API reports. Prove must pass before anything acts
// on a Target: a runtime knows it, its cgroup is below the mount and named
// after the container (never the root cgroup, a slice, a service or a
// scope that is not a container's), holds the recorded init (same start
// time) and neither holds nor is an ancestor of a Protected process or
// cgroup; otherwise a *RefusedError (ErrRefused) says why. A Method
// freezes one way:
//
//   - cgroup-v1-freezer: freezer.state <- FROZEN, polled until FROZEN;
//   - cgroup-v2-freeze: cgroup.freeze <- 1, polled until cgroup.events
//     says "frozen 1";
//   - runc-pause: `runc pause`, verified through `runc state`;
//   - docker-pause: the Docker Engine API's pause, verified through the
//     engine (State.Paused) and the cgroup (frozen, still populated);
//   - containerd-pause: containerd's task service, verified through the
//     task (PAUSED) and the cgroup.
//
// The engine methods apply only to their runtime's containers; a method
// that froze must also thaw (FrozenBy names the engine when one reports
// the container paused), or the engine keeps saying Paused.
//
// Guarantees: Freeze returns nil only after the freeze was observed and the
// cgroup still holds at least one process (an empty cgroup "freezes" too,
// which would hide a container that exited); on any failure it leaves the
// container thawed and returns an error wrapping one of the Err* sentinels
// so callers can count failures by kind (an engine that cannot be reached
// or refuses is ErrEngine, and the next method is tried; a container whose
// cgroup is empty or gone is ErrExited, and no other method is tried).
// Nothing here logs.
package freezer
