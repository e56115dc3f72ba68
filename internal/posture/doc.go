// Package posture audits what a host's container engines run and hold.
//
// Consumes: the engines' own APIs (Docker Engine, containerd in every
// namespace, podman's CLI): each running container's configuration
// (root filesystem read-only or not, mounts, user), and every tagged
// image, exported to a docker-save tarball for the enricher's image audit.
//
// Emits: per container and policy a Result (verdict pass or fail, with
// findings); the images of the inventory. contain audit renders them and
// stores them (container_audits, image_audits).
//
// Guarantees: Evaluate is pure. An engine that does not answer is an
// error of its own, returned with the results of the others, never a
// silent gap. A container docker runs is audited once, through docker
// (its containerd namespace "moby" is skipped when docker is asked).
package posture
