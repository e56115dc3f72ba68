package store

import (
	"fmt"
	"regexp"
	"strings"
)

// Cluster DDL (docs/design/023-clickhouse-cluster.md). The migrations are
// written for one server; on a cluster each CREATE TABLE becomes
//
//	CREATE TABLE IF NOT EXISTS <t>_local (...) ENGINE = [Replicated]<Engine>(...) ...
//	CREATE TABLE IF NOT EXISTS <t> AS <t>_local
//	    ENGINE = Distributed('<cluster>', '<db>', '<t>_local', <sharding key>)
//
// each added column is added to both, and a materialized view reads and
// writes the local tables of its node. The statements are applied on every
// node (no ON CLUSTER), so a released migration needs no cluster variant
// and 18.16 needs no ZooKeeper for it.

// The sharding key of every table that has one: a container's events,
// alerts and actions on one shard, an image's histories on one shard.
// cityHash64 refuses LowCardinality arguments on 18.16: host is cast.
const keyHostContainer = "cityHash64(CAST(host AS String), container_id)"

var shardingKeys = map[string]string{
	"events":            keyHostContainer,
	"alerts":            keyHostContainer,
	"actions":           keyHostContainer,
	"events_per_minute": "cityHash64(container_id)",
	"commits":           "cityHash64(source_container_id)",
	"container_audits":  "cityHash64(container_id)",
	"baselines":         "cityHash64(image_digest)",
	"image_audits":      "cityHash64(image_digest)",
	"declarations":      "cityHash64(image_digest)",
}

// localViews are the cluster forms of the migrations' materialized views:
// on every node, from and to that node's local tables.
var localViews = map[string]string{
	ddlEventsPerMinuteMV: `CREATE MATERIALIZED VIEW IF NOT EXISTS events_per_minute_mv
TO events_per_minute_local AS
SELECT toStartOfMinute(ts) AS minute, container_id, image_ref, kind, count() AS events
FROM events_local
GROUP BY minute, container_id, image_ref, kind`,
	ddlEventsPerMinuteMVCast: `CREATE MATERIALIZED VIEW IF NOT EXISTS events_per_minute_mv
TO events_per_minute_local AS
SELECT toStartOfMinute(ts) AS minute, container_id, CAST(image_ref AS String) AS image_ref, kind, count() AS events
FROM events_local
GROUP BY minute, container_id, image_ref, kind`,
}

// nodeStmts are statements every node runs as they are (a view is a
// table of its node).
var nodeStmts = map[string]bool{ddlDropEventsPerMinuteMV: true}

// localSuffix names a cluster's local tables.
const localSuffix = "_local"

var (
	createRE = regexp.MustCompile(`^CREATE TABLE IF NOT EXISTS (\w+) \(`)
	engineRE = regexp.MustCompile(`\n\) ENGINE = (\w*MergeTree)\(([^)]*)\)`)
)

// schema turns the migrations' statements into those a server runs: as
// they are on one server, rewritten for cfg.Cluster otherwise.
type schema struct {
	database string
	cluster  ClusterConfig
}

func (sc schema) clustered() bool { return sc.cluster.Name != "" }

// stmts returns what stmt becomes on one node.
func (sc schema) stmts(stmt string) ([]string, error) {
	if !sc.clustered() {
		return []string{stmt}, nil
	}
	if nodeStmts[stmt] {
		return []string{stmt}, nil
	}
	if v, ok := localViews[stmt]; ok {
		return []string{v}, nil
	}
	m := createRE.FindStringSubmatch(stmt)
	e := engineRE.FindStringSubmatchIndex(stmt)
	if m == nil || e == nil {
		return nil, fmt.Errorf("no cluster form for statement %.60q", stmt)
	}
	table := m[1]
	key, ok := shardingKeys[table]
	if !ok {
		return nil, fmt.Errorf("table %s has no sharding key", table)
	}
	local := table + localSuffix
	engine, args := stmt[e[2]:e[3]], stmt[e[4]:e[5]]
	if sc.cluster.Replicated {
		zk := fmt.Sprintf("'%s/%s/%s', '{replica}'", strings.TrimRight(sc.cluster.ZooKeeperPrefix, "/"), sc.database, local)
		if args != "" {
			zk += ", " + args
		}
		engine, args = "Replicated"+engine, zk
	}
	body := "CREATE TABLE IF NOT EXISTS " + local + " (" + stmt[len(m[0]):e[0]] +
		"\n) ENGINE = " + engine + "(" + args + ")" + stmt[e[1]:]
	dist := fmt.Sprintf("CREATE TABLE IF NOT EXISTS %s AS %s\nENGINE = Distributed('%s', '%s', '%s', %s)",
		table, local, sc.cluster.Name, sc.database, local, key)
	return []string{body, dist}, nil
}

// columnTables returns the tables a column added to table goes to.
func (sc schema) columnTables(table string) []string {
	if !sc.clustered() {
		return []string{table}
	}
	return []string{table + localSuffix, table}
}

// DDL returns every statement the migrations run on one node for cfg, in
// order, with the ALTERs they add and retype columns with: the schema to
// create by hand (docs/design/023-clickhouse-cluster.md prints it for a
// cluster).
func DDL(cfg Config) ([]string, error) {
	sc := schema{database: cfg.Database, cluster: cfg.Cluster}
	out := []string{ddlMigrations}
	for _, m := range migrations {
		for _, stmt := range m.stmts {
			ss, err := sc.stmts(stmt)
			if err != nil {
				return nil, fmt.Errorf("migration %d: %w", m.version, err)
			}
			out = append(out, ss...)
		}
		for _, c := range m.columns {
			for _, t := range sc.columnTables(c.table) {
				out = append(out, fmt.Sprintf("ALTER TABLE %s ADD COLUMN %s %s", t, c.name, c.typ))
			}
		}
		for _, cs := range byTable(m.retyped) {
			modify := make([]string, len(cs))
			for i, c := range cs {
				modify[i] = fmt.Sprintf("MODIFY COLUMN %s %s", c.name, c.typ)
			}
			for _, t := range sc.columnTables(cs[0].table) {
				out = append(out, fmt.Sprintf("ALTER TABLE %s %s", t, strings.Join(modify, ",\n    ")))
			}
		}
	}
	return out, nil
}
