package store

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/containsec/contain/internal/bus"
	"github.com/containsec/contain/internal/metrics"
	"github.com/containsec/contain/internal/testenv"
	"github.com/containsec/contain/schemas/containv1"
)

// clusterConfig is a store config on cluster c in database db (the
// servers and their data go when the test ends).
func clusterConfig(c *testenv.ClickHouseCluster, db, write string) Config {
	cfg := DefaultConfig()
	cfg.Addr = c.Addrs
	cfg.Database = db
	cfg.Cluster.Name = c.Name
	cfg.Cluster.Write = write
	cfg.InsertTimeout = 10 * time.Second
	cfg.AckWait = 30 * time.Second
	cfg.DialTimeout = 2 * time.Second
	return cfg
}

// nodeConn opens a session on one node's database.
func nodeConn(t *testing.T, addr, db string) driver.Conn {
	t.Helper()
	conn, err := clickhouse.Open(&clickhouse.Options{Addr: []string{addr}, Auth: clickhouse.Auth{Database: db}, Settings: settings})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

func nodeUint(t *testing.T, conn driver.Conn, q string) uint64 {
	t.Helper()
	var n uint64
	if err := conn.QueryRow(context.Background(), q).Scan(&n); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	return n
}

// clusterBatches is containers containers on two hosts, each with the
// seven sample events, an alert and an action.
func clusterBatches(containers int, base time.Time) []*containv1.Batch {
	ids := containv1.NewIDGen()
	var batches []*containv1.Batch
	for c := range containers {
		host := fmt.Sprintf("host-%d", c%2)
		cid := fmt.Sprintf("%064x", c+1)
		evs := sampleEvents(ids, cid, base)
		evs = append(evs,
			&containv1.Event{Id: ids.Next(), ContainerId: cid, ImageRef: "img", WallNs: base.Add(8 * time.Second).UnixNano(),
				Kind: containv1.Kind_KIND_ALERT, Body: &containv1.Event_Alert{Alert: &containv1.Alert{Score: 0.9, Rule: "r"}}},
			&containv1.Event{Id: ids.Next(), ContainerId: cid, WallNs: base.Add(9 * time.Second).UnixNano(),
				Kind: containv1.Kind_KIND_ACTION, Body: &containv1.Event_Action{Action: &containv1.Action{Type: containv1.Action_TYPE_PAUSE}}})
		for _, ev := range evs {
			ev.Host = host
		}
		batches = append(batches, bus.NewProducer(host, "test").Batch(evs))
	}
	return batches
}

// TestClusterTwoShards runs the store on two real ClickHouse servers, a
// cluster of two shards: the migrations create <table>_local and the
// Distributed <table> on both; in each write mode the rows land on both
// shards, each container's rows on the one shard its sharding key names
// (so the store's own sharding agrees with ClickHouse's cityHash64), the
// Distributed tables total what was written, a redelivery adds nothing
// (the duplicate lookup reads through the Distributed tables), and
// store.Reader and the lineage JOIN run unchanged over them.
func TestClusterTwoShards(t *testing.T) {
	c := testenv.StartClickHouseCluster(t, testenv.ClickHouseClusterConfig{Name: "contain", Shards: 2, Replicas: 1})
	t.Run("schema.sql", func(t *testing.T) { testSchemaByHand(t, c) })
	for _, write := range []string{WriteDistributed, WriteLocal} {
		t.Run(write, func(t *testing.T) {
			cfg := clusterConfig(c, "contain_cluster_"+write, write)
			s := openStore(t, cfg)
			ctx := context.Background()
			const containers = 40
			base := time.Now().Add(-time.Hour).Truncate(time.Second)
			batches := clusterBatches(containers, base)
			m := metrics.New()
			if err := s.Insert(ctx, m, batches...); err != nil {
				t.Fatal(err)
			}
			const perContainer = 7
			for _, q := range []struct {
				sql  string
				want uint64
			}{
				{"SELECT count() FROM events", containers * perContainer},
				{"SELECT count() FROM alerts", containers},
				{"SELECT count() FROM actions", containers},
				{"SELECT sum(events) FROM events_per_minute", containers * perContainer},
				{"SELECT uniqExact(container_id) FROM events", containers},
			} {
				if got := queryUint(t, s, q.sql); got != q.want {
					t.Errorf("%s = %d, want %d", q.sql, got, q.want)
				}
			}
			// Per node: its share, every row where the key puts it.
			var total uint64
			seen := map[string]int{}
			for i, a := range c.Addrs {
				conn := nodeConn(t, a, cfg.Database)
				n := nodeUint(t, conn, "SELECT count() FROM events_local")
				if n == 0 || n == containers*perContainer {
					t.Errorf("node %d holds %d of %d events: not spread over both shards", i+1, n, containers*perContainer)
				}
				total += n
				for _, tbl := range []string{"events_local", "alerts_local", "actions_local"} {
					q := fmt.Sprintf("SELECT count() FROM %s WHERE cityHash64(CAST(host AS String), container_id) %% 2 != %d", tbl, i)
					if bad := nodeUint(t, conn, q); bad != 0 {
						t.Errorf("node %d: %d rows of %s belong to the other shard", i+1, bad, tbl)
					}
				}
				if got := nodeUint(t, conn, "SELECT sum(events) FROM events_per_minute_local"); got != n {
					t.Errorf("node %d: events_per_minute_local sums %d, events_local has %d", i+1, got, n)
				}
				rows, err := conn.Query(ctx, "SELECT DISTINCT container_id FROM events_local")
				if err != nil {
					t.Fatal(err)
				}
				for rows.Next() {
					var cid string
					if err := rows.Scan(&cid); err != nil {
						t.Fatal(err)
					}
					seen[cid]++
				}
				rows.Close()
			}
			if total != containers*perContainer {
				t.Errorf("local tables hold %d events, want %d", total, containers*perContainer)
			}
			for cid, n := range seen {
				if n != 1 {
					t.Errorf("container %s has rows on %d shards", cid, n)
				}
			}

			// A redelivery: the lookup through the Distributed tables
			// finds every row.
			if err := s.Insert(ctx, m, batches...); err != nil {
				t.Fatal(err)
			}
			if got := queryUint(t, s, "SELECT count() FROM events"); got != containers*perContainer {
				t.Errorf("after a redelivery: %d events, want %d", got, containers*perContainer)
			}

			// Readers query the Distributed tables unchanged.
			r, err := OpenReader(cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			for _, b := range batches[:4] {
				cid := b.GetEvents()[0].GetContainerId()
				var got []string
				if err := r.Events(ctx, Selection{From: base, Container: cid}, func(ev *containv1.Event) error {
					got = append(got, ev.GetKind().String())
					return nil
				}); err != nil {
					t.Fatal(err)
				}
				if len(got) != perContainer {
					t.Errorf("Reader.Events(%s): %d events, want %d", cid[:12], len(got), perContainer)
				}
				alerts, err := r.Alerts(ctx, Selection{From: base, Container: cid}, [16]byte{})
				if err != nil || len(alerts) != 1 {
					t.Errorf("Reader.Alerts(%s): %d alerts, %v; want 1", cid[:12], len(alerts), err)
				}
			}
			n, err := r.Count(ctx, Selection{From: base, Host: "host-1"})
			if err != nil || n != containers/2*perContainer {
				t.Errorf("Reader.Count(host-1) = %d, %v; want %d", n, err, containers/2*perContainer)
			}
			// A JOIN of two Distributed tables (distributed_product_mode).
			rows, err := s.Conn().Query(ctx, QueryImagesFromAlertedContainers, 0.5)
			if err != nil {
				t.Fatalf("lineage JOIN over Distributed tables: %v", err)
			}
			rows.Close()

			// Retention drops the old days' partitions on every node.
			old := time.Now().AddDate(0, 0, -3).Truncate(24 * time.Hour).Add(time.Hour)
			if err := s.Insert(ctx, m, clusterBatches(containers, old)...); err != nil {
				t.Fatal(err)
			}
			dropped, err := s.Prune(ctx, 48*time.Hour)
			if err != nil {
				t.Fatal(err)
			}
			day := old.Format("20060102")
			for _, tbl := range []string{"events_local", "alerts_local", "actions_local"} {
				if n := slices.Index(dropped, tbl+"/"+day); n < 0 || !slices.Contains(dropped[n+1:], tbl+"/"+day) {
					t.Errorf("Prune dropped %v: want %s/%s on both nodes", dropped, tbl, day)
				}
			}
			if got := queryUint(t, s, "SELECT count() FROM events"); got != containers*perContainer {
				t.Errorf("after Prune: %d events, want the %d recent ones", got, containers*perContainer)
			}
		})
	}
}

// testSchemaByHand applies deploy/clickhouse/cluster/schema.sql with
// clickhouse-client on each node, as an operator would, and then a store on
// that database finds its schema in place and writes through it.
func testSchemaByHand(t *testing.T, c *testenv.ClickHouseCluster) {
	file := filepath.Join(testenv.RepoRoot(t), "deploy", "clickhouse", "cluster", "schema.sql")
	sql, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range c.Addrs {
		host, port, _ := net.SplitHostPort(a)
		// One client per node (an 18.16 client takes a while to start; it
		// has no --queries-file): the database, then the file on stdin.
		cmd := exec.Command("clickhouse-client", "--host", host, "--port", port, "--multiquery")
		cmd.Stdin = strings.NewReader("CREATE DATABASE IF NOT EXISTS contain;\nUSE contain;\n" + string(sql))
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("clickhouse-client on %s < %s: %v: %s", a, file, err, out)
		}
	}
	conn := nodeConn(t, c.Addrs[1], "contain")
	if n := nodeUint(t, conn, "SELECT count() FROM system.tables WHERE database = 'contain' AND engine = 'Distributed'"); n != uint64(len(shardingKeys)) {
		t.Errorf("node 2 has %d Distributed tables, want %d", n, len(shardingKeys))
	}
	s := openStore(t, clusterConfig(c, "contain", WriteDistributed))
	if err := s.Insert(context.Background(), metrics.New(), clusterBatches(10, time.Now().Add(-time.Hour))...); err != nil {
		t.Fatal(err)
	}
	if got := queryUint(t, s, "SELECT count() FROM events"); got != 70 {
		t.Errorf("events after inserting 70 through the hand-made schema: %d", got)
	}
}

// TestClusterTopologyErrors: a store.addr that misses a node of the
// cluster, or a cluster the servers do not know, is refused at Open.
func TestClusterTopologyErrors(t *testing.T) {
	c := testenv.StartClickHouseCluster(t, testenv.ClickHouseClusterConfig{Name: "contain_test", Shards: 2, Replicas: 1})
	cfg := clusterConfig(c, "contain_cluster_err", WriteDistributed)
	cfg.Addr = c.Addrs[:1]
	if _, err := Open(context.Background(), cfg, testenv.Logger(t)); err == nil || !strings.Contains(err.Error(), "missing 127.0.0.1") {
		t.Errorf("Open with one of two nodes: %v, want store.addr ... missing", err)
	}
	cfg.Addr = c.Addrs
	cfg.Cluster.Name = "nope"
	if _, err := Open(context.Background(), cfg, testenv.Logger(t)); err == nil || !strings.Contains(err.Error(), "no cluster") {
		t.Errorf("Open on an unknown cluster: %v, want no cluster", err)
	}
}

// TestClusterDDL: every migration statement has a cluster form, and the
// replicated form names the macros and the ZooKeeper path.
func TestClusterDDL(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Cluster.Name = "c"
	cfg.Cluster.Replicated = true
	stmts, err := DDL(cfg)
	if err != nil {
		t.Fatal(err)
	}
	all := strings.Join(stmts, ";\n")
	for _, want := range []string{
		"CREATE TABLE IF NOT EXISTS events_local (",
		"ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/contain/events_local', '{replica}')",
		"ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/contain/baselines_local', '{replica}', ts)",
		"ENGINE = ReplicatedSummingMergeTree('/clickhouse/tables/{shard}/contain/events_per_minute_local', '{replica}')",
		"CREATE TABLE IF NOT EXISTS events AS events_local\nENGINE = Distributed('c', 'contain', 'events_local', cityHash64(CAST(host AS String), container_id))",
		"TO events_per_minute_local AS",
		"FROM events_local",
		"ALTER TABLE events_local ADD COLUMN file_uid UInt32",
		"ALTER TABLE events ADD COLUMN file_uid UInt32",
		"DROP TABLE IF EXISTS events_per_minute_mv",
		"CAST(image_ref AS String) AS image_ref, kind, count() AS events\nFROM events_local",
		"ALTER TABLE events_local MODIFY COLUMN container_name LowCardinality(String),\n    MODIFY COLUMN image_ref",
		"ALTER TABLE events MODIFY COLUMN container_name LowCardinality(String),\n    MODIFY COLUMN image_ref",
	} {
		if !strings.Contains(all, want) {
			t.Errorf("cluster DDL lacks %q", want)
		}
	}
	cfg.Cluster = ClusterConfig{Write: WriteDistributed}
	single, err := DDL(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if slices.ContainsFunc(single, func(s string) bool { return strings.Contains(s, "_local") || strings.Contains(s, "Distributed") }) {
		t.Error("one-server DDL mentions local or Distributed tables")
	}
}

// TestClusterShardKey checks shardKey against the server's cityHash64.
func TestClusterShardKey(t *testing.T) {
	s := openStore(t, testConfig(t))
	for _, in := range [][2]string{{"", ""}, {"host-a", "c"}, {"h", strings.Repeat("ab", 32)}, {strings.Repeat("x", 70), "é"}} {
		got := queryUint(t, s, "SELECT cityHash64(?, ?)", in[0], in[1])
		if want := shardKey(in[0], in[1]); got != want {
			t.Errorf("cityHash64(%q, %q) = %d, shardKey = %d", in[0], in[1], got, want)
		}
	}
}

// TestClusterReplicated runs the store on two shards of two replicas each
// (four servers) with a real ZooKeeper: the local tables are
// ReplicatedReplacingMergeTree with the {shard}/{replica} macros; rows
// inserted through the Distributed tables (write=distributed, one replica
// per shard: internal_replication) and into one replica's local tables
// (write=local, a second store on the same database) reach the other
// replica; the Distributed tables count each row once; and with a replica
// killed, write=local writes its shard through the other replica.
func TestClusterReplicated(t *testing.T) {
	zk := testenv.StartZooKeeper(t)
	c := testenv.StartClickHouseCluster(t, testenv.ClickHouseClusterConfig{Name: "contain_repl", Shards: 2, Replicas: 2, ZooKeeper: zk})
	ctx := context.Background()
	const perContainer = 7
	cfg := clusterConfig(c, "contain_repl", WriteDistributed)
	cfg.Cluster.Replicated = true
	dist := openStore(t, cfg)
	cfg.Cluster.Write = WriteLocal
	local := openStore(t, cfg)
	var engine string
	if err := dist.Conn().QueryRow(ctx, "SELECT engine FROM system.tables WHERE database = currentDatabase() AND name = 'events_local'").Scan(&engine); err != nil || engine != "ReplicatedReplacingMergeTree" {
		t.Fatalf("events_local engine %q, %v; want ReplicatedReplacingMergeTree", engine, err)
	}
	conns := make([]driver.Conn, len(c.Addrs))
	for i, a := range c.Addrs {
		conns[i] = nodeConn(t, a, cfg.Database)
	}
	checkOnCluster(t, conns)
	// replicasAgree: the live replicas of each shard hold the same rows,
	// some of them, and the shards total want.
	replicasAgree := func(live []int, want uint64) (bool, string) {
		var total uint64
		var msg []string
		for shard := range 2 {
			var counts []uint64
			for r := range 2 {
				i := shard*2 + r
				if !slices.Contains(live, i) {
					continue
				}
				var n uint64
				if err := conns[i].QueryRow(ctx, "SELECT count() FROM events_local").Scan(&n); err != nil {
					return false, err.Error()
				}
				counts = append(counts, n)
			}
			msg = append(msg, fmt.Sprintf("shard %d: %v", shard+1, counts))
			if slices.Min(counts) != slices.Max(counts) || counts[0] == 0 {
				return false, strings.Join(msg, "; ")
			}
			total += counts[0]
		}
		return total == want, fmt.Sprintf("%s; total %d, want %d", strings.Join(msg, "; "), total, want)
	}
	base := time.Now().Add(-time.Hour).Truncate(time.Second)
	all := clusterBatches(60, base)
	var want uint64
	for _, step := range []struct {
		what    string
		s       *Store
		batches []*containv1.Batch
		kill    bool
	}{
		{"write=distributed", dist, all[:20], false},
		{"write=local", local, all[20:40], false},
		{"write=local, replica 1 of shard 1 killed", local, all[40:], true},
	} {
		live := []int{0, 1, 2, 3}
		if step.kill {
			c.Kill(t, 0)
			live = live[1:]
		}
		// After the kill, a pooled connection to the dead node fails
		// once: the fetch would be redelivered, as here.
		var err error
		for range 3 {
			if err = step.s.Insert(ctx, metrics.New(), step.batches...); err == nil {
				break
			}
			t.Logf("%s: %v (retrying, as a redelivery would)", step.what, err)
		}
		if err != nil {
			t.Fatalf("%s: %v", step.what, err)
		}
		want += uint64(len(step.batches) * perContainer)
		testenv.WaitForState(t, 20*time.Second, step.what+": the live replicas of each shard holding its rows", func() (bool, string) {
			return replicasAgree(live, want)
		})
		if got := queryUint(t, step.s, "SELECT count() FROM events"); got != want {
			t.Errorf("%s: Distributed events has %d rows, want %d (each once, not once per replica)", step.what, got, want)
		}
	}
}

// checkOnCluster pins what design 023 (decision 3) says of ON CLUSTER on
// this server: with ZooKeeper, CREATE ... ON CLUSTER makes the table on
// every node, but ALTER of a Distributed table ON CLUSTER is refused when
// the shards have replicas (so the store applies its DDL per node).
func checkOnCluster(t *testing.T, conns []driver.Conn) {
	ctx := context.Background()
	for _, q := range []string{
		"CREATE TABLE IF NOT EXISTS contain_repl.oc_local ON CLUSTER contain_repl (x UInt8) ENGINE = ReplicatedMergeTree('/clickhouse/tables/{shard}/contain_repl/oc_local', '{replica}') ORDER BY x",
		"CREATE TABLE IF NOT EXISTS contain_repl.oc ON CLUSTER contain_repl AS contain_repl.oc_local ENGINE = Distributed('contain_repl', 'contain_repl', 'oc_local', rand())",
		"ALTER TABLE contain_repl.oc_local ON CLUSTER contain_repl ADD COLUMN y UInt8",
	} {
		if err := conns[0].Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	for i, conn := range conns {
		if n := nodeUint(t, conn, "SELECT count() FROM system.tables WHERE database = 'contain_repl' AND name IN ('oc', 'oc_local')"); n != 2 {
			t.Errorf("ON CLUSTER: node %d has %d of the 2 tables", i+1, n)
		}
	}
	err := conns[0].Exec(ctx, "ALTER TABLE contain_repl.oc ON CLUSTER contain_repl ADD COLUMN y UInt8")
	if err == nil || !strings.Contains(err.Error(), "isn't replicated") {
		t.Errorf("ALTER of a Distributed table ON CLUSTER with replicated shards: %v; 18.16 refuses it (isn't replicated)", err)
	}
}

// TestClusterDDLFiles keeps deploy/clickhouse/cluster/*.sql equal to what
// the migrations create on each node of a cluster named "contain" (database
// "contain"); CONTAIN_UPDATE_DOCS=1 rewrites them.
func TestClusterDDLFiles(t *testing.T) {
	for file, replicated := range map[string]bool{"schema.sql": false, "schema-replicated.sql": true} {
		cfg := DefaultConfig()
		cfg.Cluster.Name = "contain"
		cfg.Cluster.Replicated = replicated
		stmts, err := DDL(cfg)
		if err != nil {
			t.Fatal(err)
		}
		form := "MergeTree tables"
		if replicated {
			form = "Replicated*MergeTree tables ({shard} and {replica} macros, ZooKeeper or Keeper)"
		}
		want := "-- Generated by `CONTAIN_UPDATE_DOCS=1 go test -run TestClusterDDLFiles ./store`: do not edit.\n" +
			"-- What contain's store creates on EVERY node of ClickHouse cluster 'contain' (database contain),\n" +
			"-- " + form + ": <table>_local plus a Distributed <table> over it\n" +
			"-- (docs/design/023-clickhouse-cluster.md). By hand, on each node:\n" +
			"--   clickhouse-client --host NODE --database contain --multiquery < " + file + "\n" +
			"-- (with allow_experimental_low_cardinality_type=1 in the profile on 18.x).\n\n" +
			strings.Join(stmts, ";\n\n") + ";\n"
		path := filepath.Join(testenv.RepoRoot(t), "deploy", "clickhouse", "cluster", file)
		if os.Getenv("CONTAIN_UPDATE_DOCS") == "1" {
			if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, []byte(want), 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		got, err := os.ReadFile(path)
		if err != nil || string(got) != want {
			t.Errorf("%s is not what the migrations create (%v): run CONTAIN_UPDATE_DOCS=1 go test -run TestClusterDDLFiles ./store", path, err)
		}
	}
}
