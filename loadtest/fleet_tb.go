package loadtest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/containsec/contain/internal/bus"
	"github.com/containsec/contain/internal/logfields"
	"github.com/containsec/contain/internal/testenv"
)

// procTB lets a command use the test environment's helpers (the NATS
// cluster of testenv.StartNATSCluster): temporary directories under dir,
// cleanups run by cleanup, and a Fatal that unwinds to startNATSCluster as
// an error. Only the methods those helpers call are implemented.
type procTB struct {
	testing.TB // nil: any other method panics
	dir        string
	log        *slog.Logger
	cleanups   []func()
	failed     bool
	n          int
}

// tbFatal is the panic value of procTB.Fatal.
type tbFatal struct{ msg string }

func (t *procTB) Helper() {}

func (t *procTB) TempDir() string {
	t.n++
	d := fmt.Sprintf("%s/tmp%d", t.dir, t.n)
	if err := os.MkdirAll(d, 0o755); err != nil {
		t.Fatal(err)
	}
	return d
}

func (t *procTB) Cleanup(f func()) { t.cleanups = append(t.cleanups, f) }
func (t *procTB) Failed() bool     { return t.failed }
func (t *procTB) Logf(format string, args ...any) {
	t.log.Info(fmt.Sprintf(format, args...))
}
func (t *procTB) Errorf(format string, args ...any) {
	t.failed = true
	t.log.Error(fmt.Sprintf(format, args...))
}
func (t *procTB) Fatal(args ...any) { t.failed = true; panic(tbFatal{fmt.Sprint(args...)}) }
func (t *procTB) Fatalf(format string, args ...any) {
	t.failed = true
	panic(tbFatal{fmt.Sprintf(format, args...)})
}

// cleanup runs the registered cleanups, last first.
func (t *procTB) cleanup() {
	for i := len(t.cleanups) - 1; i >= 0; i-- {
		t.cleanups[i]()
	}
	t.cleanups = nil
}

// startNATSCluster starts n nats-server processes (testenv.StartNATSCluster)
// with their files under dir; the returned func kills them.
func startNATSCluster(dir string, n int, log *slog.Logger) (c *testenv.NATSCluster, stop func(), err error) {
	tb := &procTB{dir: dir, log: log}
	defer func() {
		if r := recover(); r != nil {
			f, ok := r.(tbFatal)
			if !ok {
				panic(r)
			}
			tb.cleanup()
			c, stop, err = nil, nil, fmt.Errorf("loadtest: nats cluster: %s", f.msg)
		}
	}()
	c = testenv.StartNATSCluster(tb, n)
	log.Info("nats cluster up", logfields.URL, c.URLs())
	return c, tb.cleanup, nil
}

// ensureFleetStreams creates the streams on a cluster that has just
// elected its meta leader: the first R3 stream can outlast the client's
// request timeout while the nodes open their stores (seen once on a cold
// machine), so each attempt that times out is logged and retried for up
// to a minute before the run fails.
func ensureFleetStreams(ctx context.Context, js jetstream.JetStream, c bus.StreamsConfig, log *slog.Logger) error {
	deadline := time.Now().Add(time.Minute)
	for attempt := 1; ; attempt++ {
		err := bus.EnsureStreams(ctx, js, c)
		if err == nil || !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, nats.ErrTimeout) || time.Now().After(deadline) || ctx.Err() != nil {
			return err
		}
		log.Warn("fleet: creating streams timed out, retrying", logfields.Attempt, attempt, logfields.Err, err)
		time.Sleep(time.Second)
	}
}
