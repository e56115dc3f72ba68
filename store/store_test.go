package store

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/containsec/contain/internal/bus"
	"github.com/containsec/contain/internal/metrics"
	"github.com/containsec/contain/internal/testenv"
	"github.com/containsec/contain/schemas/containv1"
)

func TestConfigValidate(t *testing.T) {
	if err := DefaultConfig().Validate(); err != nil {
		t.Fatalf("default config: %v", err)
	}
	for key, mod := range map[string]func(*Config){
		"store.addr":                  func(c *Config) { c.Addr = nil },
		"store.database":              func(c *Config) { c.Database = "x; DROP TABLE y" },
		"store.batch_max_rows":        func(c *Config) { c.BatchMaxRows = 0 },
		"store.ack_wait":              func(c *Config) { c.AckWait = c.InsertTimeout },
		"store.insert_max_age":        func(c *Config) { c.InsertMaxAge = 0 },
		"store.insert_max_bytes":      func(c *Config) { c.InsertMaxBytes = 1 << 20 },
		"store.inserts_in_flight":     func(c *Config) { c.InsertsInFlight = 0 },
		"store.insert_block_rows":     func(c *Config) { c.InsertBlockRows = 0 },
		"store.alerts_insert_max_age": func(c *Config) { c.AlertsInsertMaxAge = -time.Second },
		"store.retention":             func(c *Config) { c.Retention = time.Hour },
		"store.images_bucket":         func(c *Config) { c.ImagesBucket = "a.b" },
		"store.profiles_bucket":       func(c *Config) { c.ProfilesBucket = "a b" },
		"store.baselines_bucket":      func(c *Config) { c.BaselinesBucket = "$KV" },
		"store.compression":           func(c *Config) { c.Compression = "snappy" },
	} {
		c := DefaultConfig()
		mod(&c)
		err := c.Validate()
		if err == nil || !strings.HasPrefix(err.Error(), key+":") {
			t.Errorf("%s: got %v, want an error naming the key", key, err)
		}
	}
}

func TestMigrationsIdempotent(t *testing.T) {
	cfg := testConfig(t)
	s1 := openStore(t, cfg)
	s2 := openStore(t, cfg) // a second Open on the same database
	if err := migrate(context.Background(), s2.Conn(), schema{database: cfg.Database}, testenv.Logger(t)); err != nil {
		t.Fatalf("third run: %v", err)
	}
	if n := queryUint(t, s1, "SELECT count() FROM schema_migrations"); n != uint64(len(migrations)) {
		t.Errorf("schema_migrations has %d rows, want %d (one per migration)", n, len(migrations))
	}
	if n := queryUint(t, s1, "SELECT toUInt64(max(version)) FROM schema_migrations"); n != uint64(migrations[len(migrations)-1].version) {
		t.Errorf("latest applied migration %d, want %d", n, migrations[len(migrations)-1].version)
	}
	for i, m := range migrations {
		if i > 0 && m.version <= migrations[i-1].version {
			t.Errorf("migration %d is not after %d", m.version, migrations[i-1].version)
		}
	}
	for _, table := range []string{"events", "alerts", "actions", "events_per_minute", "events_per_minute_mv", "baselines", "image_audits", "declarations"} {
		if n := queryUint(t, s1, "SELECT count() FROM system.tables WHERE database = ? AND name = ?", cfg.Database, table); n != 1 {
			t.Errorf("table %s: found %d", table, n)
		}
	}
}

// TestAddColumnMigration: a migration's added columns are in place, and
// adding one again (a crash before the migration was recorded) is
// harmless, as is a database that predates the migration.
func TestAddColumnMigration(t *testing.T) {
	cfg := testConfig(t)
	s := openStore(t, cfg)
	ctx := context.Background()
	for _, m := range migrations {
		for _, c := range m.columns {
			if n := queryUint(t, s, "SELECT count() FROM system.columns WHERE database = ? AND table = ? AND name = ?", cfg.Database, c.table, c.name); n != 1 {
				t.Errorf("column %s.%s: found %d", c.table, c.name, n)
			}
			if err := addColumn(ctx, s.Conn(), c); err != nil {
				t.Errorf("adding %s.%s again: %v", c.table, c.name, err)
			}
		}
	}
	// An older database: drop a column and forget migration 4; migrating
	// again restores it.
	if err := s.Conn().Exec(ctx, "ALTER TABLE events DROP COLUMN file_uid"); err != nil {
		t.Fatal(err)
	}
	if err := s.Conn().Exec(ctx, "ALTER TABLE schema_migrations DELETE WHERE version = 4"); err != nil {
		t.Fatal(err)
	}
	testenv.WaitForState(t, 10*time.Second, "mutation done", func() (bool, string) {
		n := queryUint(t, s, "SELECT count() FROM schema_migrations WHERE version = 4")
		return n == 0, fmt.Sprintf("%d rows of version 4", n)
	})
	if err := migrate(ctx, s.Conn(), schema{database: s.cfg.Database}, testenv.Logger(t)); err != nil {
		t.Fatal(err)
	}
	if n := queryUint(t, s, "SELECT count() FROM system.columns WHERE database = ? AND table = 'events' AND name = 'file_uid'", cfg.Database); n != 1 {
		t.Fatalf("file_uid not restored by migration 4")
	}
}

func TestOpenRejectsServerErrors(t *testing.T) {
	cfg := testConfig(t)
	cfg.Password = "wrong-password-for-default"
	_, err := Open(context.Background(), cfg, testenv.Logger(t))
	if err == nil {
		t.Fatal("Open with a wrong password succeeded")
	}
	if !strings.Contains(err.Error(), cfg.Addr[0]) {
		t.Errorf("error %q does not name the address", err)
	}
}

func TestMalformedMessageSkipped(t *testing.T) {
	s := openStore(t, testConfig(t))
	m := metrics.New()
	_, _, js := testenv.NATS(t)
	runStoreOn(t, s, m, js)
	ctx := context.Background()
	if _, err := js.Publish(ctx, containv1.EventsSubject("h1"), []byte("\xff\x00 this is not a batch")); err != nil {
		t.Fatal(err)
	}
	p := bus.NewProducer("h1", "enricher")
	ids := containv1.NewIDGen()
	ev := &containv1.Event{Id: ids.Next(), Host: "h1", ContainerId: "c-malformed", Kind: containv1.Kind_KIND_LOSS,
		WallNs: time.Now().UnixNano(), Body: &containv1.Event_Loss{Loss: &containv1.Loss{Source: "ringbuf", Count: 3}}}
	if err := bus.Publish(ctx, js, containv1.EventsSubject("h1"), p.Batch([]*containv1.Event{ev})); err != nil {
		t.Fatal(err)
	}
	testenv.WaitForState(t, 20*time.Second, "the valid event after the malformed one", func() (bool, string) {
		n := queryUint(t, s, "SELECT count() FROM events WHERE container_id = 'c-malformed'")
		return n == 1, ""
	})
	if got := testutil.ToFloat64(m.Malformed.WithLabelValues(metrics.StageStore)); got != 1 {
		t.Errorf("malformed counter = %v, want 1", got)
	}
}

func TestUnavailableAtStartAndDuringRun(t *testing.T) {
	cfg := testConfig(t)
	proxy := newSwitchProxy(t, cfg.Addr[0])
	cfg.Addr = []string{proxy.addr}
	ctx := context.Background()

	// Down at start: Open still returns, not ready.
	s, err := Open(ctx, cfg, testenv.Logger(t))
	if err != nil {
		t.Fatalf("Open with ClickHouse unreachable: %v", err)
	}
	defer s.Close()
	if s.Ready() {
		t.Fatal("ready although ClickHouse was unreachable")
	}
	m := metrics.New()
	_, _, js := testenv.NATS(t)
	runStoreOn(t, s, m, js)

	ids := containv1.NewIDGen()
	p := bus.NewProducer("h1", "enricher")
	published := 0
	publish := func(batches, per int) {
		t.Helper()
		for range batches {
			evs := make([]*containv1.Event, per)
			for i := range evs {
				evs[i] = &containv1.Event{Id: ids.Next(), Host: "h1", ContainerId: "c-outage", Kind: containv1.Kind_KIND_EXEC,
					WallNs: time.Now().UnixNano(), Body: &containv1.Event_Exec{Exec: &containv1.Exec{Filename: "/bin/true"}}}
			}
			if err := bus.Publish(ctx, js, containv1.EventsSubject("h1"), p.Batch(evs)); err != nil {
				t.Fatal(err)
			}
			published += per
		}
	}
	publish(5, 100)
	errorsSeen := func() float64 { return testutil.ToFloat64(m.Errors.WithLabelValues(metrics.StageStore, "migrate")) }
	testenv.WaitForState(t, 10*time.Second, "failed attempts while ClickHouse is down", func() (bool, string) {
		return errorsSeen() >= 2, ""
	})
	proxy.up()
	count := func() (bool, string) {
		n := queryUintNoFail(s, "SELECT uniqExact(event_id) FROM events WHERE container_id = 'c-outage'")
		return n == uint64(published), "have " + itoa(n) + " want " + itoa(uint64(published))
	}
	testenv.WaitForState(t, 30*time.Second, "rows published while down at start", count)

	// Down during the run.
	proxy.down()
	before := testutil.ToFloat64(m.Errors.WithLabelValues(metrics.StageStore, "insert"))
	publish(7, 100)
	testenv.WaitForState(t, 10*time.Second, "failed inserts while ClickHouse is down", func() (bool, string) {
		return testutil.ToFloat64(m.Errors.WithLabelValues(metrics.StageStore, "insert")) >= before+2, ""
	})
	proxy.up()
	testenv.WaitForState(t, 40*time.Second, "rows published while down during the run", count)
	if total := queryUint(t, s, "SELECT count() FROM events FINAL WHERE container_id = 'c-outage'"); total != uint64(published) {
		t.Errorf("FINAL count %d, want %d", total, published)
	}
}

// queryUintNoFail is queryUint for polling through an outage.
func queryUintNoFail(s *Store, q string) uint64 {
	var n uint64
	if err := s.Conn().QueryRow(context.Background(), q).Scan(&n); err != nil {
		return 0
	}
	return n
}

func itoa(n uint64) string { return strconv.FormatUint(n, 10) }

// runStoreOn runs s on js until the test ends and checks that Run returned.
func runStoreOn(t *testing.T, s *Store, m *metrics.Metrics, js jetstream.JetStream) {
	t.Helper()
	testenv.Go(t, 15*time.Second, func(ctx context.Context) error { return s.Run(ctx, js, m) })
}

// A ClickHouse that accepts connections but never answers: inserts time
// out (InsertTimeout), are retried with back-off, and nothing is lost.
func TestHungServer(t *testing.T) {
	cfg := testConfig(t)
	proxy := newSwitchProxy(t, cfg.Addr[0])
	proxy.up()
	cfg.Addr = []string{proxy.addr}
	cfg.InsertTimeout = 500 * time.Millisecond
	cfg.AckWait = 3 * time.Second
	s := openStore(t, cfg)
	m := metrics.New()
	_, _, js := testenv.NATS(t)
	runStoreOn(t, s, m, js)
	proxy.hangUp()

	ctx := context.Background()
	ids := containv1.NewIDGen()
	p := bus.NewProducer("host-a", "enricher") // sampleEvents' host
	const batches, per = 4, 50
	for range batches {
		evs := sampleEvents(ids, "c-hung", time.Now())[:1]
		for range per - 1 {
			e := sampleEvents(ids, "c-hung", time.Now())[0]
			evs = append(evs, e)
		}
		if err := bus.Publish(ctx, js, containv1.EventsSubject("host-a"), p.Batch(evs)); err != nil {
			t.Fatal(err)
		}
	}
	insertErrors := func() float64 { return testutil.ToFloat64(m.Errors.WithLabelValues(metrics.StageStore, "insert")) }
	testenv.WaitForState(t, 10*time.Second, "inserts timing out on the hung server", func() (bool, string) { return insertErrors() >= 2, "" })
	proxy.up()
	testenv.WaitForState(t, 40*time.Second, "all rows after the server answers again", func() (bool, string) {
		n := queryUintNoFail(s, "SELECT uniqExact(event_id) FROM events WHERE container_id = 'c-hung'")
		return n == batches*per, "have " + itoa(n)
	})
}

// TestAlertsInsertMaxAge: the alerts and actions streams fill for
// alerts_insert_max_age (0: 5 × insert_max_age), the events stream for
// insert_max_age, and the ack_wait rule holds for the longer of the two.
func TestAlertsInsertMaxAge(t *testing.T) {
	c := DefaultConfig()
	for stream, want := range map[string]time.Duration{
		containv1.StreamEvents:  c.InsertMaxAge,
		containv1.StreamAlerts:  5 * c.InsertMaxAge,
		containv1.StreamActions: 5 * c.InsertMaxAge,
	} {
		if got := c.insertMaxAge(stream); got != want {
			t.Errorf("%s: fill %v, want %v", stream, got, want)
		}
	}
	c.AlertsInsertMaxAge = 2 * time.Second
	if got := c.insertMaxAge(containv1.StreamAlerts); got != 2*time.Second {
		t.Errorf("alerts with alerts_insert_max_age 2s: fill %v", got)
	}
	c.AlertsInsertMaxAge = c.AckWait
	if err := c.Validate(); err == nil || !strings.HasPrefix(err.Error(), "store.ack_wait:") {
		t.Errorf("alerts_insert_max_age = ack_wait: %v, want an error naming store.ack_wait", err)
	}
}
