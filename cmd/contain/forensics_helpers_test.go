package main

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"

	"github.com/containsec/contain/internal/bus"
	"github.com/containsec/contain/internal/metrics"
	"github.com/containsec/contain/internal/testenv"
	"github.com/containsec/contain/schemas/containv1"
	"github.com/containsec/contain/store"
)

// seedStore opens a fresh database on the test ClickHouse (dropped at the
// end), inserts events through the store as the pipeline would, and sets
// CONTAIN_STORE_DATABASE so that the CLI reads it. It returns the address.
func seedStore(t testing.TB, evs ...*containv1.Event) (string, store.Config) {
	t.Helper()
	addr := testenv.ClickHouseAddr(t)
	cfg := store.DefaultConfig()
	cfg.Addr = []string{addr}
	cfg.Database = fmt.Sprintf("contain_forensics_%d", time.Now().UnixNano())
	cfg.DialTimeout = 2 * time.Second
	t.Cleanup(func() {
		conn, err := clickhouse.Open(&clickhouse.Options{Addr: []string{addr}})
		if err != nil {
			return
		}
		defer conn.Close()
		_ = conn.Exec(context.Background(), "DROP DATABASE IF EXISTS "+cfg.Database)
	})
	s, err := store.Open(context.Background(), cfg, testenv.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	p := bus.NewProducer("h1", "enricher")
	for i := 0; i < len(evs); i += 5000 {
		if err := s.Insert(context.Background(), metrics.New(), p.Batch(evs[i:min(i+5000, len(evs))])); err != nil {
			t.Fatal(err)
		}
	}
	t.Setenv("CONTAIN_STORE_DATABASE", cfg.Database)
	return addr, cfg
}
