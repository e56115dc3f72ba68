package collector

import (
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestConfigEngineKeys(t *testing.T) {
	for _, tc := range []struct {
		key  string
		edit func(*Config)
	}{
		{"collector.docker_host", func(c *Config) { c.DockerHost = "/run/docker.sock" }},
		{"collector.engine_timeout", func(c *Config) { c.DockerHost = "unix:///x.sock"; c.EngineTimeout = 0 }},
		{"collector.engine_timeout", func(c *Config) { c.ContainerdAddress = "/x.sock"; c.EngineTimeout = time.Minute }},
	} {
		c := DefaultConfig()
		c.Host = "h"
		tc.edit(&c)
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), tc.key) {
			t.Errorf("%s: error %v does not name it", tc.key, err)
		}
	}
	c := DefaultConfig()
	c.Host = "h"
	c.DockerHost, c.ContainerdAddress, c.EngineTimeout = "", "", 0
	if err := c.Validate(); err != nil {
		t.Fatalf("engines off, no timeout: %v", err)
	}
	st := Config{RuncRoot: "/r", DockerRoot: "/d", ContainerdState: "/s"}.stateReader()
	if st.RuncRoot != "/r" || st.DockerRoot != "/d" || st.ContainerdTaskRoot != "/s/io.containerd.runtime.v2.task" {
		t.Fatalf("state reader: %+v", st)
	}
}

// TestDefaultConfigEngineSockets: DefaultConfig asks an engine only when
// its socket exists (isSocket), never a regular file or a missing path.
func TestDefaultConfigEngineSockets(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "e.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if !isSocket(sock) || isSocket(dir) || isSocket(filepath.Join(dir, "missing.sock")) {
		t.Fatal("isSocket")
	}
	c := DefaultConfig()
	if (c.DockerHost != "") != isSocket(DefaultDockerSocket) || (c.ContainerdAddress != "") != isSocket(DefaultContainerdSocket) {
		t.Fatalf("defaults %q %q do not follow the sockets present", c.DockerHost, c.ContainerdAddress)
	}
}
