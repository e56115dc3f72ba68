package main

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/containsec/contain/analyzer"
	"github.com/containsec/contain/cmd/internal/config"
	"github.com/containsec/contain/collector"
	"github.com/containsec/contain/console"
	"github.com/containsec/contain/enricher"
	"github.com/containsec/contain/internal/bus"
	"github.com/containsec/contain/internal/commits"
	"github.com/containsec/contain/internal/tlsconfig"
	"github.com/containsec/contain/notify"
	"github.com/containsec/contain/responder"
	"github.com/containsec/contain/schemas/containv1"
	"github.com/containsec/contain/store"
)

// Config is contain's whole configuration. Every field names its key in a
// config tag (nats.embedded.store_dir, collector.queue_len, ...);
// docs/config.md is generated from these structs (TestConfigDoc).
type Config struct {
	// Host names this machine in subjects and events; default: hostname.
	Host    string        `config:"host"`
	Log     LogConfig     `config:"log"`
	Metrics MetricsConfig `config:"metrics"`
	// Memory bounds the process's memory.
	Memory MemoryConfig `config:"memory"`
	// Runtime sizes the Go runtime: how many threads run Go code.
	Runtime RuntimeConfig `config:"runtime"`
	NATS    NATSConfig    `config:"nats"`
	// Auth: credentials and the embedded server's authentication.
	Auth AuthConfig `config:"auth"`

	Collector collector.Config `config:"collector"`
	Enricher  enricher.Config  `config:"enricher"`
	Analyzer  analyzer.Config  `config:"analyzer"`
	Responder responder.Config `config:"responder"`
	Store     store.Config     `config:"store"`
	// Commits traces commits of containers into images; the watcher runs
	// with the collector when commits.enabled.
	Commits commits.Config `config:"commits"`
	// Notify pushes alerts and actions to webhooks, syslog and
	// Falcosidekick (docs/outputs.md).
	Notify notify.Config `config:"notify"`
	// Console serves the web console (contain console, or inside contain
	// run when console.listen is set).
	Console console.Config `config:"console"`
	// Audit configures `contain audit`.
	Audit enricher.AuditConfig `config:"audit"`
}

// LogConfig configures the process logger.
type LogConfig struct {
	Level  string `config:"level"`  // debug, info, warn, error
	Format string `config:"format"` // text, json
}

// MetricsConfig configures the Prometheus endpoint.
type MetricsConfig struct {
	// Listen is host:port of /metrics; empty disables it.
	Listen string `config:"listen"`
}

// MemoryConfig bounds the process's memory.
type MemoryConfig struct {
	// LimitMB is the resident memory contain's stages are kept under, in
	// MiB: the Go runtime's soft memory limit is set to 80% of it (the
	// rest is for what the Go heap does not count); 0 leaves the runtime's
	// default (no limit). GOMEMLIMIT, when set, wins. While the live heap
	// is over 90% of the soft limit, consumers hold their next fetch back
	// (contain_memory_wait_seconds_total).
	LimitMB int `config:"limit_mb"`
	// GCPercent is the garbage collector's target (GOGC): the heap may
	// grow this many percent over the live heap before a collection. 100
	// is Go's default; more trades memory for CPU (docs/scaling.md: 400
	// cut the stages' CPU per event by about a fifth in the fleet load
	// test), the soft limit above still bounding the heap; -1 turns the
	// target off, so collections run only at the soft limit (needs
	// limit_mb). GOGC, when set, wins.
	GCPercent int `config:"gc_percent"`
}

// RuntimeConfig sizes the Go runtime of one contain process.
type RuntimeConfig struct {
	// MaxProcs is how many threads may run Go code at once (GOMAXPROCS).
	// 0 leaves Go's default: the machine's cores, or the container's CPU
	// limit. A scaled-out stage (enricher, analyzer instance, store) is
	// cheapest per event at 1: its goroutines hand work to each other on
	// one thread instead of waking idle ones (docs/scaling.md, "One
	// thread per stage instance"); scale it with more instances, not
	// more threads. `contain run` (every stage and the embedded NATS in
	// one process) wants the default. GOMAXPROCS, when set, wins.
	MaxProcs int `config:"max_procs"`
}

// NATSConfig says where the stages meet.
type NATSConfig struct {
	// URL of an external NATS server. Empty: `contain run` embeds one, the
	// single-stage commands dial nats://127.0.0.1:4222.
	URL string `config:"url"`
	// Credentials is an optional NATS .creds file (JWT accounts).
	Credentials string `config:"credentials"`
	// NkeySeed is the nkey seed file a single stage or a CLI command
	// connects with (<user>.nk, see auth.creds_dir). The CLI looks in
	// auth.creds_dir when it is empty; `contain run` with its embedded
	// server gives each stage its own from auth.creds_dir.
	NkeySeed string `config:"nkey_seed"`
	// InboxPrefix replaces _INBOX for replies; each user may only read
	// _INBOX.<user>.>. Empty: _INBOX.<user> from the seed file's name.
	InboxPrefix string `config:"inbox_prefix"`
	// ManageStreams creates and updates contain's streams at start. Turn it
	// off where an administrator manages them (deploy/nats/contain.conf
	// lets only admin do so).
	ManageStreams bool `config:"manage_streams"`
	// TLS dials an external NATS server over TLS (CA, client certificate,
	// server name; verification is skipped only by insecure_skip_verify).
	TLS tlsconfig.Config `config:"tls"`
	// MaxDeliver is how many times a stage's handler may fail on a batch
	// (while succeeding on others) before it goes to CONTAIN_DLQ.
	MaxDeliver int `config:"max_deliver"`
	// Health bounds /readyz: JetStream's answer time, each consumer's
	// lag and oldest unacknowledged message.
	Health   bus.HealthConfig   `config:"health"`
	Embedded bus.EmbeddedConfig `config:"embedded"`
	Streams  bus.StreamsConfig  `config:"streams"`
}

func defaultConfig() Config {
	host, _ := os.Hostname()
	return Config{
		Host:    host,
		Log:     LogConfig{Level: "info", Format: "text"},
		Metrics: MetricsConfig{Listen: "127.0.0.1:9464"},
		Memory:  MemoryConfig{LimitMB: 256, GCPercent: 100},
		NATS: NATSConfig{
			Embedded:      bus.EmbeddedConfig{Host: "127.0.0.1", Port: 4222, StoreDir: "/var/lib/contain/nats"},
			Streams:       bus.StreamsConfig{EventsMaxAge: 24 * time.Hour, AlertsMaxAge: 30 * 24 * time.Hour, Replicas: 1, MaxBytes: bus.DefaultStreamMaxBytes},
			ManageStreams: true,
			MaxDeliver:    bus.DefaultMaxDeliver,
			Health:        bus.DefaultHealthConfig(),
		},
		Auth:      AuthConfig{Enabled: true, CredsDir: defaultCredsDir, OperatorsGroup: "contain-operators"},
		Collector: collector.DefaultConfig(),
		Enricher:  enricher.DefaultConfig(),
		Analyzer:  analyzer.DefaultConfig(),
		Responder: responder.DefaultConfig(),
		Store:     store.DefaultConfig(),
		Commits:   commits.DefaultConfig(),
		Notify:    notify.DefaultConfig(),
		Console:   console.DefaultConfig(),
		Audit:     enricher.DefaultAuditConfig(),
	}
}

type globalOpts struct {
	file string
}

// flagKeys binds persistent flags to config keys.
var flagKeys = map[string]string{
	"host":           "host",
	"log-level":      "log.level",
	"nats-url":       "nats.url",
	"metrics-listen": "metrics.listen",
	"dry-run":        "responder.dry_run",
	"clickhouse":     "store.addr",
	"nats-store-dir": "nats.embedded.store_dir",
	"nkey-seed":      "nats.nkey_seed",
	"creds-dir":      "auth.creds_dir",
}

func (o *globalOpts) register(root *cobra.Command) {
	f := root.PersistentFlags()
	f.StringVarP(&o.file, "config", "c", os.Getenv("CONTAIN_CONFIG"), "YAML config file (env CONTAIN_CONFIG; default "+defaultConfigPath+" when it exists)")
	f.String("host", "", "host name used in subjects and events (host)")
	f.String("log-level", "", "debug|info|warn|error (log.level)")
	f.String("nats-url", "", "external NATS server; empty embeds one in contain run (nats.url)")
	f.String("metrics-listen", "", "host:port for /metrics, empty disables (metrics.listen)")
	f.Bool("dry-run", false, "responder records decisions without freezing (responder.dry_run)")
	f.StringSlice("clickhouse", nil, "ClickHouse native addresses (store.addr)")
	f.String("nats-store-dir", "", "embedded JetStream directory (nats.embedded.store_dir)")
	f.String("nkey-seed", "", "NATS credentials (nkey seed file, <user>.nk) to connect with (nats.nkey_seed, env CONTAIN_NATS_NKEY_SEED)")
	f.String("creds-dir", "", "where contain run keeps the per-role NATS credentials, and the CLI finds them (auth.creds_dir)")
}

// defaultConfigPath is read when it exists and neither -c nor
// CONTAIN_CONFIG names a file.
var defaultConfigPath = "/etc/contain/contain.yaml"

func (o *globalOpts) load(cmd *cobra.Command) (*Config, error) {
	cfg := defaultConfig()
	file := o.file
	if file == "" {
		if _, err := os.Stat(defaultConfigPath); err == nil {
			file = defaultConfigPath
		}
	}
	if err := config.Load(&cfg, file, cmd.Flags(), flagKeys); err != nil {
		return nil, err
	}
	if cfg.Host == "" {
		// host: "" in a file means the default, as deploy/contain.yaml says.
		cfg.Host, _ = os.Hostname()
	}
	cfg.propagate()
	return &cfg, nil
}

// propagate copies process-wide settings into the stage configs.
func (c *Config) propagate() {
	c.Collector.Host = c.Host
	c.Responder.Host = c.Host
	// The services the pipeline depends on are never frozen: the
	// processes of this host listening on their ports are protected (an
	// embedded NATS server is contain's own process, protected anyway).
	var deps []string
	for _, u := range strings.Split(c.NATS.URL, ",") {
		if u = strings.TrimSpace(u); u != "" {
			deps = append(deps, u)
		}
	}
	deps = append(deps, c.Store.Addr...)
	for _, a := range deps {
		if !slices.Contains(c.Responder.ProtectAddrs, a) {
			c.Responder.ProtectAddrs = append(c.Responder.ProtectAddrs, a)
		}
	}
}

// validate checks the process settings and the configs of the given stages.
func (c *Config) validate(stages []string) error {
	if c.Host == "" {
		return errors.New("host: must be set (or the hostname readable)")
	}
	if containv1.SubjectToken(c.Host) != c.Host {
		return fmt.Errorf("host: %q has characters not allowed in a NATS subject token (. * > space)", c.Host)
	}
	if _, err := parseLevel(c.Log.Level); err != nil {
		return err
	}
	if c.Log.Format != "text" && c.Log.Format != "json" {
		return fmt.Errorf("log.format: %q is not text or json", c.Log.Format)
	}
	if err := c.NATS.Streams.Validate(); err != nil {
		return err
	}
	if err := c.NATS.validateReliability(); err != nil {
		return err
	}
	if err := c.validateSeed(); err != nil {
		return err
	}
	if c.Console.Listen != "" {
		if err := c.Console.Validate(); err != nil {
			return err
		}
	}
	if c.Memory.LimitMB < 0 || (c.Memory.LimitMB > 0 && c.Memory.LimitMB < 64) {
		return fmt.Errorf("memory.limit_mb: %d must be 0 (no limit) or at least 64", c.Memory.LimitMB)
	}
	if c.Runtime.MaxProcs < 0 {
		return fmt.Errorf("runtime.max_procs: %d must be 0 (Go's default) or more", c.Runtime.MaxProcs)
	}
	if g := c.Memory.GCPercent; g == 0 || g < -1 || (g == -1 && c.Memory.LimitMB == 0) {
		return fmt.Errorf("memory.gc_percent: %d must be -1 (collect only at the soft limit, which needs memory.limit_mb) or at least 1", g)
	}
	if c.Auth.Enabled && c.Auth.CredsDir == "" {
		return errors.New("auth.creds_dir: must be set when auth.enabled")
	}
	if err := c.NATS.TLS.Validate("nats.tls"); err != nil {
		return err
	}
	if c.NATS.URL == "" {
		if err := c.NATS.Embedded.Validate(); err != nil {
			return err
		}
	}
	checks := map[string]func() error{
		stageCollector: c.Collector.Validate,
		stageEnricher:  c.Enricher.Validate,
		stageAnalyzer:  c.Analyzer.Validate,
		stageResponder: c.Responder.Validate,
		stageStore:     c.Store.Validate,
		stageNotify:    c.Notify.Validate,
	}
	if len(stages) == 1 && stages[0] == stageNotify && !c.Notify.Enabled() {
		return errors.New("notify.outputs: none configured (docs/outputs.md)")
	}
	if err := c.Audit.Validate(); err != nil {
		return err
	}
	if c.Commits.Enabled && slices.Contains(stages, stageCollector) {
		if err := c.Commits.Validate(); err != nil {
			return err
		}
	}
	for _, s := range stages {
		if err := checks[s](); err != nil {
			return fmt.Errorf("%s: %w", s, err)
		}
	}
	return nil
}

func parseLevel(s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return 0, fmt.Errorf("log.level: %q is not debug, info, warn or error", s)
	}
	return l, nil
}

func (c *Config) logger(w io.Writer) *slog.Logger {
	level, _ := parseLevel(c.Log.Level)
	opts := &slog.HandlerOptions{Level: level}
	if c.Log.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// printYAML prints the effective configuration as YAML that loads back to
// the same values (secrets masked).
func printYAML(w io.Writer, cfg *Config) error {
	out, err := config.YAML(cfg, isSecret)
	if err != nil {
		return err
	}
	_, err = w.Write(out)
	return err
}

// isSecret says which keys check-config never prints.
func isSecret(key string) bool {
	last := key[strings.LastIndex(key, ".")+1:]
	return last == "password" || strings.Contains(last, "secret") || strings.Contains(last, "token")
}

func schemaVersion() int { return containv1.SchemaVersion }
