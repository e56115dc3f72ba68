package store

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync/atomic"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/go-faster/city"

	"github.com/containsec/contain/internal/logfields"
)

// A store on a cluster (Config.Cluster.Name set; design 023) keeps a
// connection to every node of store.addr besides its pooled one: the DDL
// runs on each node, Prune drops each node's old partitions, and with
// write=local each shard's rows go to one of its nodes (writers).

// node is one server of store.addr.
type node struct {
	addr string
	conn driver.Conn
	// shard is the shard_num this node serves, from system.clusters
	// (is_local); -1 until known.
	shard int
}

// topology is the cluster as the Distributed tables see it: the shards in
// order, and the slots that map a sharding key to a shard by weight.
type topology struct {
	shards []*shard
	slots  []int // key % len(slots) -> shard index
}

// shard is one shard's nodes in store.addr order and the one that
// write=local inserts into.
type shard struct {
	nodes []*node
	cur   atomic.Uint32
}

func (sh *shard) current() *node { return sh.nodes[int(sh.cur.Load())%len(sh.nodes)] }

// failed moves the shard's writes from n, if they go to n, to its next
// node.
func (sh *shard) failed(n *node) {
	c := sh.cur.Load()
	if sh.nodes[int(c)%len(sh.nodes)] == n {
		sh.cur.CompareAndSwap(c, c+1)
	}
}

// clusterSettings are what every session on a cluster needs: inserts into
// a Distributed table return once every shard has its rows (the ack to NATS
// then means stored). The other setting a cluster needs,
// distributed_product_mode = 'global' (a JOIN or IN over a Distributed
// table inside a query over another runs once, globally, rather than
// failing with "double-distributed"), is a string, which clickhouse-go
// cannot send to 18.16: it belongs in the servers' user profile
// (deploy/clickhouse/users.xml).
func clusterSettings(cfg Config) clickhouse.Settings {
	s := maps.Clone(settings)
	if cfg.Cluster.Name != "" {
		s["insert_distributed_sync"] = 1
	}
	return s
}

// openNodes opens one connection per address of cfg (none for one server).
func openNodes(cfg Config) ([]*node, error) {
	if cfg.Cluster.Name == "" {
		return nil, nil
	}
	var nodes []*node
	for _, a := range cfg.Addr {
		c := cfg
		c.Addr = []string{a}
		opts, err := options(c, cfg.Database)
		if err != nil {
			closeNodes(nodes)
			return nil, err
		}
		conn, err := clickhouse.Open(opts)
		if err != nil {
			closeNodes(nodes)
			return nil, fmt.Errorf("store: clickhouse %s: %w", a, err)
		}
		nodes = append(nodes, &node{addr: a, conn: conn, shard: -1})
	}
	return nodes, nil
}

func closeNodes(nodes []*node) {
	for _, n := range nodes {
		n.conn.Close()
	}
}

// migrateCluster creates the database and applies the migrations on every
// node, then learns the topology from system.clusters: every node of the
// cluster must be in store.addr (else some node would lack the tables).
func (s *Store) migrateCluster(ctx context.Context) error {
	for _, n := range s.nodes {
		if err := s.createDatabase(ctx, n.addr); err != nil {
			return err
		}
	}
	topo, err := s.learnTopology(ctx)
	if err != nil {
		return err
	}
	// Migration by migration across the nodes, so that the replicas of a
	// shard share each step (a Replicated table created on one replica
	// after another has altered it would differ from ZooKeeper's).
	sc := schema{database: s.cfg.Database, cluster: s.cfg.Cluster}
	applied := make([]map[uint32]bool, len(s.nodes))
	for i, n := range s.nodes {
		if applied[i], err = appliedMigrations(ctx, n.conn); err != nil {
			return fmt.Errorf("store: clickhouse %s: %w", n.addr, err)
		}
	}
	for _, m := range migrations {
		for i, n := range s.nodes {
			if applied[i][m.version] {
				continue
			}
			if err := applyMigration(ctx, n.conn, sc, m); err != nil {
				return fmt.Errorf("store: clickhouse %s: %w", n.addr, err)
			}
			s.log.Info("applied schema migration", logfields.Version, m.version, logfields.Name, m.name, logfields.Addr, n.addr)
		}
	}
	s.topo = topo
	return nil
}

// topologyError is a store.addr or store.cluster that does not match the
// servers' cluster: a setup error, not an outage.
type topologyError struct{ msg string }

func (e *topologyError) Error() string { return e.msg }

func topoErr(format string, args ...any) error {
	return &topologyError{fmt.Sprintf(format, args...)}
}

// createDatabase creates the database through a session on "default" (a
// session cannot select a database that does not exist yet).
func (s *Store) createDatabase(ctx context.Context, addr string) error {
	c := s.cfg
	c.Addr = []string{addr}
	bopts, err := options(c, "default")
	if err != nil {
		return err
	}
	boot, err := clickhouse.Open(bopts)
	if err != nil {
		return fmt.Errorf("store: clickhouse %s: %w", addr, err)
	}
	defer boot.Close()
	if err := boot.Exec(ctx, "CREATE DATABASE IF NOT EXISTS "+s.cfg.Database); err != nil {
		return fmt.Errorf("store: clickhouse %s: creating database %s: %w", addr, s.cfg.Database, err)
	}
	return nil
}

type clusterEntry struct {
	shard, weight, replica uint32
	host                   string
	port                   uint16
}

// learnTopology reads the cluster's shards and replicas and finds, through
// is_local, which entry each node of store.addr is.
func (s *Store) learnTopology(ctx context.Context) (*topology, error) {
	name := s.cfg.Cluster.Name
	var entries []clusterEntry
	covered := map[[2]uint32]bool{}
	for i, n := range s.nodes {
		rows, err := n.conn.Query(ctx,
			"SELECT shard_num, shard_weight, replica_num, host_name, port, is_local FROM system.clusters WHERE cluster = ? ORDER BY shard_num, replica_num", name)
		if err != nil {
			return nil, fmt.Errorf("store: clickhouse %s: reading cluster %s: %w", n.addr, name, err)
		}
		var local []clusterEntry
		var all []clusterEntry
		for rows.Next() {
			var e clusterEntry
			var isLocal uint8
			if err := rows.Scan(&e.shard, &e.weight, &e.replica, &e.host, &e.port, &isLocal); err != nil {
				rows.Close()
				return nil, fmt.Errorf("store: clickhouse %s: reading cluster %s: %w", n.addr, name, err)
			}
			all = append(all, e)
			if isLocal == 1 {
				local = append(local, e)
			}
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, fmt.Errorf("store: clickhouse %s: reading cluster %s: %w", n.addr, name, err)
		}
		switch {
		case len(all) == 0:
			return nil, topoErr("store.cluster.name: clickhouse %s has no cluster %q in its remote_servers", n.addr, name)
		case len(local) == 0:
			return nil, topoErr("store.addr: %s is not a node of cluster %q (no entry of system.clusters is local to it)", n.addr, name)
		case i == 0:
			entries = all
		}
		for _, e := range local {
			covered[[2]uint32{e.shard, e.replica}] = true
			n.shard = int(e.shard)
		}
	}
	var missing []string
	for _, e := range entries {
		if !covered[[2]uint32{e.shard, e.replica}] {
			missing = append(missing, fmt.Sprintf("%s:%d (shard %d replica %d)", e.host, e.port, e.shard, e.replica))
		}
	}
	if len(missing) > 0 {
		return nil, topoErr("store.addr: must list every node of cluster %q (the store creates the tables on each): missing %s",
			name, strings.Join(missing, ", "))
	}
	return buildTopology(entries, s.nodes), nil
}

// buildTopology orders the shards as the cluster does and gives each
// shard weight slots, as a Distributed table does.
func buildTopology(entries []clusterEntry, nodes []*node) *topology {
	var nums []uint32
	weight := map[uint32]uint32{}
	for _, e := range entries {
		if _, ok := weight[e.shard]; !ok {
			nums = append(nums, e.shard)
		}
		weight[e.shard] = e.weight
	}
	slices.Sort(nums)
	t := &topology{shards: make([]*shard, len(nums))}
	for i, num := range nums {
		for range weight[num] {
			t.slots = append(t.slots, i)
		}
		t.shards[i] = &shard{}
		for _, n := range nodes {
			if n.shard == int(num) {
				t.shards[i].nodes = append(t.shards[i].nodes, n)
			}
		}
	}
	return t
}

// shardOf is the shard a Distributed table with the key
// cityHash64(CAST(host AS String), container_id) puts the row in.
func (t *topology) shardOf(host, containerID string) int {
	if len(t.slots) == 0 {
		return 0
	}
	return t.slots[shardKey(host, containerID)%uint64(len(t.slots))]
}

// shardKey is ClickHouse's cityHash64(host, container_id): CityHash64
// v1.0.2 of each argument, combined with Hash128to64.
func shardKey(host, containerID string) uint64 {
	return hash128to64(city.CH64([]byte(host)), city.CH64([]byte(containerID)))
}

func hash128to64(lo, hi uint64) uint64 {
	const mul = 0x9ddfea08eb382d69
	a := (lo ^ hi) * mul
	a ^= a >> 47
	b := (hi ^ a) * mul
	b ^= b >> 47
	return b * mul
}

// The local tables of write=local: the same columns, other names.
var (
	eventsLocalTable  = &tableDef[row]{name: eventsTable.name + localSuffix, cols: eventsTable.cols, part: eventsTable.part, zero: eventsTable.zero, key: eventsTable.key}
	alertsLocalTable  = &tableDef[row]{name: alertsTable.name + localSuffix, cols: alertsTable.cols}
	actionsLocalTable = &tableDef[row]{name: actionsTable.name + localSuffix, cols: actionsTable.cols}
)

func newLocalRowSet(keepRaw bool) *rowSet {
	return &rowSet{
		events:  newRowBuf(eventsLocalTable, 1024),
		alerts:  newRowBuf(alertsLocalTable, 16),
		actions: newRowBuf(actionsLocalTable, 16),
		keepRaw: keepRaw,
		added:   idSet{},
	}
}

// tablesPerTarget is how many writers writeGroup has per target: events,
// alerts, actions.
const tablesPerTarget = 3

// writers returns the table writers of one group of a fetch: events,
// alerts and actions on the pooled connection or, with write=local, on
// each shard's current node (three per shard, in shard order).
func (s *Store) writers(rs *rowSet) []*tableWriter[row] {
	mk := func(conn driver.Conn, n *node, set *rowSet) []*tableWriter[row] {
		ws := make([]*tableWriter[row], 0, tablesPerTarget)
		for _, buf := range []*rowBuf[row]{set.events, set.alerts, set.actions} {
			ws = append(ws, &tableWriter[row]{conn: conn, node: n, buf: buf, blockRows: s.cfg.InsertBlockRows, maxRows: s.cfg.BatchMaxRows})
		}
		return ws
	}
	if !s.writesLocal() {
		return mk(s.conn, nil, rs)
	}
	for len(rs.local) < len(s.topo.shards) {
		rs.local = append(rs.local, newLocalRowSet(rs.keepRaw))
	}
	ws := make([]*tableWriter[row], 0, tablesPerTarget*len(s.topo.shards))
	for i, sh := range s.topo.shards {
		n := sh.current()
		ws = append(ws, mk(n.conn, n, rs.local[i])...)
	}
	return ws
}

func (s *Store) writesLocal() bool { return s.cfg.Cluster.Write == WriteLocal && s.topo != nil }

// target is the index of the first writer in writers' result for an
// event of host and container.
func (s *Store) target(host, containerID string) int {
	if !s.writesLocal() {
		return 0
	}
	return tablesPerTarget * s.topo.shardOf(host, containerID)
}

// writerAddr is where w inserts, for messages.
func (s *Store) writerAddr(w *tableWriter[row]) string {
	if w.node != nil {
		return w.node.addr
	}
	return s.addr
}

// writeFailed notes that an INSERT through w failed (not because the fetch
// was cancelled): with write=local, the shard's next INSERT goes to its
// next node (replica), and the redelivered fetch lands there.
func (s *Store) writeFailed(ctx context.Context, w *tableWriter[row]) {
	if w.node == nil || ctx.Err() != nil || s.topo == nil {
		return
	}
	for _, sh := range s.topo.shards {
		sh.failed(w.node)
	}
}
