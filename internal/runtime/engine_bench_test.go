package runtime

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/containsec/contain/internal/testenv"
)

// BenchmarkLookupUncached measures one container's metadata read without
// a cache, from each source, against the real test engines: the Docker
// Engine API (inspect, plus an image inspect when the manifest digest is
// not in the container), containerd (container get, task get, image get
// and the manifest read from its content store), and the on-disk readers
// for comparison.
func BenchmarkLookupUncached(b *testing.B) {
	e := testenv.RequireEngines(b)
	r := engineReader(b, e)
	d := e.DockerRun(b, "runtime-bench", []string{"--label", "team=payments"})
	c := e.ContainerdRun(b, "runtime-bench-ctd", []string{"--label", "team=payments"})
	dref, _ := FromCgroupPath(d.Cgroup)
	cref, _ := FromCgroupPath(c.Cgroup)
	ctx := context.Background()
	b.Run("docker-api", func(b *testing.B) {
		for b.Loop() {
			if _, err := r.Lookup(ctx, EngineDocker, "", dref.ID); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("containerd-api", func(b *testing.B) {
		for b.Loop() {
			if _, err := r.Lookup(ctx, EngineContainerd, cref.Namespace, cref.ID); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("docker-disk", func(b *testing.B) {
		sr := StateReader{DockerRoot: e.DockerRoot}
		for b.Loop() {
			if _, err := sr.Lookup(dref); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("containerd-disk", func(b *testing.B) {
		sr := StateReader{ContainerdTaskRoot: filepath.Join(filepath.Dir(e.Containerd), "containerd-state", "io.containerd.runtime.v2.task")}
		for b.Loop() {
			if _, err := sr.Lookup(cref); err != nil {
				b.Fatal(err)
			}
		}
	})
}
