package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"

	"github.com/containsec/contain/analyzer"
	"github.com/containsec/contain/console"
	"github.com/containsec/contain/internal/auth"
	"github.com/containsec/contain/internal/bus"
	"github.com/containsec/contain/internal/logfields"
	"github.com/containsec/contain/responder"
	"github.com/containsec/contain/schemas/containv1"
	"github.com/containsec/contain/store"
)

func init() { extraCommands = append(extraCommands, consoleCommand) }

func consoleCommand(opts *globalOpts) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "console",
		Short: "Serve the web console (console.listen) for the people who answer alerts",
		Long: `console serves contain's web console: live alerts and actions, the
quarantined containers with their evidence and a Release button, each
container's timeline and process tree, baselines, health. It connects to
NATS with the operator credentials (it signs releases and baseline locks
with them, naming the logged-in user as the actor). Users log in with
console.users (bcrypt hashes: contain console hash-password) or through an
identity-aware proxy (console.auth: header). It also runs inside
contain run when console.listen is set.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := opts.load(cmd)
			if err != nil {
				return err
			}
			if cfg.Console.Listen == "" {
				return errors.New("console.listen: set the address to serve (e.g. 127.0.0.1:9443)")
			}
			log := cfg.logger(os.Stderr).With(logfields.Stage, "console")
			srv, stop, err := newConsole(cmd.Context(), cfg, log, nil, nil)
			if err != nil {
				return err
			}
			defer stop()
			log.Info("console serving", logfields.Listen, cfg.Console.Listen, logfields.Tls, cfg.Console.TLSCert != "")
			return srv.ListenAndServe(cmd.Context())
		},
	}
	cmd.AddCommand(&cobra.Command{
		Use:   "hash-password",
		Short: "Read a password on stdin and print its bcrypt hash for console.users[].password_hash",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			line, err := bufio.NewReader(cmd.InOrStdin()).ReadString('\n')
			if err != nil && line == "" {
				return fmt.Errorf("hash-password: reading stdin: %w", err)
			}
			h, err := console.HashPassword(strings.TrimRight(line, "\r\n"))
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), h)
			return nil
		},
	})
	return cmd
}

// newConsole connects as the operator, feeds a console.Feed from the alert
// and action streams (the last day, then live) and returns the server.
// gather and health are the process's own metrics and readiness when the
// console runs inside contain run; nil otherwise.
func newConsole(ctx context.Context, cfg *Config, log *slog.Logger, gather prometheus.Gatherer, health *bus.Health) (*console.Server, func(), error) {
	if err := cfg.Console.Validate(); err != nil {
		return nil, nil, err
	}
	c := *cfg
	creds, err := cliCredentials(&c, auth.RoleOperator)
	if err != nil {
		return nil, nil, fmt.Errorf("console: %w", err)
	}
	nc, js, closeNATS, err := connect(&c, "console", log)
	if err != nil {
		return nil, nil, fmt.Errorf("console: %w", err)
	}
	ctx, cancel := context.WithCancel(ctx)
	feed := console.NewFeed(cfg.Console.MaxAlerts, cfg.Console.MaxActions)
	since := time.Now().Add(-24 * time.Hour)
	for stream, subject := range map[string]string{
		containv1.StreamAlerts:  containv1.SubjectPrefix + ".alerts.>",
		containv1.StreamActions: containv1.SubjectPrefix + ".actions.>",
	} {
		go followStream(ctx, js, stream, subject, since, feed, log)
	}
	be := &consoleBackend{cfg: cfg, nc: nc, js: js, creds: creds, gather: gather, health: health}
	srv, err := console.New(cfg.Console, feed, be, log)
	if err != nil {
		cancel()
		closeNATS()
		return nil, nil, err
	}
	return srv, func() { cancel(); be.close(); closeNATS() }, nil
}

// followStream feeds the console from a stream until ctx ends, resuming
// after errors (a NATS restart) from the newest event it saw.
func followStream(ctx context.Context, js jetstream.JetStream, stream, subject string, from time.Time, feed *console.Feed, log *slog.Logger) {
	for ctx.Err() == nil {
		err := readStream(ctx, js, stream, subject, from, time.Time{}, true, func(b *containv1.Batch) error {
			for _, ev := range b.Events {
				feed.Add(ev)
				if t := time.Unix(0, ev.GetWallNs()); t.After(from) {
					from = t
				}
			}
			return nil
		}, func(subject string, err error) {
			log.Warn("console: skipping a malformed message", logfields.Subject, subject, logfields.Err, err)
		})
		if ctx.Err() != nil {
			return
		}
		log.Warn("console: reading a stream failed; retrying in 2s", logfields.Stream, stream, logfields.Err, err)
		select {
		case <-ctx.Done():
		case <-time.After(2 * time.Second):
		}
	}
}

// consoleBackend acts through the responders' signed control requests and
// the baselines bucket, as the operator credential with the logged-in user
// named in the signature.
type consoleBackend struct {
	cfg    *Config
	nc     *nats.Conn
	js     jetstream.JetStream
	creds  *auth.Credentials
	gather prometheus.Gatherer
	health *bus.Health

	// reader is the ClickHouse reader of the Container view's history,
	// opened at first use and kept (closed by close).
	readerMu sync.Mutex
	reader   *store.Reader
}

// close releases the ClickHouse reader, if one was opened.
func (b *consoleBackend) close() {
	b.readerMu.Lock()
	defer b.readerMu.Unlock()
	if b.reader != nil {
		_ = b.reader.Close()
		b.reader = nil
	}
}

func (b *consoleBackend) storeReader() (*store.Reader, error) {
	b.readerMu.Lock()
	defer b.readerMu.Unlock()
	if b.reader == nil {
		r, err := store.OpenReader(b.cfg.Store)
		if err != nil {
			return nil, err
		}
		b.reader = r
	}
	return b.reader, nil
}

func (b *consoleBackend) signer(user string) *auth.Signer {
	s := auth.NewSigner(b.creds)
	s.OSUser = "console:" + user
	return s
}

func (b *consoleBackend) Quarantined(ctx context.Context, host string) ([]console.Quarantine, error) {
	qs, err := responder.ListQuarantined(ctx, b.nc, host)
	if err != nil {
		return nil, err
	}
	out := make([]console.Quarantine, 0, len(qs))
	for _, q := range qs {
		out = append(out, console.Quarantine{Host: host, ContainerID: q.ContainerID, ContainerName: q.ContainerName,
			ImageRef: q.ImageRef, ImageDigest: q.ImageDigest, Method: q.Method, Since: q.Since, AlertID: q.AlertID,
			ActionID: q.ActionID, Score: q.Score, Reason: q.Reason, Actor: q.Actor, State: q.State})
	}
	return out, nil
}

func (b *consoleBackend) Release(ctx context.Context, host, containerID, reason, user string) (string, string, error) {
	ev, err := responder.Release(ctx, b.nc, b.signer(user), host, containerID, reason, "")
	a := ev.GetAction()
	return a.GetActor(), strings.ToLower(strings.TrimPrefix(a.GetResult().String(), "RESULT_")), err
}

func (b *consoleBackend) Baselines(ctx context.Context) ([]console.Baseline, error) {
	sums, err := analyzer.ListBaselines(ctx, b.js, b.cfg.Analyzer.BaselinesBucket)
	if err != nil {
		return nil, err
	}
	out := make([]console.Baseline, 0, len(sums))
	st, err := analyzer.OpenBaselines(ctx, b.js, b.cfg.Analyzer.BaselinesBucket)
	if err != nil {
		return nil, err
	}
	for _, s := range sums {
		bl := console.Baseline{Key: s.Key, Image: s.Image, Phase: s.Phase, Version: s.Version, Items: s.Items,
			First: s.First, Converged: s.Converged, Err: s.Err}
		if s.Err == "" {
			describeBaseline(ctx, st, &bl)
		}
		out = append(out, bl)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Image < out[j].Image })
	return out, nil
}

func (b *consoleBackend) SetLock(ctx context.Context, key string, lock bool, user string) error {
	fn := analyzer.UnlockBaseline
	if lock {
		fn = analyzer.LockBaseline
	}
	return fn(ctx, b.js, b.cfg.Analyzer.BaselinesBucket, key, b.signer(user))
}

func (b *consoleBackend) Timeline(ctx context.Context, container, alertID string) (string, error) {
	if len(b.cfg.Store.Addr) == 0 {
		return "", errors.New("no ClickHouse configured (store.addr)")
	}
	r, err := b.storeReader()
	if err != nil {
		return "", err
	}
	tl, err := buildTimeline(ctx, r, container, alertID, 5*time.Minute)
	if err != nil {
		return "", err
	}
	var sb strings.Builder
	err = tl.writeText(&sb)
	return sb.String(), err
}

// watched are the metric families the Health view shows: losses, drops,
// refusals, lag and quarantines.
var watched = []string{"dropped", "lost", "lag", "refused", "quarantined", "dead_letter", "expired", "unacked"}

func (b *consoleBackend) Health(ctx context.Context) []console.HealthLine {
	var out []console.HealthLine
	if b.health != nil {
		lines, _ := b.health.Check(ctx)
		for _, l := range lines {
			name, val, _ := strings.Cut(l, ":")
			out = append(out, console.HealthLine{Name: name, Value: strings.TrimSpace(val), OK: strings.TrimSpace(val) == "ok"})
		}
	}
	if b.nc != nil {
		out = append(out, console.HealthLine{Name: "console NATS connection", Value: b.nc.Status().String(), OK: b.nc.IsConnected()})
	}
	if b.gather == nil {
		return out
	}
	fams, err := b.gather.Gather()
	if err != nil {
		return append(out, console.HealthLine{Name: "metrics", Value: err.Error()})
	}
	for _, f := range fams {
		if !matchesAny(f.GetName(), watched) {
			continue
		}
		var sum float64
		for _, m := range f.GetMetric() {
			switch {
			case m.GetCounter() != nil:
				sum += m.GetCounter().GetValue()
			case m.GetGauge() != nil:
				sum += m.GetGauge().GetValue()
			}
		}
		out = append(out, console.HealthLine{Name: f.GetName(), Value: fmt.Sprintf("%g", sum), OK: true})
	}
	return out
}

func matchesAny(s string, subs []string) bool {
	for _, x := range subs {
		if strings.Contains(s, x) {
			return true
		}
	}
	return false
}
