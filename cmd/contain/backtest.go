package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/containsec/contain/analyzer"
	"github.com/containsec/contain/cmd/internal/config"
	"github.com/containsec/contain/responder"
	"github.com/containsec/contain/schemas/containv1"
	"github.com/containsec/contain/store"
)

func init() { extraCommands = append(extraCommands, backtestCommand) }

func backtestCommand(opts *globalOpts) *cobra.Command {
	var (
		sf                         selectionFlags
		baselineFile, configFile   string
		format                     string
		failOnNew, failOnGonePause bool
	)
	cmd := &cobra.Command{
		Use:   "backtest (--baseline FILE | --config FILE)",
		Short: "Re-score stored history against a candidate baseline or configuration and compare with what happened",
		Long: `backtest reads the events a selection chooses (--from/--to or --since/--until,
host, container, image, kind) from the store's ClickHouse database, feeds
them in time order to a fresh analyzer engine, and decides on each alert it
raises with the responder's policy (responder.Config.Decide: threshold,
policy rules, never-pause exemptions, dry run, the circuit breaker; a
container it would pause is then quarantined and its later alerts are
skipped). It compares those alerts and pause decisions with the alerts and
pause actions the store recorded for the same history, matching alerts by
container and triggering event:

  kept   the candidate raises it too (score changes are shown),
  gone   it happened, the candidate would not raise it (or not pause),
  new    the candidate would raise it (or pause) and it did not happen.

The candidate is --baseline FILE, a baseline document (contain baseline
export, JSON or YAML) loaded into an engine built from this configuration,
or --config FILE, a contain configuration whose analyzer.* and
responder.* settings replace this one's (environment variables still
apply). Here --config names the candidate: the running configuration
(store.addr, store.database, the current analyzer and responder settings)
comes from CONTAIN_CONFIG, the environment and the other flags. Prove a baseline on history before it is locked: with --fail-on-new
the command exits 3 when the candidate would raise an alert that did not
happen (--fail-on-gone-pause: when a recorded pause would be lost).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if (baselineFile == "") == (configFile == "") {
				return errors.New("give exactly one of --baseline FILE and --config FILE")
			}
			if format != "text" && format != "json" {
				return fmt.Errorf("--format: %q is not text or json", format)
			}
			sel, err := sf.selection(time.Now())
			if err != nil {
				return err
			}
			cfg, err := opts.load(cmd)
			if err != nil {
				return err
			}
			cand := candidate{analyzer: cfg.Analyzer, responder: cfg.Responder, name: "baseline " + baselineFile}
			if configFile != "" {
				cc := defaultConfig()
				if err := config.Load(&cc, configFile, pflag.NewFlagSet("backtest", pflag.ContinueOnError), nil); err != nil {
					return fmt.Errorf("--config: %w", err)
				}
				cc.propagate()
				cand = candidate{analyzer: cc.Analyzer, responder: cc.Responder, name: "config " + configFile}
			} else {
				raw, err := os.ReadFile(baselineFile)
				if err != nil {
					return fmt.Errorf("--baseline: %w", err)
				}
				if cand.baseline, err = readBaselineDoc(raw); err != nil {
					return fmt.Errorf("--baseline %s: %w", baselineFile, err)
				}
			}
			if err := cand.analyzer.Validate(); err != nil {
				return err
			}
			r, err := store.OpenReader(cfg.Store)
			if err != nil {
				return fmt.Errorf("backtest: %w", err)
			}
			defer r.Close()
			rep, err := runBacktest(cmd.Context(), r, sel, cand)
			if err != nil {
				return fmt.Errorf("backtest: %w", err)
			}
			if format == "json" {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				err = enc.Encode(rep)
			} else {
				err = rep.writeText(cmd.OutOrStdout())
			}
			if err != nil {
				return err
			}
			if failOnNew && rep.Alerts.New > 0 || failOnGonePause && rep.Pauses.Gone > 0 {
				return exitError{code: 3, msg: "backtest: the candidate changes alerts or pauses on history"}
			}
			return nil
		},
	}
	sf.register(cmd, 24*time.Hour)
	cmd.Flags().StringVar(&baselineFile, "baseline", "", "candidate baseline document (JSON or YAML, as contain baseline export writes)")
	cmd.Flags().StringVar(&configFile, "config", "", "candidate configuration file (analyzer.* and responder.*); the running configuration comes from CONTAIN_CONFIG")
	cmd.Flags().StringVar(&format, "format", "text", "text or json")
	cmd.Flags().BoolVar(&failOnNew, "fail-on-new", false, "exit 3 when the candidate raises an alert that did not happen")
	cmd.Flags().BoolVar(&failOnGonePause, "fail-on-gone-pause", false, "exit 3 when a recorded pause would not happen")
	return cmd
}

// readBaselineDoc reads a baseline document as JSON or YAML.
func readBaselineDoc(raw []byte) (*analyzer.Doc, error) {
	if t := bytes.TrimSpace(raw); len(t) > 0 && t[0] == '{' {
		return analyzer.UnmarshalJSONDoc(raw)
	}
	return analyzer.ReadYAML(bytes.NewReader(raw))
}

// candidate is what backtest re-scores with.
type candidate struct {
	name      string
	analyzer  analyzer.Config
	responder responder.Config
	baseline  *analyzer.Doc
}

// btAlert is one alert of either side, keyed by container and trigger.
type btAlert struct {
	Time        time.Time `json:"time"`
	ContainerID string    `json:"container_id"`
	ImageRef    string    `json:"image_ref"`
	TriggerID   string    `json:"trigger_event_id"`
	AlertID     string    `json:"alert_id"`
	Score       float64   `json:"score"`
	Reasons     []string  `json:"reasons"`
	Paused      bool      `json:"paused"`
	Decision    string    `json:"decision,omitempty"` // the candidate's policy decision
}

func (a btAlert) key() string { return a.ContainerID + "/" + a.TriggerID }

// btDiff is one alert compared across both sides.
type btDiff struct {
	Change    string   `json:"change"` // kept, gone, new
	Recorded  *btAlert `json:"recorded,omitempty"`
	Candidate *btAlert `json:"candidate,omitempty"`
}

// btCounts sums one side-by-side comparison.
type btCounts struct {
	Recorded  int `json:"recorded"`
	Candidate int `json:"candidate"`
	Kept      int `json:"kept"`
	Gone      int `json:"gone"`
	New       int `json:"new"`
}

// backtestReport is what backtest prints.
type backtestReport struct {
	Candidate string    `json:"candidate"`
	From      time.Time `json:"from"`
	To        time.Time `json:"to,omitzero"`
	Events    uint64    `json:"events"`
	Alerts    btCounts  `json:"alerts"`
	Pauses    btCounts  `json:"pauses"`
	Diffs     []btDiff  `json:"diffs"`
}

func runBacktest(ctx context.Context, r *store.Reader, sel store.Selection, c candidate) (*backtestReport, error) {
	rep := &backtestReport{Candidate: c.name, From: sel.From, To: sel.To}
	e, err := analyzer.NewEngine(c.analyzer, nil)
	if err != nil {
		return nil, err
	}
	if c.baseline != nil {
		if err := e.Load(c.baseline); err != nil {
			return nil, err
		}
	}
	var cand []btAlert
	quarantined := map[string]*responder.Quarantine{}
	var pauses []time.Time // candidate pauses, for the circuit breaker
	decide := func(a *containv1.Event) btAlert {
		at := time.Unix(0, a.GetWallNs())
		pol := c.responder
		pol.Host = a.GetHost() // a fleet-wide backtest: every host's responder
		recent := 0
		for _, p := range pauses {
			if at.Sub(p) < time.Minute {
				recent++
			}
		}
		d := pol.Decide(a, responder.Situation{Now: at, Received: at, Quarantined: quarantined[a.GetContainerId()], PausesLastMinute: recent})
		paused := d.Verdict == responder.VerdictPause || d.Verdict == responder.VerdictDryRun
		if paused {
			pauses = append(pauses, at)
			quarantined[a.GetContainerId()] = &responder.Quarantine{ContainerID: a.GetContainerId(), Since: at,
				AlertID: uuidText(a.GetId()), Method: "backtest"}
		}
		var codes []string
		for _, rs := range a.GetAlert().GetReasons() {
			codes = append(codes, rs.GetCode())
		}
		return btAlert{Time: at.UTC(), ContainerID: a.GetContainerId(), ImageRef: a.GetImageRef(),
			TriggerID: uuidText(a.GetAlert().GetTrigger().GetId()), AlertID: uuidText(a.GetId()),
			Score: a.GetAlert().GetScore(), Reasons: codes, Paused: paused, Decision: d.Why}
	}
	if err := r.Events(ctx, sel, func(ev *containv1.Event) error {
		rep.Events++
		for _, a := range e.Observe(ev) {
			cand = append(cand, decide(a))
		}
		return nil
	}); err != nil {
		return nil, err
	}
	recAlerts, err := r.Alerts(ctx, store.Selection{From: sel.From, To: sel.To, Host: sel.Host, Container: sel.Container, Image: sel.Image}, uuid.Nil)
	if err != nil {
		return nil, err
	}
	actions, err := r.Actions(ctx, store.Selection{From: sel.From, Host: sel.Host, Container: sel.Container, Image: sel.Image})
	if err != nil {
		return nil, err
	}
	pausedAlerts := map[uuid.UUID]bool{}
	for _, a := range actions {
		if a.Type == "pause" && (a.Result == "ok" || a.Result == "dry_run") {
			pausedAlerts[a.AlertID] = true
		}
	}
	var rec []btAlert
	for _, a := range recAlerts {
		rec = append(rec, btAlert{Time: a.Time, ContainerID: a.ContainerID, ImageRef: a.ImageRef, TriggerID: a.TriggerEventID.String(),
			AlertID: a.ID.String(), Score: a.Score, Reasons: a.ReasonCodes, Paused: pausedAlerts[a.ID]})
	}
	rep.compare(rec, cand)
	return rep, nil
}

// compare matches both sides by container and trigger.
func (rep *backtestReport) compare(rec, cand []btAlert) {
	byKey := map[string]*btAlert{}
	for i := range cand {
		byKey[cand[i].key()] = &cand[i]
	}
	seen := map[string]bool{}
	rep.Alerts.Recorded, rep.Alerts.Candidate = len(rec), len(cand)
	for i := range rec {
		r := &rec[i]
		if r.Paused {
			rep.Pauses.Recorded++
		}
		c := byKey[r.key()]
		if c == nil {
			rep.Alerts.Gone++
			if r.Paused {
				rep.Pauses.Gone++
			}
			rep.Diffs = append(rep.Diffs, btDiff{Change: "gone", Recorded: r})
			continue
		}
		seen[r.key()] = true
		rep.Alerts.Kept++
		switch {
		case r.Paused && c.Paused:
			rep.Pauses.Kept++
		case r.Paused:
			rep.Pauses.Gone++
		case c.Paused:
			rep.Pauses.New++
		}
		rep.Diffs = append(rep.Diffs, btDiff{Change: "kept", Recorded: r, Candidate: c})
	}
	for i := range cand {
		c := &cand[i]
		if c.Paused {
			rep.Pauses.Candidate++
		}
		if seen[c.key()] {
			continue
		}
		rep.Alerts.New++
		if c.Paused {
			rep.Pauses.New++
		}
		rep.Diffs = append(rep.Diffs, btDiff{Change: "new", Candidate: c})
	}
	at := func(d btDiff) time.Time {
		if d.Recorded != nil {
			return d.Recorded.Time
		}
		return d.Candidate.Time
	}
	slices.SortStableFunc(rep.Diffs, func(a, b btDiff) int { return at(a).Compare(at(b)) })
}

func (rep *backtestReport) writeText(w io.Writer) error {
	var b strings.Builder
	to := "now"
	if !rep.To.IsZero() {
		to = rep.To.UTC().Format(time.RFC3339)
	}
	fmt.Fprintf(&b, "backtest of %s on %d events, %s .. %s\n", rep.Candidate, rep.Events, rep.From.UTC().Format(time.RFC3339), to)
	row := func(what string, c btCounts) {
		fmt.Fprintf(&b, "%-7s recorded %d, candidate %d: %d kept, %d gone, %d new\n", what, c.Recorded, c.Candidate, c.Kept, c.Gone, c.New)
	}
	row("alerts", rep.Alerts)
	row("pauses", rep.Pauses)
	for _, d := range rep.Diffs {
		a := d.Candidate
		if a == nil {
			a = d.Recorded
		}
		pause := func(x *btAlert) string {
			if x == nil {
				return "-"
			}
			if x.Paused {
				return fmt.Sprintf("%.2f paused", x.Score)
			}
			return fmt.Sprintf("%.2f", x.Score)
		}
		fmt.Fprintf(&b, "%-4s %s %s %s trigger %s %s: recorded %s, candidate %s\n", d.Change, a.Time.Format(time.RFC3339Nano),
			a.ContainerID, a.ImageRef, a.TriggerID, strings.Join(a.Reasons, ","), pause(d.Recorded), pause(d.Candidate))
	}
	_, err := io.WriteString(w, b.String())
	return err
}
