package testenv

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// StartNATSServer starts one nats-server process (no cluster) on loopback
// with JetStream in a directory of t.TempDir(), and waits until it takes
// connections: a server whose CPU is not the test process's (stage CPU
// benchmarks). It is killed at the end of the test.
func StartNATSServer(t testing.TB) *NATSNode {
	t.Helper()
	bin := natsServerBinary(t)
	dir := t.TempDir()
	ports := freePorts(t, 2) // client, monitoring
	conf := fmt.Sprintf(`server_name: solo
listen: 127.0.0.1:%d
http: 127.0.0.1:%d
max_payload: 8MB
jetstream { store_dir: %q, max_memory_store: 1GB, max_file_store: 4GB }
`, ports[0], ports[1], filepath.Join(dir, "js"))
	confFile := filepath.Join(dir, "solo.conf")
	if err := os.WriteFile(confFile, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	node := &NATSNode{Name: "solo", URL: fmt.Sprintf("nats://127.0.0.1:%d", ports[0]), httpPort: ports[1],
		logFile: filepath.Join(dir, "solo.log"), done: make(chan struct{})}
	logf, err := os.Create(node.logFile)
	if err != nil {
		t.Fatal(err)
	}
	node.cmd = exec.Command(bin, "-c", confFile)
	node.cmd.Stdout, node.cmd.Stderr = logf, logf
	if err := node.cmd.Start(); err != nil {
		logf.Close()
		t.Fatalf("starting nats-server: %v", err)
	}
	go func() { node.cmd.Wait(); logf.Close(); close(node.done) }()
	t.Cleanup(node.Kill)
	WaitForState(t, 30*time.Second, "nats-server taking connections", func() (bool, string) {
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", ports[0]), time.Second)
		if err != nil {
			return false, err.Error()
		}
		c.Close()
		return true, ""
	})
	return node
}
