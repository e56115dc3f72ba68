package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/containsec/contain/internal/logfields"
)

// Prune drops, in every table of the database, the day partitions
// (PARTITION BY toYYYYMMDD) whose whole day ended more than olderThan ago,
// and returns them as "table/YYYYMMDD". Tables without day partitions
// (schema_migrations, baselines, image_audits, declarations) are left alone.
// ClickHouse 18.16 has no TTL: this is contain's retention.
func (s *Store) Prune(ctx context.Context, olderThan time.Duration) ([]string, error) {
	if olderThan < 24*time.Hour {
		return nil, errors.New("store: prune: older-than must be at least 24h (retention is by day)")
	}
	if err := s.Migrate(ctx); err != nil {
		return nil, err
	}
	cutoff := time.Now().UTC().Add(-olderThan)
	if s.nodes == nil {
		return s.prune(ctx, s.conn, s.addr, cutoff)
	}
	// On a cluster every node holds its own parts of <table>_local.
	var dropped []string
	for _, n := range s.nodes {
		d, err := s.prune(ctx, n.conn, n.addr, cutoff)
		dropped = append(dropped, d...)
		if err != nil {
			return dropped, err
		}
	}
	return dropped, nil
}

// prune drops the day partitions of conn's database that ended before
// cutoff.
func (s *Store) prune(ctx context.Context, conn driver.Conn, addr string, cutoff time.Time) ([]string, error) {
	rows, err := conn.Query(ctx,
		"SELECT DISTINCT table, partition FROM system.parts WHERE database = ? AND active ORDER BY table, partition", s.cfg.Database)
	if err != nil {
		return nil, fmt.Errorf("store: prune: listing partitions at clickhouse %s: %w", addr, err)
	}
	type part struct{ table, partition string }
	var old []part
	for rows.Next() {
		var p part
		if err := rows.Scan(&p.table, &p.partition); err != nil {
			rows.Close()
			return nil, fmt.Errorf("store: prune: %w", err)
		}
		day, err := time.Parse("20060102", p.partition)
		if err != nil || len(p.partition) != 8 {
			continue // not a day partition
		}
		if !day.Add(24 * time.Hour).After(cutoff) {
			old = append(old, p)
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: prune: %w", err)
	}
	var dropped []string
	for _, p := range old {
		// Both values come from system.parts and were checked above.
		if err := conn.Exec(ctx, fmt.Sprintf("ALTER TABLE %s DROP PARTITION %s", quoteIdent(p.table), p.partition)); err != nil {
			return dropped, fmt.Errorf("store: prune: dropping %s/%s: %w", p.table, p.partition, err)
		}
		s.log.Info("dropped partition", logfields.Table, p.table, logfields.Partition, p.partition)
		dropped = append(dropped, p.table+"/"+p.partition)
	}
	return dropped, nil
}

// quoteIdent quotes a table name for ClickHouse.
func quoteIdent(name string) string {
	out := []byte{'`'}
	for i := range len(name) {
		if name[i] == '`' || name[i] == '\\' {
			out = append(out, '\\')
		}
		out = append(out, name[i])
	}
	return string(append(out, '`'))
}
