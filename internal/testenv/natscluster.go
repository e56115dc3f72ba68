package testenv

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// natsServerModule is the nats-server module of go.mod, built once into a
// binary the cluster nodes exec.
const natsServerModule = "github.com/nats-io/nats-server/v2"

// NATSNode is one nats-server process of a NATSCluster.
type NATSNode struct {
	Name string
	// URL is the node's client URL (nats://127.0.0.1:port).
	URL      string
	httpPort int
	cmd      *exec.Cmd
	logFile  string
	done     chan struct{}
}

// NATSCluster is a cluster of real nats-server processes on loopback,
// routed to each other, each with JetStream in a store directory of its
// own.
type NATSCluster struct {
	Nodes []*NATSNode
}

// URLs is every node's client URL, comma-separated (a nats.Connect URL).
func (c *NATSCluster) URLs() string {
	u := make([]string, len(c.Nodes))
	for i, n := range c.Nodes {
		u[i] = n.URL
	}
	return strings.Join(u, ",")
}

var (
	natsBinOnce sync.Once
	natsBin     string
	natsBinErr  error
)

// natsServerBinary builds the nats-server of go.mod (its version from
// `go list -m`) once per version into the temporary directory (offline:
// the module is in the module cache) and returns its path.
func natsServerBinary(t testing.TB) string {
	t.Helper()
	natsBinOnce.Do(func() {
		out, err := exec.Command("go", "list", "-m", "-f", "{{.Version}}", natsServerModule).Output()
		if err != nil {
			natsBinErr = fmt.Errorf("nats-server version: %w", err)
			return
		}
		version := strings.TrimSpace(string(out))
		natsBin = filepath.Join(os.TempDir(), "contain-test-nats-server-"+version)
		if _, err := os.Stat(natsBin); err == nil {
			return
		}
		tmp := fmt.Sprintf("%s.%d", natsBin, os.Getpid())
		out, err = exec.Command("go", "build", "-o", tmp, natsServerModule).CombinedOutput()
		if err != nil {
			natsBinErr = fmt.Errorf("building nats-server: %v: %s", err, out)
			return
		}
		natsBinErr = os.Rename(tmp, natsBin)
	})
	if natsBinErr != nil {
		t.Fatal(natsBinErr)
	}
	return natsBin
}

// freePorts returns n distinct free TCP ports on loopback.
func freePorts(t testing.TB, n int) []int {
	t.Helper()
	ls := make([]net.Listener, n)
	ports := make([]int, n)
	for i := range ls {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ls[i] = l
		ports[i] = l.Addr().(*net.TCPAddr).Port
	}
	for _, l := range ls {
		l.Close()
	}
	return ports
}

// StartNATSCluster starts n nats-server processes on loopback, routed to
// each other (cluster "contain-test"), each with JetStream in a directory
// of t.TempDir(), and waits until every node agrees on a JetStream meta
// leader. The processes are killed at the end of the test; when the test
// failed, the tail of each node's log is logged.
func StartNATSCluster(t testing.TB, n int) *NATSCluster {
	t.Helper()
	bin := natsServerBinary(t)
	dir := t.TempDir()
	ports := freePorts(t, 3*n) // client, cluster, monitoring
	routes := make([]string, n)
	for i := range n {
		routes[i] = fmt.Sprintf("nats-route://127.0.0.1:%d", ports[3*i+1])
	}
	c := &NATSCluster{}
	for i := range n {
		name := fmt.Sprintf("n%d", i)
		store := filepath.Join(dir, name)
		conf := fmt.Sprintf(`server_name: %s
listen: 127.0.0.1:%d
http: 127.0.0.1:%d
max_payload: 8MB
jetstream { store_dir: %q, max_memory_store: 256MB, max_file_store: 4GB }
cluster {
  name: contain-test
  listen: 127.0.0.1:%d
  routes: [%s]
}
`, name, ports[3*i], ports[3*i+2], store, ports[3*i+1], strings.Join(routes, ", "))
		confFile := filepath.Join(dir, name+".conf")
		if err := os.WriteFile(confFile, []byte(conf), 0o600); err != nil {
			t.Fatal(err)
		}
		node := &NATSNode{Name: name, URL: fmt.Sprintf("nats://127.0.0.1:%d", ports[3*i]), httpPort: ports[3*i+2],
			logFile: filepath.Join(dir, name+".log"), done: make(chan struct{})}
		logf, err := os.Create(node.logFile)
		if err != nil {
			t.Fatal(err)
		}
		node.cmd = exec.Command(bin, "-c", confFile)
		node.cmd.Stdout, node.cmd.Stderr = logf, logf
		if err := node.cmd.Start(); err != nil {
			logf.Close()
			t.Fatalf("starting nats-server %s: %v", name, err)
		}
		go func() { node.cmd.Wait(); logf.Close(); close(node.done) }()
		c.Nodes = append(c.Nodes, node)
	}
	t.Cleanup(func() {
		for _, node := range c.Nodes {
			node.Kill()
			if t.Failed() {
				b, _ := os.ReadFile(node.logFile)
				if len(b) > 4000 {
					b = b[len(b)-4000:]
				}
				t.Logf("nats-server %s log (tail):\n%s", node.Name, b)
			}
		}
	})
	WaitForState(t, 60*time.Second, "a JetStream meta leader all nodes agree on", func() (bool, string) {
		var leader string
		for _, node := range c.Nodes {
			l, peers, err := node.metaLeader()
			if err != nil {
				return false, err.Error()
			}
			if l == "" || (leader != "" && l != leader) {
				return false, fmt.Sprintf("%s: meta leader %q (others: %q)", node.Name, l, leader)
			}
			if l == node.Name && peers != n-1 {
				return false, fmt.Sprintf("%s: meta leader with %d current peers of %d", node.Name, peers, n-1)
			}
			leader = l
		}
		return true, ""
	})
	return c
}

// metaLeader is the JetStream meta leader the node knows ("" if none)
// and, on the leader, how many of its peers are current.
func (n *NATSNode) metaLeader() (string, int, error) {
	cl := http.Client{Timeout: 2 * time.Second}
	resp, err := cl.Get(fmt.Sprintf("http://127.0.0.1:%d/jsz", n.httpPort))
	if err != nil {
		return "", 0, fmt.Errorf("%s: %w", n.Name, err)
	}
	defer resp.Body.Close()
	var buf bytes.Buffer
	if _, err := buf.ReadFrom(resp.Body); err != nil {
		return "", 0, fmt.Errorf("%s: %w", n.Name, err)
	}
	var jsz struct {
		Meta *struct {
			Leader   string `json:"leader"`
			Replicas []struct {
				Current bool `json:"current"`
			} `json:"replicas"`
		} `json:"meta_cluster"`
	}
	if err := json.Unmarshal(buf.Bytes(), &jsz); err != nil {
		return "", 0, fmt.Errorf("%s: /jsz: %w", n.Name, err)
	}
	if jsz.Meta == nil {
		return "", 0, nil
	}
	current := 0
	for _, r := range jsz.Meta.Replicas {
		if r.Current {
			current++
		}
	}
	return jsz.Meta.Leader, current, nil
}

// Kill kills the node with SIGKILL (no shutdown, no flush) and waits for
// the process to be gone. Killing a dead node does nothing.
func (n *NATSNode) Kill() {
	select {
	case <-n.done:
		return
	default:
	}
	_ = n.cmd.Process.Kill()
	<-n.done
}

// Pid is the node's process id (its CPU and memory are in /proc/<pid>).
func (n *NATSNode) Pid() int { return n.cmd.Process.Pid }
