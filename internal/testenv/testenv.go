// Package testenv gives tests the real things they run against: an
// embedded NATS server, the ClickHouse started by .ci/run, and runc
// containers on a busybox rootfs. A test that cannot get what it needs
// fails under CI (CI=true) and skips loudly elsewhere; it never passes
// without having run.
package testenv

import (
	"context"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/containsec/contain/internal/bus"
)

// Unavailable fails the test under CI and skips it elsewhere, saying why.
func Unavailable(t testing.TB, why string) {
	t.Helper()
	if os.Getenv("CI") != "" {
		t.Fatalf("required for this test under CI: %s", why)
	}
	t.Skipf("SKIPPED (not CI): %s", why)
}

// RequireRoot stops the test unless it runs as root.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		Unavailable(t, "root")
	}
}

// RequireCommand stops the test unless name is on PATH.
func RequireCommand(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		Unavailable(t, name+" on PATH (run scripts/setup.sh)")
	}
	return p
}

// Logger returns a logger writing to the test log at debug level.
func Logger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(string(p[:len(p)-1]))
	return len(p), nil
}

// Discard is a logger that writes nothing, for benchmarks.
func Discard() *slog.Logger { return slog.New(slog.DiscardHandler) }

// NATS starts an embedded NATS server with JetStream on a random port,
// creates contain's streams and returns its URL and a JetStream context.
func NATS(t testing.TB) (string, *nats.Conn, jetstream.JetStream) {
	t.Helper()
	s, err := bus.StartEmbedded(bus.EmbeddedConfig{Port: -1, StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Shutdown)
	nc, js, err := bus.Connect(s.ClientURL(), t.Name(), Discard())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	if err := bus.EnsureStreams(context.Background(), js, bus.StreamsConfig{}); err != nil {
		t.Fatal(err)
	}
	return s.ClientURL(), nc, js
}

// ClickHouseAddr is the native-protocol address of the test ClickHouse,
// from CONTAIN_TEST_CLICKHOUSE (set by .ci/run; e.g. 127.0.0.1:19000).
func ClickHouseAddr(t testing.TB) string {
	t.Helper()
	addr := os.Getenv("CONTAIN_TEST_CLICKHOUSE")
	if addr == "" {
		Unavailable(t, "a ClickHouse server: set CONTAIN_TEST_CLICKHOUSE=host:port (.ci/run starts one)")
	}
	return addr
}

// RepoRoot is the module root, found from this file's package directory.
func RepoRoot(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("go.mod not found above the test's directory")
		}
		dir = parent
	}
}
