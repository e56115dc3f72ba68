package store

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/containsec/contain/internal/bus"
	"github.com/containsec/contain/internal/metrics"
	"github.com/containsec/contain/internal/testenv"
	"github.com/containsec/contain/schemas/containv1"
)

// TestMigration8LowCardColumns: on a database of schema version 7 holding
// rows, migration 8 turns the per-container columns of events into
// LowCardinality(String) and keeps every row's values; rows stored after
// it read back and are counted by events_per_minute; the migrated
// database ends with the schema of a fresh install.
func TestMigration8LowCardColumns(t *testing.T) {
	ctx := context.Background()
	fresh := openStore(t, testConfig(t))
	s := openStore(t, testConfig(t))
	toVersion7(t, s)
	if got := columnTypes(t, s, "events")["image_digest"]; got != "String" {
		t.Fatalf("version 7: image_digest is %s, want String", got)
	}

	ids := containv1.NewIDGen()
	store := func(cid string) {
		batches := []*containv1.Batch{bus.NewProducer("host-a", "test").Batch(sampleEvents(ids, cid, time.Now().Add(-time.Minute)))}
		realisticValues(batches)
		if err := s.handle(ctx, s.bufs(), decoded(batches), metrics.New()); err != nil {
			t.Fatal(err)
		}
	}
	store("c-before-1")
	store("c-before-2")
	const snapshot = "SELECT toString(event_id), container_id, container_name, image_ref, image_digest, profile_ref, batch_producer FROM events ORDER BY event_id"
	before := queryStrings(t, s, snapshot)
	if len(before) < 10 || !strings.Contains(before[0], "sha256:") {
		t.Fatalf("version 7 database holds %d rows (%q…)", len(before), before)
	}

	// A migration cut short (a crash) retyped one column already.
	if err := s.Conn().Exec(ctx, "ALTER TABLE events MODIFY COLUMN profile_ref "+lowCardString); err != nil {
		t.Fatal(err)
	}
	if err := migrate(ctx, s.Conn(), schema{database: s.cfg.Database}, testenv.Logger(t)); err != nil {
		t.Fatal(err)
	}
	types := columnTypes(t, s, "events")
	for _, c := range lowCardEventColumns {
		if types[c.name] != lowCardString {
			t.Errorf("migrated: events.%s is %s, want %s", c.name, types[c.name], lowCardString)
		}
	}
	after := queryStrings(t, s, snapshot)
	if strings.Join(after, "\n") != strings.Join(before, "\n") {
		t.Errorf("rows changed by migration 8:\nbefore %q\nafter  %q", before, after)
	}

	store("c-after")
	if n, want := queryUint(t, s, "SELECT count() FROM events WHERE container_name != '' AND image_digest LIKE 'sha256:%'"), uint64(len(before))*3/2; n != want {
		t.Errorf("%d rows with their values after storing into the migrated table, want %d", n, want)
	}
	if n, want := queryUint(t, s, "SELECT toUInt64(sum(events)) FROM events_per_minute"), queryUint(t, s, "SELECT count() FROM events"); n != want {
		t.Errorf("events_per_minute counts %d events, events holds %d", n, want)
	}
	if n := queryUint(t, s, "SELECT count() FROM events_per_minute WHERE image_ref LIKE 'registry.example.com/%'"); n == 0 {
		t.Error("events_per_minute has no image_ref after the migration")
	}

	if got, want := schemaOf(t, s), schemaOf(t, fresh); got != want {
		t.Errorf("migrated schema differs from a fresh install's:\n%s\nfresh:\n%s", got, want)
	}
}

// toVersion7 turns s's database into schema version 7: migration 8
// undone (its columns String again, the view without the cast) and
// forgotten.
func toVersion7(t *testing.T, s *Store) {
	ctx := context.Background()
	revertLowCardColumns(t, s)
	if err := s.Conn().Exec(ctx, "ALTER TABLE schema_migrations DELETE WHERE version = 8"); err != nil {
		t.Fatal(err)
	}
	testenv.WaitForState(t, 10*time.Second, "mutation done", func() (bool, string) {
		n := queryUint(t, s, "SELECT count() FROM schema_migrations WHERE version = 8")
		return n == 0, fmt.Sprintf("%d rows of version 8", n)
	})
}

// schemaOf is every column (table, position, name, type, default) and
// every table's engine and view query of s's database, without its name.
func schemaOf(t *testing.T, s *Store) string {
	db := s.cfg.Database
	cols := queryStrings(t, s, fmt.Sprintf("SELECT concat(table, ' ', name, ' ', type, ' ', default_kind, ' ', default_expression) FROM system.columns WHERE database = '%s' ORDER BY table, name", db))
	tables := queryStrings(t, s, fmt.Sprintf("SELECT concat(name, ' ', engine, ' ', replaceAll(create_table_query, '%s.', '')) FROM system.tables WHERE database = '%s' ORDER BY name", db, db))
	return strings.Join(append(cols, tables...), "\n")
}

// queryStrings runs a query whose rows are strings (columns beyond the
// first are joined with tabs).
func queryStrings(t *testing.T, s *Store, q string) []string {
	t.Helper()
	rows, err := s.Conn().Query(context.Background(), q)
	if err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		vals := make([]string, len(rows.Columns()))
		ptrs := make([]any, len(vals))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
		out = append(out, strings.Join(vals, "\t"))
	}
	if err := rows.Err(); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	return out
}

// TestMigration8OutlastsOpen: on 18.16 migration 8's ALTER rewrites every
// part before it returns; on a big events table it outlasts Open's bound
// (dial + insert timeout). Open then reports the server unavailable
// instead of failing, and a later Migrate finds the columns retyped and
// completes, every row kept.
func TestMigration8OutlastsOpen(t *testing.T) {
	ctx := context.Background()
	cfg := testConfig(t)
	cfg.InsertTimeout, cfg.AckWait = time.Minute, 3*time.Minute // the INSERT … SELECT below
	s := openStore(t, cfg)
	toVersion7(t, s)
	const rows = 2_000_000
	if err := s.Conn().Exec(ctx, fmt.Sprintf(`INSERT INTO events (ts, event_id, container_id, container_name, image_ref, image_digest, profile_ref, batch_producer)
SELECT now() - number %% 3600, generateUUIDv4(), concat('c-', toString(number %% 100)), concat('web-', toString(number %% 100)),
    concat('registry.example.com/shop/svc', toString(number %% 10), ':1.0'), concat('sha256:', hex(SHA256(toString(number %% 10)))),
    concat('sha256:', hex(SHA256(toString(number %% 10))), '@3'), 'ea2bf6ae'
FROM numbers(%d)`, rows)); err != nil {
		t.Fatal(err)
	}
	short := cfg
	short.InsertTimeout, short.DialTimeout = 100*time.Millisecond, 100*time.Millisecond
	start := time.Now()
	s2, err := Open(ctx, short, testenv.Logger(t))
	if err != nil {
		t.Fatalf("Open while migration 8 outlasts its bound: %v (want the server marked down)", err)
	}
	t.Cleanup(func() { s2.Close() })
	t.Logf("Open returned after %v, ready %v", time.Since(start), s2.Ready())
	testenv.WaitForState(t, 60*time.Second, "migration 8 done", func() (bool, string) {
		err := s2.Migrate(ctx)
		return err == nil, fmt.Sprint(err)
	})
	t.Logf("migrated after %v", time.Since(start))
	if got := columnTypes(t, s, "events")["image_digest"]; got != lowCardString {
		t.Errorf("image_digest is %s", got)
	}
	if n := queryUint(t, s, "SELECT count() FROM events WHERE image_digest LIKE 'sha256:%' AND container_name LIKE 'web-%'"); n != rows {
		t.Errorf("%d rows with their values, want %d", n, rows)
	}
}
