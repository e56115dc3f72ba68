package main

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/containsec/contain/internal/auth"
	"github.com/containsec/contain/internal/bus"
	"github.com/containsec/contain/internal/testenv"
)

// authEnv is an embedded NATS running the shipped deploy/nats/contain.conf
// (hosts node-a and node-b), with fresh credentials for every user of the
// permission table in dir, the streams made by admin, and
// CONTAIN_AUTH_CREDS_DIR pointing the CLI at dir.
type authEnv struct {
	t   *testing.T
	url string
	dir string

	mu   sync.Mutex
	errs map[string][]error // asynchronous errors (permission violations) by user
}

func deployNATS(t *testing.T) *authEnv {
	t.Helper()
	dir, err := os.MkdirTemp("", "contain-creds-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	var users []string
	for _, u := range auth.Table(auth.DefaultNames(), deployConfHosts) {
		users = append(users, u.Name)
	}
	got, err := auth.Ensure(auth.EnsureConfig{Dir: dir, Users: users, Role: func(string) string { return "" }})
	if err != nil {
		t.Fatal(err)
	}
	for name, pub := range got.Keys {
		t.Setenv(auth.EnvVar(name), pub)
	}
	srv, err := bus.StartEmbedded(bus.EmbeddedConfig{Port: -1, StoreDir: t.TempDir(),
		ConfigFile: filepath.Join(testenv.RepoRoot(t), deployConf)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Shutdown(); srv.WaitForShutdown() })
	a := &authEnv{t: t, url: srv.ClientURL(), dir: dir, errs: map[string][]error{}}
	_, js := a.conn(auth.RoleAdmin)
	if err := bus.EnsureStreams(context.Background(), js, bus.StreamsConfig{}); err != nil {
		t.Fatalf("admin creating streams: %v", err)
	}
	t.Setenv("CONTAIN_AUTH_CREDS_DIR", dir)
	return a
}

// seed is the credentials file of user.
func (a *authEnv) seed(user string) string { return auth.SeedPath(a.dir, user) }

// conn connects as user with its credentials and inbox prefix.
func (a *authEnv) conn(user string) (*nats.Conn, jetstream.JetStream) {
	a.t.Helper()
	c, err := auth.LoadSeed(a.seed(user))
	if err != nil {
		a.t.Fatal(err)
	}
	nc, js, err := bus.Connect(a.url, user, testenv.Logger(a.t), nats.Nkey(c.PublicKey(), c.KP.Sign),
		nats.CustomInboxPrefix(auth.InboxPrefix(user)),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			a.mu.Lock()
			a.errs[user] = append(a.errs[user], err)
			a.mu.Unlock()
		}))
	if err != nil {
		a.t.Fatalf("connecting as %s: %v", user, err)
	}
	a.t.Cleanup(nc.Close)
	return nc, js
}

// violation reports whether user was refused permission on subject.
func (a *authEnv) violation(user, subject string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, err := range a.errs[user] {
		if errors.Is(err, nats.ErrPermissionViolation) && strings.Contains(err.Error(), `"`+subject+`"`) {
			return true
		}
	}
	return false
}

// stageConfig is cfg for one stage connecting to a as user.
func (a *authEnv) stageConfig(cfg Config, user string) *Config {
	c := cfg
	c.NATS.URL = a.url
	c.NATS.NkeySeed = a.seed(user)
	c.NATS.ManageStreams = false
	c.Metrics.Listen = ""
	return &c
}

// startStages runs each of stages as its own process would (`contain
// <stage> --nkey-seed <user>.nk`) in this process, connected to a's server
// as that stage's user, until the returned context's test ends; cleanup
// stops them and fails the test when one errs or does not stop within 15s.
// The context is cancelled at cleanup, before the stages are awaited.
func (a *authEnv) startStages(t *testing.T, cfg Config, host string, stages []string, log *slog.Logger) context.Context {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, len(stages))
	for _, s := range stages {
		sc := a.stageConfig(cfg, stageUser(s, host))
		go func() { done <- runStages(ctx, sc, []string{s}, false, log.With("user", stageUser(s, host))) }()
	}
	t.Cleanup(func() {
		cancel()
		for range stages {
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("contain stage: %v", err)
				}
			case <-time.After(15 * time.Second):
				t.Error("a stage did not stop within 15s")
			}
		}
	})
	return ctx
}
