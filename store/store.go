package store

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/containsec/contain/internal/bus"
	"github.com/containsec/contain/internal/logfields"
	"github.com/containsec/contain/internal/metrics"
	"github.com/containsec/contain/internal/tlsconfig"
	"github.com/containsec/contain/schemas/containv1"
)

// reasonDuplicate labels rows skipped because the table already holds them.
const reasonDuplicate = "duplicate"

// Store writes contain's events, alerts and actions into ClickHouse.
type Store struct {
	cfg  Config
	log  *slog.Logger
	conn driver.Conn
	addr string // for messages

	migrateMu sync.Mutex
	ready     atomic.Bool // database and migrations are in place
	down      atomic.Bool // the last ClickHouse operation failed
	downSince atomic.Int64

	// Paces of the KV and retention loops (constants; tests shorten them).
	bucketPoll, pruneEvery, pruneRetry time.Duration
	prunes                             atomic.Int64 // successful retention passes

	noLookup bool // benchmarks only: insert without the duplicate lookup

	// On a cluster (design 023): a connection to every node of
	// store.addr, and the shards as the Distributed tables see them
	// (known once the schema is in place).
	nodes []*node
	topo  *topology
}

// dialer dials ClickHouse (over TLS when tc is set) with SO_LINGER 0:
// closing a connection resets it. An aborted INSERT is dropped by closing
// its connection (tableWriter.abort), and ClickHouse 18.16 takes a plain
// close between two data blocks for the end of the data and commits what
// it got (seen in TestInsertAbortedCommitsNothing); a reset is an error
// that cancels the INSERT.
func dialer(timeout time.Duration, tc *tls.Config) func(context.Context, string) (net.Conn, error) {
	return func(ctx context.Context, addr string) (net.Conn, error) {
		d := net.Dialer{Timeout: timeout}
		c, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			return nil, err
		}
		if tcp, ok := c.(*net.TCPConn); ok {
			_ = tcp.SetLinger(0)
		}
		if tc == nil {
			return c, nil
		}
		cfg := tc.Clone()
		if cfg.ServerName == "" {
			cfg.ServerName, _, _ = net.SplitHostPort(addr)
		}
		t := tls.Client(c, cfg)
		hctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		if err := t.HandshakeContext(hctx); err != nil {
			c.Close()
			return nil, err
		}
		return t, nil
	}
}

// maxCompressionBuffer bounds the driver's buffers per connection.
const maxCompressionBuffer = 2 << 20

// settings every session needs: LowCardinality columns on 18.x.
var settings = clickhouse.Settings{"allow_experimental_low_cardinality_type": 1}

func options(cfg Config, database string) (*clickhouse.Options, error) {
	pw, err := cfg.password()
	if err != nil {
		return nil, err
	}
	tc, err := cfg.tlsClient()
	if err != nil {
		return nil, err
	}
	method, _ := compressionMethod(effectiveCompression(cfg.Compression, cfg.Addr)) // validated
	return &clickhouse.Options{
		Addr:        cfg.Addr,
		Auth:        clickhouse.Auth{Database: database, Username: cfg.Username, Password: pw},
		DialContext: dialer(cfg.DialTimeout, tc),
		Protocol:    clickhouse.Native,
		DialTimeout: cfg.DialTimeout,
		ReadTimeout: cfg.InsertTimeout,
		Settings:    clusterSettings(cfg),
		Compression: &clickhouse.Compression{Method: method},
		// A block is encoded, compressed and written in pieces of this
		// size: it bounds each connection's buffers (kept while pooled).
		MaxCompressionBuffer: maxCompressionBuffer,
		MaxOpenConns:         8,
		MaxIdleConns:         4,
		ConnMaxLifetime:      time.Hour,
		ConnOpenStrategy:     clickhouse.ConnOpenInOrder,
	}, nil
}

// openConn validates cfg and opens a connection pool to its database.
func openConn(cfg Config) (driver.Conn, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	opts, err := options(cfg, cfg.Database)
	if err != nil {
		return nil, err
	}
	conn, err := clickhouse.Open(opts)
	if err != nil {
		return nil, fmt.Errorf("store: clickhouse %s: %w", strings.Join(cfg.Addr, ","), err)
	}
	return conn, nil
}

// Open connects to ClickHouse, creates the database and applies the schema
// migrations. A bad configuration, or a server that refuses the schema, is
// an error. A server that cannot be reached is not: Open logs it and
// returns a Store whose Run keeps retrying (the streams keep the data
// meanwhile); Ready reports whether the schema is in place.
func Open(ctx context.Context, cfg Config, log *slog.Logger) (*Store, error) {
	conn, err := openConn(cfg)
	if err != nil {
		return nil, err
	}
	nodes, err := openNodes(cfg)
	if err != nil {
		conn.Close()
		return nil, err
	}
	s := &Store{cfg: cfg, log: log, conn: conn, addr: strings.Join(cfg.Addr, ","),
		bucketPoll: 2 * time.Second, pruneEvery: pruneEvery, pruneRetry: pruneRetry, nodes: nodes}
	if cfg.Compression == CompressionAuto || cfg.Compression == "" {
		log.Info("store compression chosen for the servers' addresses (store.compression: auto)",
			logfields.Compression, effectiveCompression(cfg.Compression, cfg.Addr), logfields.Addr, s.addr)
	}
	if err := s.Migrate(ctx); err != nil {
		if isTLSVerify(err) {
			s.Close()
			return nil, tlsconfig.Explain("store.tls", err)
		}
		if !isUnavailable(err) {
			s.Close()
			return nil, err
		}
		s.markDown(err, "setting up the schema")
	}
	return s, nil
}

// isUnavailable tells a server that could not be reached (retry later)
// from one that answered with an error (a bug or a bad setup).
func isUnavailable(err error) bool {
	var ex *clickhouse.Exception
	var te *topologyError
	return !errors.As(err, &ex) && !errors.As(err, &te)
}

// Migrate creates the database if needed and applies pending migrations.
// It is idempotent and safe to call concurrently.
func (s *Store) Migrate(ctx context.Context) error {
	s.migrateMu.Lock()
	defer s.migrateMu.Unlock()
	if s.ready.Load() {
		return nil
	}
	// Each server's part is bounded like one insert (a cluster's nodes
	// migrate in turn).
	ctx, cancel := context.WithTimeout(ctx, time.Duration(max(1, len(s.nodes)))*(s.cfg.DialTimeout+s.cfg.InsertTimeout))
	defer cancel()
	if s.nodes != nil {
		if err := s.migrateCluster(ctx); err != nil {
			return err
		}
		s.ready.Store(true)
		return nil
	}
	// The database must exist before a session can select it.
	bopts, err := options(s.cfg, "default")
	if err != nil {
		return err
	}
	boot, err := clickhouse.Open(bopts)
	if err != nil {
		return fmt.Errorf("store: clickhouse %s: %w", s.addr, err)
	}
	defer boot.Close()
	if err := boot.Exec(ctx, "CREATE DATABASE IF NOT EXISTS "+s.cfg.Database); err != nil {
		return fmt.Errorf("store: clickhouse %s: creating database %s: %w", s.addr, s.cfg.Database, err)
	}
	if err := migrate(ctx, s.conn, schema{database: s.cfg.Database}, s.log); err != nil {
		return fmt.Errorf("store: clickhouse %s: %w", s.addr, err)
	}
	s.ready.Store(true)
	return nil
}

// Ready reports whether the database and its tables are in place.
func (s *Store) Ready() bool { return s.ready.Load() }

// Conn is the ClickHouse connection, for queries (database selected).
func (s *Store) Conn() driver.Conn { return s.conn }

// Close closes the connections.
func (s *Store) Close() error {
	closeNodes(s.nodes)
	return s.conn.Close()
}

// markDown logs the first failure of an outage at Error, with the address,
// and later ones at Debug; markUp logs the recovery.
func (s *Store) markDown(err error, doing string) {
	if errors.Is(err, context.Canceled) {
		return // shutting down, not an outage
	}
	if !s.down.Swap(true) {
		s.downSince.Store(time.Now().UnixNano())
		s.log.Error("clickhouse unavailable; data stays in NATS and is retried with back-off",
			logfields.Addr, s.addr, logfields.Database, s.cfg.Database, logfields.Doing, doing, logfields.Err, err)
		return
	}
	s.log.Debug("clickhouse still unavailable", logfields.Addr, s.addr, logfields.Doing, doing, logfields.Err, err)
}

func (s *Store) markUp() {
	if s.down.Swap(false) {
		s.log.Info("clickhouse available again", logfields.Addr, s.addr,
			logfields.After, time.Since(time.Unix(0, s.downSince.Load())).Round(time.Millisecond))
	}
}

// Durables returns the consumer names Run uses, by stream.
func (c Config) Durables() map[string]string {
	return map[string]string{
		containv1.StreamEvents:  c.DurablePrefix + "-events",
		containv1.StreamAlerts:  c.DurablePrefix + "-alerts",
		containv1.StreamActions: c.DurablePrefix + "-actions",
	}
}

// Run consumes CONTAIN_EVENTS, CONTAIN_ALERTS and CONTAIN_ACTIONS with
// durable pull consumers and inserts every fetch before acknowledging it,
// until ctx ends. While ClickHouse fails, fetched messages are not
// acknowledged and come back after a back-off: nothing is lost, and a
// redelivered batch collapses into the same rows (ReplacingMergeTree).
//
// Run also copies every new version of the KV buckets of
// Config.ImagesBucket, ProfilesBucket and BaselinesBucket into the
// declarations and baselines tables (see watchKV), and with
// Config.Retention set prunes old days at start and then daily.
func (s *Store) Run(ctx context.Context, js jetstream.JetStream, m *metrics.Metrics) error {
	var wg sync.WaitGroup
	for _, b := range s.cfg.kvBuckets() {
		wg.Go(func() { s.watchKV(ctx, js, b, m) })
	}
	if s.cfg.Retention > 0 {
		wg.Go(func() { s.retain(ctx, m) })
	}
	errs := make(chan error, 3)
	for stream, durable := range s.cfg.Durables() {
		wg.Add(1)
		go func() {
			defer wg.Done()
			fb := newFetchBufs(s.cfg)
			h := func(ctx context.Context, msgs *bus.Messages) error {
				return s.handle(ctx, fb, &fetch{msgs: msgs}, m)
			}
			err := bus.ConsumeMessages(ctx, js, bus.ConsumerConfig{
				Stream:        stream,
				Durable:       durable,
				Stage:         metrics.StageStore,
				Fetch:         s.cfg.FetchMessages,
				FetchWait:     s.cfg.insertMaxAge(stream),
				FetchFill:     true,
				AliasPayload:  true, // rows copy what they keep (columns, driver)
				FetchMaxBytes: s.cfg.InsertMaxBytes,
				AckWait:       s.cfg.AckWait,
				RetryDelay:    s.cfg.RetryDelay,
			}, h, m, s.log)
			if err != nil {
				errs <- fmt.Errorf("store: consuming %s: %w", stream, err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	return errors.Join(func() []error {
		var all []error
		for err := range errs {
			all = append(all, err)
		}
		return all
	}()...)
}

func insertRows[R any](ctx context.Context, conn driver.Conn, buf *rowBuf[R], maxRows int, addr string) error {
	for lo := 0; lo < buf.len(); lo += maxRows {
		hi := min(lo+maxRows, buf.len())
		if err := insertRange(ctx, conn, buf, lo, hi); err != nil {
			return fmt.Errorf("store: inserting %d rows into %s at clickhouse %s: %w", hi-lo, buf.def.name, addr, err)
		}
	}
	return nil
}

func insertRange[R any](ctx context.Context, conn driver.Conn, buf *rowBuf[R], lo, hi int) error {
	batch, err := conn.PrepareBatch(ctx, buf.def.insertSQL())
	if err != nil {
		return err
	}
	for i, c := range buf.bufs {
		if err := batch.Column(i).Append(c.values(lo, hi)); err != nil {
			_ = batch.Abort()
			return fmt.Errorf("column %s: %w", buf.def.cols[i].colName(), err)
		}
	}
	return batch.Send()
}

// Insert writes batches as Run would (same rows, same duplicate skipping),
// for tools that load history without a stream (tests, imports).
func (s *Store) Insert(ctx context.Context, m *metrics.Metrics, batches ...*containv1.Batch) error {
	return s.handle(ctx, s.bufs(), decoded(batches), m)
}
