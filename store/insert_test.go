package store

import (
	"context"
	"testing"
	"time"

	"github.com/containsec/contain/internal/metrics"
)

func TestGroups(t *testing.T) {
	for _, tc := range []struct {
		name      string
		sizes     []int
		n, min    int
		wantSizes []int
	}{
		{"one writer", []int{10, 10, 10}, 1, 1, []int{30}},
		{"small fetch stays one INSERT", []int{10, 10, 10}, 4, 100, []int{30}},
		{"split evenly", []int{10, 10, 10, 10}, 2, 10, []int{20, 20}},
		{"no more groups than messages", []int{1000}, 4, 10, []int{1000}},
		{"uneven messages", []int{50, 10, 10, 10, 10, 10}, 2, 10, []int{50, 50}},
		{"empty", nil, 2, 10, []int{0}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got []int
			for _, g := range groups(tc.sizes, tc.n, tc.min) {
				s := 0
				for _, n := range tc.sizes[g[0]:g[1]] {
					s += n
				}
				got = append(got, s)
			}
			if len(got) != len(tc.wantSizes) {
				t.Fatalf("groups %v, want %v", got, tc.wantSizes)
			}
			for i := range got {
				if got[i] != tc.wantSizes[i] {
					t.Fatalf("groups %v, want %v", got, tc.wantSizes)
				}
			}
		})
	}
}

// parts counts the INSERTs that made the active parts of table: a merged
// part spans the block numbers of the parts it merged.
func parts(t *testing.T, s *Store, table string) uint64 {
	t.Helper()
	return queryUint(t, s, "SELECT toUInt64(sum(max_block_number - min_block_number + 1)) FROM system.parts WHERE active AND database = currentDatabase() AND table = ?", table)
}

// A fetch is streamed in blocks of insert_block_rows, and each writer's
// blocks are one INSERT: one part per writer, every row there.
func TestInsertBlocksMakeOnePartPerWriter(t *testing.T) {
	for _, writers := range []int{1, 2} {
		cfg := testConfig(t)
		cfg.InsertBlockRows = 100
		cfg.InsertsInFlight = writers
		s := openStore(t, cfg)
		batches := benchBatches(4, 250) // 1000 rows: 10 blocks
		if err := s.handle(context.Background(), s.bufs(), decoded(batches), metrics.New()); err != nil {
			t.Fatal(err)
		}
		if n := queryUint(t, s, "SELECT count() FROM events"); n != 1000 {
			t.Errorf("writers=%d: %d rows, want 1000", writers, n)
		}
		if n := parts(t, s, "events"); n != uint64(writers) {
			t.Errorf("writers=%d: %d INSERTs made the events parts, want %d", writers, n, writers)
		}
	}
}

// An INSERT aborted after some of its blocks were sent leaves no row.
func TestInsertAbortedCommitsNothing(t *testing.T) {
	cfg := testConfig(t)
	s := openStore(t, cfg)
	ctx := context.Background()
	rs := newRowSet(false)
	w := &tableWriter[row]{conn: s.conn, buf: rs.events, blockRows: 100, maxRows: cfg.BatchMaxRows}
	now := time.Now()
	sent := 0
	for _, b := range benchBatches(1, 250) {
		for i, ev := range b.Events {
			bi := infoOf(b)
			rs.scratch.fill(&bi, i, ev, now, false)
			if err := w.add(ctx, &rs.scratch, rs.scratch.id); err != nil {
				t.Fatal(err)
			}
			sent++
		}
	}
	if w.batch == nil || w.inBatch != 200 {
		t.Fatalf("want an open INSERT with 2 blocks sent, got batch %v with %d rows", w.batch != nil, w.inBatch)
	}
	w.abort()
	// The server drops the INSERT when its connection goes; a new
	// INSERT on the pool must work, and only its rows count.
	if err := s.handle(ctx, s.bufs(), decoded(benchBatches(1, 10)), metrics.New()); err != nil {
		t.Fatal(err)
	}
	if n := queryUint(t, s, "SELECT count() FROM events"); n != 10 {
		t.Errorf("%d rows after an aborted INSERT of %d and one of 10, want 10", n, sent)
	}
}

// Each store.compression sends the same rows (the server decodes lz4,
// zstd and uncompressed blocks alike), and each is what goes on the wire:
// through a proxy that counts the client's bytes, lz4 and zstd send a
// fraction of what none sends.
func TestCompressions(t *testing.T) {
	batches := benchBatches(4, 250)
	var want uint64
	sent := map[string]int64{}
	for _, method := range []string{CompressionLZ4, CompressionZSTD, CompressionNone, CompressionAuto} {
		cfg := testConfig(t)
		p := newSwitchProxy(t, cfg.Addr[0])
		p.up()
		cfg.Addr = []string{p.addr}
		cfg.Compression = method
		cfg.InsertBlockRows = 300 // several blocks
		s := openStore(t, cfg)
		s.noLookup = true // the INSERT's bytes only
		before := p.sent.Load()
		if err := s.handle(context.Background(), s.bufs(), decoded(batches), metrics.New()); err != nil {
			t.Fatalf("%s: %v", method, err)
		}
		sent[method] = p.sent.Load() - before // the INSERT is committed: all written
		if n := queryUint(t, s, "SELECT count() FROM events"); n != 1000 {
			t.Errorf("%s: %d rows, want 1000", method, n)
		}
		sum := queryUint(t, s, "SELECT sum(cityHash64(toString(event_id), container_id, file_path, toString(ts))) FROM events")
		if want == 0 {
			want = sum
		} else if sum != want {
			t.Errorf("%s: rows hash %d, want %d (as lz4 wrote them)", method, sum, want)
		}
	}
	t.Logf("bytes sent for 1000 rows: %v", sent)
	for _, m := range []string{CompressionLZ4, CompressionZSTD} {
		if sent[m] <= 0 || 2*sent[m] > sent[CompressionNone] {
			t.Errorf("%s sent %d bytes, none %d: want under half", m, sent[m], sent[CompressionNone])
		}
	}
	// auto to a server on loopback (the proxy's 127.0.0.1) compresses
	// nothing: as many bytes as none, give or take the session's queries.
	if a, n := sent[CompressionAuto], sent[CompressionNone]; 10*a < 9*n || 10*a > 11*n {
		t.Errorf("auto to loopback sent %d bytes, none %d: want the same", a, n)
	}
}

// TestEffectiveCompression: auto (the default) compresses nothing to a
// server on loopback and lz4 to any other; a named method is kept.
func TestEffectiveCompression(t *testing.T) {
	for _, c := range []struct {
		name  string
		addrs []string
		want  string
	}{
		{CompressionAuto, []string{"127.0.0.1:9000"}, CompressionNone},
		{"", []string{"127.0.0.2:9000", "localhost:9000", "[::1]:9000"}, CompressionNone},
		{CompressionAuto, []string{"LOCALHOST:9000"}, CompressionNone},
		{CompressionAuto, []string{"127.0.0.1:9000", "10.0.0.5:9000"}, CompressionLZ4},
		{CompressionAuto, []string{"clickhouse.internal:9000"}, CompressionLZ4},
		{CompressionAuto, []string{"[::ffff:10.1.1.1]:9000"}, CompressionLZ4},
		{CompressionAuto, []string{"128.0.0.1:9000"}, CompressionLZ4},
		{CompressionAuto, nil, CompressionLZ4},
		{CompressionLZ4, []string{"127.0.0.1:9000"}, CompressionLZ4},
		{CompressionZSTD, []string{"127.0.0.1:9000"}, CompressionZSTD},
		{CompressionNone, []string{"10.0.0.5:9000"}, CompressionNone},
	} {
		if got := effectiveCompression(c.name, c.addrs); got != c.want {
			t.Errorf("effectiveCompression(%q, %v) = %q, want %q", c.name, c.addrs, got, c.want)
		}
	}
}
