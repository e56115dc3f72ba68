package testenv

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// ClickHouseClusterConfig shapes a ClickHouseCluster.
type ClickHouseClusterConfig struct {
	// Name is the cluster's name in remote_servers.
	Name string
	// Shards and Replicas (per shard) give Shards*Replicas servers.
	Shards, Replicas int
	// ZooKeeper is a host:port every server uses (Replicated tables,
	// distributed DDL); empty: none.
	ZooKeeper string
}

// ClickHouseCluster is a set of ClickHouse servers on loopback, started by
// deploy/clickhouse/start.sh, each in a run directory of its own and with
// the same remote_servers cluster.
type ClickHouseCluster struct {
	Name string
	// Addrs are the servers' native addresses, shard by shard, replica by
	// replica (node i is shard i/Replicas+1, replica i%Replicas+1).
	Addrs []string
	runs  []string
}

// CPU is the CPU time (user + system) the servers have used so far, from
// /proc/<pid>/stat (clock ticks of 10 ms).
func (c *ClickHouseCluster) CPU(t testing.TB) time.Duration {
	var total time.Duration
	for _, run := range c.runs {
		b, err := os.ReadFile(filepath.Join(run, "clickhouse.pid"))
		if err != nil {
			t.Fatal(err)
		}
		stat, err := os.ReadFile("/proc/" + strings.TrimSpace(string(b)) + "/stat")
		if err != nil {
			t.Fatal(err)
		}
		s := string(stat)
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
		// Fields after the command: state is [0], utime [11], stime [12].
		ut, _ := strconv.ParseInt(f[11], 10, 64)
		st, _ := strconv.ParseInt(f[12], 10, 64)
		total += time.Duration(ut+st) * 10 * time.Millisecond
	}
	return total
}

// Kill kills node i (SIGKILL), as a crashed server.
func (c *ClickHouseCluster) Kill(t testing.TB, i int) { killClickHouse(t, c.runs[i]) }

// StartClickHouseCluster starts the servers (stopped when the test ends).
// Each has macros {shard} (01, 02, ...) and {replica} (r1, r2, ...) and,
// with replicas, an interserver port; shards set internal_replication when
// they have replicas (the Replicated tables copy the rows).
func StartClickHouseCluster(t testing.TB, cfg ClickHouseClusterConfig) *ClickHouseCluster {
	t.Helper()
	RequireCommand(t, "clickhouse-server")
	RequireCommand(t, "clickhouse-client")
	start := filepath.Join(RepoRoot(t), "deploy", "clickhouse", "start.sh")
	n := cfg.Shards * cfg.Replicas
	type srv struct{ tcp, http, inter int }
	srvs := make([]srv, n)
	ports := freePorts(t, 3*n)
	for i := range srvs {
		srvs[i] = srv{ports[3*i], ports[3*i+1], ports[3*i+2]}
	}
	var remote strings.Builder
	fmt.Fprintf(&remote, "<remote_servers><%s>", cfg.Name)
	for s := range cfg.Shards {
		remote.WriteString("<shard>")
		if cfg.Replicas > 1 {
			remote.WriteString("<internal_replication>true</internal_replication>")
		}
		for r := range cfg.Replicas {
			fmt.Fprintf(&remote, "<replica><host>127.0.0.1</host><port>%d</port></replica>", srvs[s*cfg.Replicas+r].tcp)
		}
		remote.WriteString("</shard>")
	}
	fmt.Fprintf(&remote, "</%s></remote_servers>", cfg.Name)
	c := &ClickHouseCluster{Name: cfg.Name}
	dir := t.TempDir()
	t.Cleanup(func() { killClickHouse(t, c.runs...) })
	for i, p := range srvs {
		run := filepath.Join(dir, fmt.Sprintf("n%d", i+1))
		confD := filepath.Join(dir, fmt.Sprintf("n%d.d", i+1))
		if err := os.MkdirAll(confD, 0o755); err != nil {
			t.Fatal(err)
		}
		x := "<?xml version=\"1.0\"?>\n<yandex>\n" + remote.String() + "\n" +
			fmt.Sprintf("<macros><shard>%02d</shard><replica>r%d</replica></macros>\n", i/cfg.Replicas+1, i%cfg.Replicas+1) +
			fmt.Sprintf("<interserver_http_port>%d</interserver_http_port><interserver_http_host>127.0.0.1</interserver_http_host>\n", p.inter)
		if cfg.ZooKeeper != "" {
			host, port, _ := net.SplitHostPort(cfg.ZooKeeper)
			x += fmt.Sprintf("<zookeeper><node><host>%s</host><port>%s</port></node><session_timeout_ms>10000</session_timeout_ms></zookeeper>\n", host, port) +
				"<distributed_ddl><path>/clickhouse/task_queue/ddl</path></distributed_ddl>\n"
		}
		x += "</yandex>\n"
		if err := os.WriteFile(filepath.Join(confD, "cluster.xml"), []byte(x), 0o644); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command("sh", start, run)
		cmd.Env = append(os.Environ(), fmt.Sprintf("CH_PORT=%d", p.tcp), fmt.Sprintf("CH_HTTP_PORT=%d", p.http),
			"CH_CONFIG_D="+confD, "CH_WAIT=30")
		out, err := cmd.CombinedOutput()
		c.runs = append(c.runs, run)
		if err != nil {
			t.Fatalf("starting clickhouse node %d: %v: %s", i+1, err, out)
		}
		c.Addrs = append(c.Addrs, fmt.Sprintf("127.0.0.1:%d", p.tcp))
	}
	return c
}

// killClickHouse kills the servers start.sh started in runs (their pid
// files) and waits until they are gone: the data is thrown away, and 18.16
// takes seconds to stop cleanly (deploy/clickhouse/stop.sh).
func killClickHouse(t testing.TB, runs ...string) {
	var pids []int
	for _, run := range runs {
		b, err := os.ReadFile(filepath.Join(run, "clickhouse.pid"))
		if err != nil {
			continue
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil || pid <= 0 {
			continue
		}
		if syscall.Kill(pid, syscall.SIGKILL) == nil {
			pids = append(pids, pid)
		}
		os.Remove(filepath.Join(run, "clickhouse.pid"))
	}
	deadline := time.Now().Add(10 * time.Second)
	for _, pid := range pids {
		for alive(pid) {
			if time.Now().After(deadline) {
				t.Errorf("clickhouse pid %d still alive after SIGKILL", pid)
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

// alive tells whether pid exists and is not a zombie.
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] != 'Z'
}

// zooKeeperJar is Debian's ZooKeeper (apt-get install zookeeper; it brings
// a Java runtime).
const zooKeeperJar = "/usr/share/java/zookeeper.jar"

// StartZooKeeper starts a standalone ZooKeeper on a loopback port, with its
// data in the test's temporary directory, waits until it answers "imok"
// and returns its host:port. It is killed when the test ends.
func StartZooKeeper(t testing.TB) string {
	t.Helper()
	java := RequireCommand(t, "java")
	if _, err := os.Stat(zooKeeperJar); err != nil {
		Unavailable(t, "ZooKeeper ("+zooKeeperJar+"): run scripts/setup.sh")
	}
	dir := t.TempDir()
	port := freePorts(t, 1)[0]
	cfg := fmt.Sprintf("tickTime=500\ndataDir=%s\nclientPort=%d\nclientPortAddress=127.0.0.1\nadmin.enableServer=false\n4lw.commands.whitelist=ruok\n",
		filepath.Join(dir, "data"), port)
	if err := os.WriteFile(filepath.Join(dir, "zoo.cfg"), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	logf, err := os.Create(filepath.Join(dir, "zookeeper.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(java, "-Xmx128m", "-XX:+UseSerialGC", "-Dzookeeper.log.dir="+dir,
		"-cp", zooKeeperJar+":/etc/zookeeper/conf",
		"org.apache.zookeeper.server.quorum.QuorumPeerMain", filepath.Join(dir, "zoo.cfg"))
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); logf.Close(); close(done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-done
	})
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-done:
			b, _ := os.ReadFile(filepath.Join(dir, "zookeeper.log"))
			t.Fatalf("zookeeper exited during start-up: %s", b)
		default:
		}
		if zkOK(addr) {
			return addr
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("zookeeper on %s not answering after 30s", addr)
	return ""
}

// zkOK asks ZooKeeper "ruok".
func zkOK(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return false
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte("ruok")); err != nil {
		return false
	}
	line, _ := bufio.NewReader(c).ReadString('\n')
	return strings.HasPrefix(line, "imok")
}
