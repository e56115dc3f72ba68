package main

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/containsec/contain/internal/auth"
	"github.com/containsec/contain/internal/logfields"
)

// AuthConfig says how contain authenticates on NATS.
type AuthConfig struct {
	// Enabled makes `contain run`'s embedded NATS require credentials: at
	// first start it creates one per user of the permission table
	// (internal/auth) in CredsDir, and each stage connects with its own.
	// Turning it off lets any local process publish, release and read
	// everything: only for development.
	Enabled bool `config:"enabled"`
	// CredsDir holds the credentials, <user>.nk (root-owned, 0600).
	CredsDir string `config:"creds_dir"`
	// OperatorsGroup may read operator.nk and reader.nk (0640 root:group)
	// when the group exists; otherwise only root can use the CLI.
	OperatorsGroup string `config:"operators_group"`
}

const defaultCredsDir = "/var/lib/contain/creds"

// names are the consumer and bucket names of this configuration, which
// the permission table grants.
func (c *Config) names() auth.Names {
	n := auth.DefaultNames()
	n.EnricherDurable = c.Enricher.Durable
	n.AnalyzerDurable = c.Analyzer.Durable
	n.AnalyzerPartitions = c.Analyzer.Partitions
	n.StoreDurablePrefix = c.Store.DurablePrefix
	n.ResponderDurable = c.Responder.Durable
	n.NotifyDurablePrefix = c.Notify.DurablePrefix
	n.ContainersBucket = c.Enricher.ContainersBucket
	n.ProfilesBucket = c.Enricher.ProfilesBucket
	n.ImagesBucket = c.Enricher.ImagesBucket
	n.BaselinesBucket = c.Analyzer.BaselinesBucket
	return n
}

// embeddedAuth creates the credentials of this host's users and returns
// the embedded server's users (nil when auth is off).
func embeddedAuth(cfg *Config, log *slog.Logger) ([]*server.NkeyUser, error) {
	if !cfg.Auth.Enabled {
		log.Warn("auth.enabled is false: the embedded NATS admits anyone (any local user can release containers and read every event)")
		return nil, nil
	}
	table := auth.Table(cfg.names(), []string{cfg.Host})
	names := make([]string, 0, len(table))
	role := map[string]string{}
	for _, u := range table {
		names = append(names, u.Name)
		role[u.Name] = u.Role
	}
	got, err := auth.Ensure(auth.EnsureConfig{Dir: cfg.Auth.CredsDir, Users: names, Group: cfg.Auth.OperatorsGroup,
		Role: func(u string) string { return role[u] }})
	if err != nil {
		return nil, fmt.Errorf("auth.creds_dir: %w", err)
	}
	if len(got.Created) > 0 {
		log.Info("NATS credentials created", logfields.Dir, cfg.Auth.CredsDir, logfields.Users, strings.Join(got.Created, ","))
	}
	if got.GroupGID < 0 {
		log.Info("operator credentials are root-only (group missing)", logfields.Group, cfg.Auth.OperatorsGroup)
	}
	// The stages of this process trust this host's operator key.
	op := auth.FormatTrusted(auth.RoleOperator, got.Keys[auth.RoleOperator])
	if len(cfg.Responder.OperatorKeys) == 0 {
		cfg.Responder.OperatorKeys = []string{op}
	}
	if len(cfg.Analyzer.OperatorKeys) == 0 {
		cfg.Analyzer.OperatorKeys = []string{op}
	}
	return auth.ServerUsers(table, got.Keys), nil
}

// stageUser is the table user a stage connects as.
func stageUser(stage, host string) string {
	switch stage {
	case stageCollector:
		return auth.UserName(auth.RoleCollector, host)
	case stageResponder:
		return auth.UserName(auth.RoleResponder, host)
	}
	return stage
}

// trustLocalOperator fills responder.operator_keys and
// analyzer.operator_keys, when empty, from this host's operator
// credentials (readable by root), so a stage started alone on the host
// `contain run` set up obeys its operators.
func trustLocalOperator(cfg *Config, stages []string, log *slog.Logger) {
	need := (contains(stages, stageResponder) && len(cfg.Responder.OperatorKeys) == 0) ||
		(contains(stages, stageAnalyzer) && len(cfg.Analyzer.OperatorKeys) == 0)
	if !need {
		return
	}
	c, err := auth.LoadSeed(auth.SeedPath(cfg.Auth.CredsDir, auth.RoleOperator))
	if err != nil {
		log.Warn("no operator keys trusted: every release request and baseline operation will be refused "+
			"(set responder.operator_keys / analyzer.operator_keys)", logfields.Err, err)
		return
	}
	if len(cfg.Responder.OperatorKeys) == 0 {
		cfg.Responder.OperatorKeys = []string{c.Trusted()}
	}
	if len(cfg.Analyzer.OperatorKeys) == 0 {
		cfg.Analyzer.OperatorKeys = []string{c.Trusted()}
	}
}

// validateSeed checks nats.nkey_seed when set: readable, a user seed.
func (c *Config) validateSeed() error {
	if c.NATS.NkeySeed == "" {
		return nil
	}
	if _, err := auth.LoadSeed(c.NATS.NkeySeed); err != nil {
		return fmt.Errorf("nats.nkey_seed: %w", err)
	}
	return nil
}

// cliCredentials finds the credentials of a CLI command and sets
// nats.nkey_seed to them: nats.nkey_seed when set (--nkey-seed,
// CONTAIN_NATS_NKEY_SEED, the config file), else the first readable of
// roles in auth.creds_dir. Without any it fails naming where it looked.
func cliCredentials(cfg *Config, roles ...string) (*auth.Credentials, error) {
	if cfg.NATS.NkeySeed != "" {
		c, err := auth.LoadSeed(cfg.NATS.NkeySeed)
		if err != nil {
			return nil, fmt.Errorf("nats.nkey_seed: %w", err)
		}
		return c, nil
	}
	var tried []string
	for _, r := range roles {
		path := auth.SeedPath(cfg.Auth.CredsDir, r)
		c, err := auth.LoadSeed(path)
		if err == nil {
			cfg.NATS.NkeySeed = path
			return c, nil
		}
		hint := ""
		if errors.Is(err, os.ErrPermission) || strings.Contains(err.Error(), "permission denied") {
			hint = fmt.Sprintf(" (are you in group %s?)", cfg.Auth.OperatorsGroup)
		}
		tried = append(tried, fmt.Sprintf("no %s credentials %s%s", r, strings.TrimPrefix(err.Error(), auth.ErrNoCredentials.Error()+" "), hint))
	}
	return nil, fmt.Errorf("%s; give them with --nkey-seed, CONTAIN_NATS_NKEY_SEED or nats.nkey_seed (auth.creds_dir is %s)",
		strings.Join(tried, "; "), cfg.Auth.CredsDir)
}

// readerRoles may run the read-only commands.
var readerRoles = []string{auth.RoleReader, auth.RoleOperator}

// natsConfCommand prints deploy/nats/contain.conf for a set of hosts, from
// the same permission table the embedded server enforces.
func natsConfCommand(*globalOpts) *cobra.Command {
	var hosts []string
	var partitions int
	cmd := &cobra.Command{
		Use:   "nats-conf",
		Short: "Print a nats-server configuration granting contain's roles (deploy/nats/contain.conf) for --hosts",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if len(hosts) == 0 {
				return errors.New("--hosts: name at least one host")
			}
			for _, h := range hosts {
				if h == "" || strings.ContainsAny(h, ".*> \t") {
					return fmt.Errorf("--hosts: %q is not a plain subject token", h)
				}
			}
			return writeNATSConf(cmd.OutOrStdout(), hosts, partitions)
		},
	}
	cmd.Flags().StringSliceVar(&hosts, "hosts", nil, "the hosts running a collector and a responder")
	cmd.Flags().IntVar(&partitions, "analyzer-partitions", 1, "analyzer.partitions: above 1, grant the analyzer its partition consumers and leases bucket")
	return cmd
}

func init() { extraCommands = append(extraCommands, natsConfCommand) }

// confHeader opens deploy/nats/contain.conf.
const confHeader = `# nats-server configuration for a contain cluster: who may publish and read what.
# GENERATED by ` + "`contain nats-conf --hosts %s`" + ` from the permission table in
# internal/auth/roles.go (the one the embedded server of ` + "`contain run`" + ` enforces);
# TestDeployConfMatchesTable fails when this file and the table differ.
#
# Every user is an nkey (ed25519; the server holds public keys only). The
# public keys are read from the server's environment (a $VAR not defined in
# this file is looked up there), e.g.
#     export CONTAIN_NKEY_COLLECTOR_NODE_A=$(nk -inkey collector-node-a.nk -pubout)
# Each client connects with its seed (--nkey-seed, nats.nkey_seed) and the
# inbox prefix _INBOX.<user> (contain derives it from the seed file's name,
# <user>.nk): replies are only readable by the user they are meant for.
#
# Roles (see docs/security.md):
#   collector-<host>  publish contain.v1.raw.<host> only
#   responder-<host>  consume contain.v1.alerts.<host>, publish contain.v1.actions.<host>,
#                     serve contain.v1.control.<host>.> (replies), replay its actions at start
#   enricher          consume raw, publish contain.v1.events.>, own the containers/profiles/images buckets
#   analyzer          consume events, publish contain.v1.alerts.>, own the baselines bucket, read profiles
#   store             consume events, alerts, actions and the KV buckets' histories
#   notify            consume alerts and actions (every host) to push them to outputs
#   operator          everything reader may, plus control requests (signed) and baseline writes (signed)
#   reader            ephemeral consumers on alerts/events/actions, read the buckets, quarantine.list
#   admin             JetStream API (creates and updates the streams: nats.manage_streams)
# JetStream rights are granted per API subject: $JS.API.CONSUMER.CREATE.<stream>.<name>.<filter>
# pins both the consumer name and its filter, MSG.NEXT fetches from that
# consumer only, and $JS.ACK.<stream>.<consumer>.> acknowledges its messages.
# A user allowed ephemeral consumers on a stream is denied every other user's
# named durable there.

# Overridden by tests and by bus.EmbeddedConfig (nats.embedded.*).
listen: 0.0.0.0:4222
max_payload: 8MB
jetstream {
  store_dir: /var/lib/contain/nats
}

`

// writeNATSConf writes the whole configuration file for hosts.
func writeNATSConf(w io.Writer, hosts []string, partitions int) error {
	if _, err := fmt.Fprintf(w, confHeader, strings.Join(hosts, ",")); err != nil {
		return err
	}
	n := auth.DefaultNames()
	n.AnalyzerPartitions = partitions
	return auth.WriteConf(w, auth.Table(n, hosts))
}

// deployConf is the shipped configuration, relative to the module root.
var deployConf = filepath.Join("deploy", "nats", "contain.conf")

// deployConfHosts are the example hosts of the shipped configuration.
var deployConfHosts = []string{"node-a", "node-b"}

// cliSession is a CLI command's connection and the credentials it used.
type cliSession struct {
	nc    *nats.Conn
	js    jetstream.JetStream
	creds *auth.Credentials
	close func()
}

// signer signs the session's operations as its credentials and the local
// OS user.
func (s *cliSession) signer() *auth.Signer { return auth.NewSigner(s.creds) }

// cliConnect finds the command's credentials (the first readable of
// roles, see cliCredentials) and connects with them.
func cliConnect(cfg *Config, name string, roles ...string) (*cliSession, error) {
	creds, err := cliCredentials(cfg, roles...)
	if err != nil {
		return nil, err
	}
	nc, js, closeNATS, err := connect(cfg, name, cfg.logger(os.Stderr))
	if err != nil {
		return nil, fmt.Errorf("%w (as %s from %s)", err, creds.Name, creds.Path)
	}
	return &cliSession{nc: nc, js: js, creds: creds, close: closeNATS}, nil
}
