package responder

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/containsec/contain/internal/freezer"
	"github.com/containsec/contain/internal/logfields"
)

// methodsFor is the configured order of freeze methods for t's runtime.
func (r *Responder) methodsFor(t *freezer.Target) []freezer.Method {
	names := r.cfg.methodsFor(t.Runtime)
	out := make([]freezer.Method, 0, len(names))
	for _, n := range names {
		if m := r.named[n]; m != nil {
			out = append(out, m)
		}
	}
	return out
}

// candidates are the methods asked whether t is frozen, and by whom: the
// runtime's order, then every other method (so a container a human paused
// with `docker pause` is recognised, and thawed through docker, whatever
// the order says).
func (r *Responder) candidates(t *freezer.Target) []freezer.Method {
	out := r.methodsFor(t)
	for _, n := range freezer.KnownMethods() {
		if m := r.named[n]; m != nil && !slices.ContainsFunc(out, func(o freezer.Method) bool { return o.Name() == n }) {
			out = append(out, m)
		}
	}
	return out
}

// exitedPerEngine asks the Docker Engine about a container that Locate did
// not find (dockerd removes an exited container's cgroup and runc state):
// an error wrapping freezer.ErrExited when docker knows it and says it is
// not running, nil otherwise.
func (r *Responder) exitedPerEngine(ctx context.Context, id string) error {
	if r.docker == nil {
		return nil
	}
	c, err := r.docker.Inspect(ctx, id)
	if err != nil || c.Running {
		return nil
	}
	return fmt.Errorf("%w: docker %s reports %s not running (no cgroup left)", freezer.ErrExited, r.docker.Host(), id)
}

// logMethods says once, at start, which freeze methods each runtime's
// containers get, and whether the engines answer.
func (r *Responder) logMethods(ctx context.Context) {
	status := func(enabled bool, addr string, ping func(context.Context) error) string {
		if !enabled {
			return "disabled"
		}
		if err := ping(ctx); err != nil {
			return "unreachable (" + err.Error() + "): its containers fall back to the cgroup methods"
		}
		return "answers at " + addr
	}
	dockerStatus := status(r.docker != nil, r.cfg.DockerHost, func(ctx context.Context) error { return r.docker.Ping(ctx) })
	containerdStatus := status(r.containerd != nil, r.cfg.ContainerdAddress, func(ctx context.Context) error {
		_, err := r.containerd.Version(ctx)
		return err
	})
	r.log.Info("cgroup layout", logfields.Roots, r.layout, logfields.FreezerV1, r.cfg.FreezerRoot, logfields.Cgroup2, r.cfg.Cgroup2Root)
	r.log.Info("freeze methods",
		logfields.RuncAndOther, strings.Join(r.cfg.Methods, ","),
		logfields.Docker, strings.Join(r.cfg.methodsFor(freezer.RuntimeDocker), ","), logfields.DockerEngine, dockerStatus,
		logfields.Containerd, strings.Join(r.cfg.methodsFor(freezer.RuntimeContainerd), ","), logfields.ContainerdEngine, containerdStatus)
}

func (r *Responder) closeEngines() {
	if r.docker != nil {
		_ = r.docker.Close()
	}
	if r.containerd != nil {
		_ = r.containerd.Close()
	}
}
