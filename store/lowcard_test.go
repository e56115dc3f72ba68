package store

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"
	"unsafe"

	chcol "github.com/ClickHouse/clickhouse-go/v2/lib/column"
)

// TestLowCardinalityFastPath inserts LowCardinality(String) values
// through appendLowCard (one INSERT of two blocks; the second block's
// dictionary needs 16-bit keys) and reads them back as sent. It fails when
// the driver's column no longer has the layout appendLowCard reaches
// into, so a driver bump cannot lose the fast path unnoticed.
func TestLowCardinalityFastPath(t *testing.T) {
	if !lowCard.ok {
		t.Fatalf("clickhouse-go's LowCardinality column changed layout: appendLowCard falls back to AppendRow (store/lowcard.go); update lowCardLayout")
	}
	s := openStore(t, testConfig(t))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := s.conn.Exec(ctx, "CREATE TABLE lc (n UInt32, v LowCardinality(String)) ENGINE = MergeTree ORDER BY n"); err != nil {
		t.Fatal(err)
	}
	// Block 1: a few values, repeats, the empty string (the default at
	// row 0 of the dictionary).
	var blocks [][]string
	blocks = append(blocks, []string{"", "exec", "exec", "", "syscall", "exec", "ümlaut", "syscall"})
	// Block 2: values cycling through more than appendLowCard's recent
	// values, and back. Block 3: 300 distinct values.
	var cycle []string
	for i := range 40 {
		cycle = append(cycle, []string{"a", "b", "c", "d", "e"}[i%(2+i/10)])
	}
	blocks = append(blocks, cycle)
	var many []string
	for i := range 600 {
		many = append(many, fmt.Sprintf("v%03d", i%300))
	}
	blocks = append(blocks, many)
	batch, err := s.conn.PrepareBatch(ctx, "INSERT INTO lc (n, v)")
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	var d lowCardDict
	for _, vals := range blocks {
		ns := make([]uint32, len(vals))
		for i := range ns {
			ns[i] = uint32(len(want) + i)
		}
		cols := batch.Columns()
		if _, err := cols[0].Append(ns); err != nil {
			t.Fatal(err)
		}
		// Payload-like strings: the column must not keep them.
		buf, raw := make([]string, len(vals)), make([][]byte, len(vals))
		for i, v := range vals {
			if v != "" {
				raw[i] = []byte(v)
				buf[i] = unsafe.String(&raw[i][0], len(v))
			}
		}
		done, err := d.appendLowCard(cols[1].(*chcol.LowCardinality), buf)
		if !done || err != nil {
			t.Fatalf("appendLowCard: done %v, %v", done, err)
		}
		for _, b := range raw {
			for i := range b {
				b[i] = 'x'
			}
		}
		want = append(want, vals...)
		if err := batch.Flush(); err != nil {
			t.Fatal(err)
		}
	}
	if err := batch.Send(); err != nil {
		t.Fatal(err)
	}
	rows, err := s.conn.Query(ctx, "SELECT v FROM lc ORDER BY n")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var got []string
	for rows.Next() {
		var v string
		if err := rows.Scan(&v); err != nil {
			t.Fatal(err)
		}
		got = append(got, v)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got, want) {
		t.Fatalf("read back %d values, want %d; first differences: %v", len(got), len(want), firstDiff(got, want))
	}
}

func firstDiff(got, want []string) string {
	for i := range min(len(got), len(want)) {
		if got[i] != want[i] {
			return fmt.Sprintf("row %d: %q, want %q", i, got[i], want[i])
		}
	}
	return "lengths differ"
}
