package store

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"regexp"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"

	"github.com/containsec/contain/internal/bus"
	"github.com/containsec/contain/internal/tlsconfig"
	"github.com/containsec/contain/schemas/containv1"
	"github.com/containsec/contain/schemas/kvdoc"
)

// Config configures the ClickHouse sink. Keys in errors are the ones
// cmd/contain maps to (store.<key>).
type Config struct {
	// Addr lists ClickHouse native-protocol addresses (host:port).
	Addr []string `config:"addr"`
	// Database is created if missing; every table lives in it.
	Database string `config:"database"`
	// Username and Password authenticate to ClickHouse. Rather than the
	// password in the config file, name a file holding it (PasswordFile,
	// e.g. a mounted secret) or an environment variable (PasswordEnv); at
	// most one of the three. `contain check-config` never prints it.
	Username     string `config:"username"`
	Password     string `config:"password"`
	PasswordFile string `config:"password_file"`
	PasswordEnv  string `config:"password_env"`
	// TLS dials the native protocol over TLS (ClickHouse's
	// tcp_port_secure): CA, client certificate, server name.
	TLS tlsconfig.Config `config:"tls"`
	// DialTimeout bounds connecting to one address.
	DialTimeout time.Duration `config:"dial_timeout"`
	// Compression of the blocks sent to ClickHouse: "auto" (the default,
	// also when empty: none to a server on a loopback address, lz4 to any
	// other), "lz4" (16x fewer bytes on the wire than none for the rows of
	// TestCompressions, 7-14% of the store's CPU in the fleet load test),
	// "zstd" (fewer bytes still, more CPU) or "none" (a store beside its
	// server, or on a fast link).
	Compression string `config:"compression"`
	// InsertTimeout bounds the inserts of one fetch; InsertMaxAge +
	// DialTimeout + 2*InsertTimeout must stay under AckWait, so that a stuck
	// insert fails and is retried (with back-off) before NATS redelivers on
	// its own.
	InsertTimeout time.Duration `config:"insert_timeout"`

	// A fetch becomes one INSERT per table (per writer, InsertsInFlight):
	// it fills for up to InsertMaxAge, or until it holds FetchMessages NATS
	// messages or InsertMaxBytes bytes of them, whichever comes first.
	// Bigger inserts cost ClickHouse less per row (fewer parts to write
	// and merge); the age bounds the latency from publish to row, the
	// bytes the memory a fetch holds (docs/design/021-store-inserts.md).
	InsertMaxAge time.Duration `config:"insert_max_age"`
	// AlertsInsertMaxAge is InsertMaxAge for the alerts and actions
	// streams; 0 means 5 × insert_max_age. They carry a few rows a second,
	// and each INSERT writes a part of ~20-45 column files whatever its
	// rows: at one INSERT a second each they cost ClickHouse more CPU
	// than the duplicate lookups of every events row
	// (docs/design/021-store-inserts.md, decision 11).
	AlertsInsertMaxAge time.Duration `config:"alerts_insert_max_age"`
	// InsertMaxBytes bounds the bytes of the messages of one fetch (at
	// least the largest NATS message, 8 MiB + headers).
	InsertMaxBytes int `config:"insert_max_bytes"`
	// FetchMessages bounds the messages (each a batch of events) of one
	// fetch.
	FetchMessages int `config:"fetch_messages"`
	// BatchMaxRows is the largest INSERT; a writer with more rows commits
	// and starts another (keep it under ClickHouse's
	// min_insert_block_size_rows, 1,048,576, so an INSERT stays atomic).
	BatchMaxRows int `config:"batch_max_rows"`
	// InsertsInFlight is how many writers share a fetch: each converts
	// its part of the messages and INSERTs it on its own connection, so
	// several INSERTs are in flight.
	InsertsInFlight int `config:"inserts_in_flight"`
	// InsertBlockRows is how many rows a writer converts before it sends
	// them as one block of its INSERT; its column buffers and the
	// driver's are then reused. It bounds the client's memory per INSERT;
	// the server squashes the blocks of one INSERT into one part.
	InsertBlockRows int `config:"insert_block_rows"`
	// AckWait is how long NATS waits for a fetched message's ack before
	// redelivering it.
	AckWait time.Duration `config:"ack_wait"`
	// RetryDelay is the first back-off after a failed insert (doubling up
	// to 30s); the failed messages are redelivered after it.
	RetryDelay time.Duration `config:"retry_delay"`

	// DurablePrefix names the JetStream durables: <prefix>-events,
	// <prefix>-alerts, <prefix>-actions.
	DurablePrefix string `config:"durable_prefix"`
	// StoreRaw keeps each event's protobuf encoding in events.raw.
	StoreRaw bool `config:"store_raw"`

	// ImagesBucket and ProfilesBucket are the enricher's NATS KV buckets of
	// image declarations and declared profiles; BaselinesBucket is the
	// analyzer's. Run copies every new version of their entries into the
	// declarations and baselines tables (durables <prefix>-kv-images,
	// -kv-profiles, -kv-baselines), waiting for a bucket to exist. Empty
	// skips a bucket.
	ImagesBucket    string `config:"images_bucket"`
	ProfilesBucket  string `config:"profiles_bucket"`
	BaselinesBucket string `config:"baselines_bucket"`

	// Retention makes Run drop the day partitions older than this (Prune),
	// at start and then daily. 0 keeps everything; otherwise at least 24h.
	Retention time.Duration `config:"retention"`

	// Cluster spreads the tables over a ClickHouse cluster
	// (docs/design/023-clickhouse-cluster.md); empty name: one server.
	Cluster ClusterConfig `config:"cluster"`
}

// Compressions of the blocks sent to ClickHouse (Config.Compression).
const (
	CompressionAuto = "auto"
	CompressionLZ4  = "lz4"
	CompressionZSTD = "zstd"
	CompressionNone = "none"
)

// compressionMethod is the driver's method for name; false if unknown.
// auto must be resolved first (effectiveCompression); here it is lz4.
func compressionMethod(name string) (clickhouse.CompressionMethod, bool) {
	switch name {
	case CompressionLZ4, CompressionAuto, "":
		return clickhouse.CompressionLZ4, true
	case CompressionZSTD:
		return clickhouse.CompressionZSTD, true
	case CompressionNone:
		return clickhouse.CompressionNone, true
	}
	return 0, false
}

// effectiveCompression resolves auto (or empty) for the addresses one
// connection pool dials: none when every one is a loopback address
// (compressing costs the store CPU and saves no link anything), lz4
// otherwise. Any other name is returned as it is. It is pure.
func effectiveCompression(name string, addrs []string) string {
	if name != CompressionAuto && name != "" {
		return name
	}
	if len(addrs) == 0 {
		return CompressionLZ4
	}
	for _, a := range addrs {
		if !loopbackAddr(a) {
			return CompressionLZ4
		}
	}
	return CompressionNone
}

// loopbackAddr reports whether host:port names this host over loopback
// (127.0.0.0/8, ::1, localhost).
func loopbackAddr(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		host = addr
	}
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip, err := netip.ParseAddr(strings.Trim(host, "[]"))
	return err == nil && ip.IsLoopback()
}

func knownCompression(name string) bool { _, ok := compressionMethod(name); return ok }

// Write modes of a cluster (ClusterConfig.Write).
const (
	// WriteDistributed inserts into the Distributed tables, which route
	// each row to its shard (synchronously: insert_distributed_sync=1).
	WriteDistributed = "distributed"
	// WriteLocal has the store route each events, alerts and actions row
	// to its shard itself, by the Distributed tables' sharding key, and
	// insert into that shard's <table>_local.
	WriteLocal = "local"
)

// ClusterConfig places the tables on a ClickHouse cluster: on every node
// in store.addr, each table is <table>_local (MergeTree family) plus a
// Distributed table <table> over the cluster's <table>_local, sharded by
// container; readers query <table> as on one server.
type ClusterConfig struct {
	// Name is the cluster in the servers' remote_servers; empty: one
	// server, plain tables (the default). With a name, store.addr must
	// list every node (every replica of every shard): the store applies
	// its DDL on each, which needs no ZooKeeper.
	Name string `config:"name"`
	// Write is "distributed" (insert into the Distributed tables) or
	// "local" (the store shards events, alerts and actions itself and
	// inserts into each shard's <table>_local; the small tables still go
	// through the Distributed tables).
	Write string `config:"write"`
	// Replicated makes the local tables Replicated*MergeTree, with the
	// servers' {shard} and {replica} macros and ZooKeeper (or ClickHouse
	// Keeper) configured on every node.
	Replicated bool `config:"replicated"`
	// ZooKeeperPrefix starts each replicated table's ZooKeeper path:
	// <prefix>/<database>/<table>_local. It should contain {shard}.
	ZooKeeperPrefix string `config:"zookeeper_prefix"`
}

const (
	// DefaultInsertMaxBytes is the default byte bound of one fetch.
	DefaultInsertMaxBytes = MinInsertMaxBytes
	// MinInsertMaxBytes is the largest message bus publishes and room
	// for its headers: a smaller fetch bound would never deliver it.
	MinInsertMaxBytes = bus.MaxPayload + 64<<10
	// maxBatchRows is ClickHouse's default min_insert_block_size_rows:
	// an INSERT of more rows may be written as several parts, so a
	// failure half-way would leave some of them.
	maxBatchRows = 1_048_576
)

// DefaultConfig is a local ClickHouse on the native port used by
// deploy/clickhouse (19000), database "contain".
func DefaultConfig() Config {
	return Config{
		Addr:            []string{"127.0.0.1:19000"},
		Database:        "contain",
		Username:        "default",
		DialTimeout:     5 * time.Second,
		Compression:     CompressionAuto,
		InsertTimeout:   15 * time.Second,
		InsertMaxAge:    time.Second,
		InsertMaxBytes:  DefaultInsertMaxBytes,
		FetchMessages:   4096,
		BatchMaxRows:    500_000,
		InsertsInFlight: 1,
		InsertBlockRows: 8192,
		AckWait:         60 * time.Second,
		RetryDelay:      time.Second,
		DurablePrefix:   "store",

		ImagesBucket:    kvdoc.ImagesBucket,
		ProfilesBucket:  kvdoc.ProfilesBucket,
		BaselinesBucket: kvdoc.BaselinesBucket,

		Cluster: ClusterConfig{Write: WriteDistributed, ZooKeeperPrefix: "/clickhouse/tables/{shard}"},
	}
}

var (
	identRE  = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
	bucketRE = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)
)

// Validate reports the first invalid field, naming its config key.
func (c Config) Validate() error {
	if len(c.Addr) == 0 {
		return errors.New("store.addr: at least one host:port is required")
	}
	for _, a := range c.Addr {
		if _, _, err := net.SplitHostPort(a); err != nil {
			return fmt.Errorf("store.addr: %q: %v", a, err)
		}
	}
	switch {
	case !identRE.MatchString(c.Database):
		return fmt.Errorf("store.database: %q must match %s", c.Database, identRE)
	case c.DialTimeout <= 0:
		return errors.New("store.dial_timeout: must be > 0")
	case !knownCompression(c.Compression):
		return fmt.Errorf("store.compression: %q is not one of %s, %s, %s, %s", c.Compression, CompressionAuto, CompressionLZ4, CompressionZSTD, CompressionNone)
	case c.InsertTimeout <= 0:
		return errors.New("store.insert_timeout: must be > 0")
	case c.BatchMaxRows <= 0 || c.BatchMaxRows > maxBatchRows:
		return fmt.Errorf("store.batch_max_rows: must be in 1..%d (an INSERT past ClickHouse's min_insert_block_size_rows is not atomic)", maxBatchRows)
	case c.FetchMessages <= 0:
		return errors.New("store.fetch_messages: must be > 0")
	case c.InsertMaxAge <= 0:
		return errors.New("store.insert_max_age: must be > 0")
	case c.AlertsInsertMaxAge < 0:
		return errors.New("store.alerts_insert_max_age: must be >= 0 (0: 5 × insert_max_age)")
	case c.InsertMaxBytes < MinInsertMaxBytes:
		return fmt.Errorf("store.insert_max_bytes: %d must be at least %d (the largest NATS message and its headers)", c.InsertMaxBytes, MinInsertMaxBytes)
	case c.InsertsInFlight <= 0 || c.InsertsInFlight > 16:
		return errors.New("store.inserts_in_flight: must be in 1..16")
	case c.InsertBlockRows <= 0:
		return errors.New("store.insert_block_rows: must be > 0")
	case c.RetryDelay <= 0:
		return errors.New("store.retry_delay: must be > 0")
	case c.AckWait <= 0:
		return errors.New("store.ack_wait: must be > 0")
	case c.AckWait <= c.maxHandle():
		// A fetch waits up to InsertMaxAge, then (when the schema is not
		// in place yet) migrates and inserts, each bounded: all of it must
		// end before NATS gives up on the ack, or every slow insert would
		// also be redelivered behind the store's back.
		return fmt.Errorf("store.ack_wait: %v must exceed max(insert_max_age, alerts_insert_max_age) + dial_timeout + 2*insert_timeout (%v)", c.AckWait, c.maxHandle())
	case c.DurablePrefix == "" || !identRE.MatchString(c.DurablePrefix):
		return fmt.Errorf("store.durable_prefix: %q must match %s", c.DurablePrefix, identRE)
	case c.Retention < 0 || (c.Retention > 0 && c.Retention < 24*time.Hour):
		return fmt.Errorf("store.retention: %v must be 0 (keep everything) or at least 24h (retention drops whole days)", c.Retention)
	}
	if err := c.validateSecrets(); err != nil {
		return err
	}
	if err := c.Cluster.validate(); err != nil {
		return err
	}
	for _, b := range []struct{ key, v string }{
		{"store.images_bucket", c.ImagesBucket},
		{"store.profiles_bucket", c.ProfilesBucket},
		{"store.baselines_bucket", c.BaselinesBucket},
	} {
		if b.v != "" && !bucketRE.MatchString(b.v) {
			return fmt.Errorf("%s: %q must match %s (or be empty to skip it)", b.key, b.v, bucketRE)
		}
	}
	return nil
}

var zkPathRE = regexp.MustCompile(`^/[A-Za-z0-9_{}/.-]*$`)

func (c ClusterConfig) validate() error {
	switch {
	case c.Name == "" && (c.Write == WriteLocal || c.Replicated):
		return errors.New("store.cluster.name: required with store.cluster.write=local or store.cluster.replicated")
	case c.Name != "" && !identRE.MatchString(c.Name):
		return fmt.Errorf("store.cluster.name: %q must match %s", c.Name, identRE)
	case c.Write != WriteDistributed && c.Write != WriteLocal:
		return fmt.Errorf("store.cluster.write: %q must be %q or %q", c.Write, WriteDistributed, WriteLocal)
	case c.Replicated && !zkPathRE.MatchString(c.ZooKeeperPrefix):
		return fmt.Errorf("store.cluster.zookeeper_prefix: %q must match %s", c.ZooKeeperPrefix, zkPathRE)
	}
	return nil
}

// maxHandle bounds the time from a fetch's first message to its ack.
func (c Config) maxHandle() time.Duration {
	return max(c.InsertMaxAge, c.alertsMaxAge()) + c.DialTimeout + 2*c.InsertTimeout
}

// alertsMaxAge is the fill wait of the alerts and actions streams.
func (c Config) alertsMaxAge() time.Duration {
	if c.AlertsInsertMaxAge > 0 {
		return c.AlertsInsertMaxAge
	}
	return 5 * c.InsertMaxAge
}

// insertMaxAge is the fill wait of stream's fetches.
func (c Config) insertMaxAge(stream string) time.Duration {
	if stream == containv1.StreamAlerts || stream == containv1.StreamActions {
		return c.alertsMaxAge()
	}
	return c.InsertMaxAge
}
