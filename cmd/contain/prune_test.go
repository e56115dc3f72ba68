package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"

	"github.com/containsec/contain/internal/testenv"
)

// `contain store prune --older-than 30d` (documented in store/queries.md)
// drops the old day partitions of a real ClickHouse and keeps the rest.
func TestStorePruneCommand(t *testing.T) {
	addr := testenv.ClickHouseAddr(t)
	var b [6]byte
	_, _ = rand.Read(b[:])
	db := "contain_prune_" + hex.EncodeToString(b[:])
	ctx := context.Background()
	ch, err := clickhouse.Open(&clickhouse.Options{Addr: []string{addr}, Settings: clickhouse.Settings{"allow_experimental_low_cardinality_type": 1}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = ch.Exec(context.Background(), "DROP DATABASE IF EXISTS "+db)
		_ = ch.Close()
	})
	t.Setenv("CONTAIN_STORE_DATABASE", db)
	t.Setenv("CONTAIN_CONFIG", "")
	// Nothing to drop yet; this creates the schema.
	if out, err := runCLI(t, "store", "prune", "--older-than", "30d", "--clickhouse", addr); err != nil || !strings.Contains(out, "0 partitions") {
		t.Fatalf("prune of an empty store: %v\n%s", err, out)
	}
	now := time.Now().UTC()
	old := now.Add(-40 * 24 * time.Hour)
	ictx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	batch, err := ch.PrepareBatch(ictx, "INSERT INTO "+db+".events (ts, container_id)")
	if err != nil {
		t.Fatal(err)
	}
	for _, ts := range []time.Time{old, now.Add(-10 * 24 * time.Hour), now} {
		if err := batch.Append(ts, "c-prune"); err != nil {
			t.Fatal(err)
		}
	}
	if err := batch.Send(); err != nil {
		t.Fatal(err)
	}
	if _, err := runCLI(t, "store", "prune", "--older-than", "1h", "--clickhouse", addr); err == nil {
		t.Error("--older-than 1h accepted")
	}
	out, err := runCLI(t, "store", "prune", "--older-than", "30d", "--clickhouse", addr)
	if err != nil || !strings.Contains(out, "dropped events/"+old.Format("20060102")) {
		t.Fatalf("prune: %v\n%s", err, out)
	}
	var n uint64
	if err := ch.QueryRow(ctx, "SELECT count() FROM "+db+".events WHERE container_id = 'c-prune'").Scan(&n); err != nil || n != 2 {
		t.Errorf("%d rows left (%v), want the 2 younger than 30 days", n, err)
	}
}
