package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/containsec/contain/analyzer"
	"github.com/containsec/contain/collector"
	"github.com/containsec/contain/enricher"
	"github.com/containsec/contain/internal/auth"
	"github.com/containsec/contain/internal/bus"
	"github.com/containsec/contain/internal/logfields"
	"github.com/containsec/contain/internal/metrics"
	"github.com/containsec/contain/internal/sdnotify"
	"github.com/containsec/contain/internal/tlsconfig"
	"github.com/containsec/contain/notify"
	"github.com/containsec/contain/responder"
	"github.com/containsec/contain/store"
)

const (
	stageCollector = "collector"
	stageEnricher  = "enricher"
	stageAnalyzer  = "analyzer"
	stageResponder = "responder"
	stageStore     = "store"
	stageNotify    = notify.StageNotify
)

// allStages run in `contain run`; notify only when notify.outputs is set.
var allStages = []string{stageStore, stageNotify, stageResponder, stageAnalyzer, stageEnricher, stageCollector}

// checkJetStreamStore is the /readyz check of the embedded JetStream's
// streams (each can store).
const checkJetStreamStore = "jetstream store"

// checkStarting is the /readyz check failing until every stage started.
const checkStarting = "starting"

const defaultNATSURL = "nats://127.0.0.1:4222"

func stageCommand(opts *globalOpts, use, short string, stages []string, embedded bool) *cobra.Command {
	var only []string
	cmd := &cobra.Command{
		Use:   use,
		Short: short,
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := opts.load(cmd)
			if err != nil {
				return err
			}
			run := stages
			if len(only) > 0 {
				run = only
				for _, s := range only {
					if !contains(allStages, s) {
						return fmt.Errorf("--stages: unknown stage %q (have %s)", s, strings.Join(allStages, ", "))
					}
				}
			}
			if err := cfg.validate(run); err != nil {
				return err
			}
			log := cfg.logger(os.Stderr)
			applyMemoryLimit(cfg.Memory, log)
			applyMaxProcs(cfg.Runtime, log)
			return runStages(cmd.Context(), cfg, run, embedded, log)
		},
	}
	if embedded {
		cmd.Flags().StringSliceVar(&only, "stages", nil, "run only these stages ("+strings.Join(allStages, ",")+")")
	}
	return cmd
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// dial connects to url as the user of the seed file (none: anonymous, or
// nats.credentials), with that user's inbox prefix.
func dial(cfg *Config, url, name, seed string, log *slog.Logger) (*nats.Conn, jetstream.JetStream, error) {
	var extra []nats.Option
	if cfg.NATS.Credentials != "" {
		extra = append(extra, nats.UserCredentials(cfg.NATS.Credentials))
	}
	inbox := cfg.NATS.InboxPrefix
	if seed != "" {
		c, err := auth.LoadSeed(seed)
		if err != nil {
			return nil, nil, fmt.Errorf("nats.nkey_seed: %w", err)
		}
		extra = append(extra, nats.Nkey(c.PublicKey(), c.KP.Sign))
		if inbox == "" {
			inbox = auth.InboxPrefix(c.Name)
		}
	}
	if opt, err := bus.TLSOption(cfg.NATS.TLS, "nats.tls"); err != nil {
		return nil, nil, err
	} else if opt != nil {
		extra = append(extra, opt)
	}
	if inbox != "" {
		extra = append(extra, nats.CustomInboxPrefix(inbox))
	}
	return bus.Connect(url, "contain-"+name+"@"+cfg.Host, log, extra...)
}

// connect dials the configured NATS (nats.url, else nats://127.0.0.1:4222)
// as nats.nkey_seed: the single-stage and CLI commands.
func connect(cfg *Config, name string, log *slog.Logger) (*nats.Conn, jetstream.JetStream, func(), error) {
	url := cfg.NATS.URL
	if url == "" {
		url = defaultNATSURL
	}
	nc, js, err := dial(cfg, url, name, cfg.NATS.NkeySeed, log)
	if err != nil {
		err = tlsconfig.Explain("nats.tls", err)
		return nil, nil, nil, err
	}
	return nc, js, func() { nc.Drain(); nc.Close() }, nil
}

// conns hands each stage its connection: its own user's with the
// embedded server's credentials, else one shared connection.
type conns struct {
	cfg   *Config
	url   string
	own   bool // one connection per user, from auth.creds_dir
	log   *slog.Logger
	mu    sync.Mutex
	open  map[string]*nats.Conn
	js    map[string]jetstream.JetStream
	names []string
}

func (c *conns) get(user string) (*nats.Conn, jetstream.JetStream, error) {
	key, seed := "", c.cfg.NATS.NkeySeed
	if c.own {
		key, seed = user, auth.SeedPath(c.cfg.Auth.CredsDir, user)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if nc, ok := c.open[key]; ok {
		return nc, c.js[key], nil
	}
	name := strings.Join(c.names, "+")
	if c.own {
		name = user
	}
	nc, js, err := dial(c.cfg, c.url, name, seed, c.log)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", user, err)
	}
	c.open[key], c.js[key] = nc, js
	return nc, js, nil
}

func (c *conns) close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, nc := range c.open {
		_ = nc.Drain()
		nc.Close()
	}
}

func runStages(ctx context.Context, cfg *Config, stages []string, embedded bool, log *slog.Logger) error {
	m := metrics.New()
	cs := &conns{cfg: cfg, url: cfg.NATS.URL, log: log, open: map[string]*nats.Conn{}, js: map[string]jetstream.JetStream{}, names: stages}
	var embeddedSrv *server.Server
	if cs.url == "" && embedded {
		users, err := embeddedAuth(cfg, log)
		if err != nil {
			return err
		}
		srv, err := bus.StartEmbedded(cfg.NATS.Embedded, users...)
		if err != nil {
			return err
		}
		cs.url, cs.own, embeddedSrv = srv.ClientURL(), users != nil, srv
		log.Info("embedded NATS started", logfields.URL, cs.url, logfields.StoreDir, cfg.NATS.Embedded.StoreDir, logfields.Auth, users != nil)
		defer func() { srv.Shutdown(); srv.WaitForShutdown() }()
	} else {
		if cs.url == "" {
			cs.url = defaultNATSURL
		}
		trustLocalOperator(cfg, stages, log)
	}
	defer cs.close()
	if cfg.NATS.ManageStreams {
		_, js, err := cs.get(auth.RoleAdmin)
		if err != nil {
			return err
		}
		if err := bus.EnsureStreams(ctx, js, cfg.NATS.Streams); err != nil {
			return fmt.Errorf("%w (set nats.manage_streams: false where an administrator manages them)", err)
		}
	}
	rep := newReporter(cfg, m, log)
	ctx = bus.WithReporter(ctx, rep)
	if embeddedSrv != nil {
		// A stream that cannot store (disk full) is not ready, though
		// JetStream still answers.
		rep.Health.Register(checkJetStreamStore, bus.EmbeddedJetStreamCheck(embeddedSrv))
	}
	// /readyz says not ready until every stage is built and started (a
	// process with its metrics port open but its collector still loading
	// is not ready).
	rep.Health.Set(checkStarting, errors.New("stages starting"))
	if cfg.Metrics.Listen != "" {
		stopMetrics, err := serveMetrics(cfg.Metrics.Listen, m, rep.Health, cfg.NATS.Health, log)
		if err != nil {
			return err
		}
		defer stopMetrics()
	}

	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var wg sync.WaitGroup
	start := func(name string, run func(context.Context) error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := run(ctx); err != nil && ctx.Err() == nil {
				cancel(fmt.Errorf("%s: %w", name, err))
			}
		}()
	}
	slog := func(stage string) *slog.Logger { return log.With(logfields.Stage, stage) }
	for _, s := range stages {
		if s == stageNotify && !cfg.Notify.Enabled() {
			continue
		}
		nc, js, err := cs.get(stageUser(s, cfg.Host))
		if err != nil {
			return err
		}
		registerNATSCheck(rep.Health, cs.own, s, nc, js, cfg.NATS.Health)
		switch s {
		case stageStore:
			start(s, func(ctx context.Context) error {
				st, err := store.Open(ctx, cfg.Store, slog(s))
				if err != nil {
					return err
				}
				defer st.Close()
				rep.Health.Register("clickhouse", clickhouseCheck(st))
				defer rep.Health.Remove("clickhouse")
				return st.Run(ctx, js, m)
			})
		case stageResponder:
			r, err := responder.New(cfg.Responder, nc, js, m, slog(s))
			if err != nil {
				return fmt.Errorf("responder: %w", err)
			}
			start(s, r.Run)
		case stageAnalyzer:
			acfg := cfg.Analyzer
			acfg.KVReplicas = cmp.Or(acfg.KVReplicas, cfg.NATS.Streams.Replicas)
			a, err := analyzer.New(acfg, js, m, slog(s))
			if err != nil {
				return fmt.Errorf("analyzer: %w", err)
			}
			// Not ready until the stored baselines are loaded (retried).
			rep.Health.Register("analyzer baselines", func(context.Context) error { return a.Ready() })
			start(s, a.Run)
		case stageNotify:
			n, err := notify.New(cfg.Notify, js, m, slog(s))
			if err != nil {
				return fmt.Errorf("notify: %w", err)
			}
			start(s, n.Run)
		case stageEnricher:
			ecfg := cfg.Enricher
			ecfg.KVReplicas = cmp.Or(ecfg.KVReplicas, cfg.NATS.Streams.Replicas)
			e, err := enricher.New(ecfg, js, m, slog(s))
			if err != nil {
				return fmt.Errorf("enricher: %w", err)
			}
			// Events go to their baseline group's partition when the
			// analyzer is partitioned (docs/design/022).
			e.SetRouter(analyzer.NewRouter(cfg.Analyzer))
			start(s, e.Run)
		case stageCollector:
			c, err := collector.New(cfg.Collector, js, m, slog(s))
			if err != nil {
				return err
			}
			start(s, c.Run)
			if cfg.Commits.Enabled {
				w, err := newCommitWatcher(cfg, js, m, slog(stageCommits))
				if err != nil {
					return err
				}
				start(stageCommits, w.Run)
			}
		}
	}
	// Every stage is built: the collector's programs are loaded, the
	// responder's clients made. Keep only what running needs.
	if err := dropCaps(log); err != nil {
		log.Warn("least privilege", logfields.Err, err)
	}
	if cfg.Console.Listen != "" && embedded {
		c := *cfg
		c.NATS.URL = cs.url
		srv, stop, err := newConsole(ctx, &c, log.With(logfields.Stage, "console"), m.Registry, rep.Health)
		if err != nil {
			return err
		}
		defer stop()
		start("console", srv.ListenAndServe)
	}
	rep.Health.Remove(checkStarting)
	log.Info("contain running", logfields.Version, versionString(), logfields.Host, cfg.Host, logfields.Stages, strings.Join(stages, ","))
	// systemd (Type=notify) starts what depends on contain only now.
	if _, err := sdnotify.Notify(sdnotify.Ready, sdnotify.Status("running "+strings.Join(stages, ","))); err != nil {
		log.Warn("telling systemd contain is ready", logfields.Err, err)
	}
	defer func() { _, _ = sdnotify.Notify(sdnotify.Stopping) }()
	<-ctx.Done()
	cause := context.Cause(ctx)
	wg.Wait()
	if cause != nil && !errors.Is(cause, context.Canceled) {
		return cause
	}
	log.Info("contain stopped")
	return nil
}

func serveMetrics(addr string, m *metrics.Metrics, health *bus.Health, hc bus.HealthConfig, log *slog.Logger) (func(), error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("metrics.listen %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", m.Handler())
	// /healthz: the process answers (alive). /readyz: NATS connected,
	// JetStream answering, every consumer within its bounds, every sink
	// check passing.
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	mux.Handle("/readyz", health.ReadyHandler(hc.JetstreamTimeout+time.Second))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	log.Info("metrics listening", logfields.Addr, ln.Addr().String())
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	}, nil
}
