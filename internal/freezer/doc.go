// Package freezer locates a container's cgroups and freezes or thaws it
// through the host's means, verifying the result.
//
// Locate reads the runtime's state (runc's <root>/<id>/state.json
// cgroup_paths) and falls back to searching the cgroup mounts for a
// directory named after the container. A Method freezes one way:
//
//   - cgroup-v1-freezer: freezer.state <- FROZEN, polled until FROZEN;
//   - cgroup-v2-freeze: cgroup.freeze <- 1, polled until cgroup.events
//     says "frozen 1";
//   - runc-pause: `runc pause`, verified through `runc state`.
//
// Guarantees: Freeze returns nil only after the freeze was observed and the
// cgroup still holds at least one process (an empty cgroup "freezes" too,
// which would hide a container that exited); on any failure it leaves the
// container thawed and returns an error wrapping one of the Err* sentinels
// so callers can count failures by kind. Nothing here logs.
package freezer
