package testenv

import (
	"strings"
	"testing"
)

func TestEnginesRunContainers(t *testing.T) {
	e := RequireEngines(t)
	d := e.DockerRun(t, "testenv-docker", []string{"--label", "io.contain.test=1"})
	if !strings.HasSuffix(d.Cgroup, d.ID) || d.Pid <= 0 || d.Name != "testenv-docker" {
		t.Fatalf("docker container: %+v", d)
	}
	if out, err := e.Docker("exec", d.ID, "/bin/cat", "/etc/passwd"); err != nil || !strings.HasPrefix(out, "root:") {
		t.Fatalf("docker exec: %q %v", out, err)
	}
	c := e.ContainerdRun(t, "testenv-ctd", nil)
	if c.Cgroup != "/"+EnginesNamespace+"/testenv-ctd" || c.Pid <= 0 {
		t.Fatalf("containerd container: %+v", c)
	}
}
