package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/containsec/contain/analyzer"
	"github.com/containsec/contain/schemas/containv1"
)

func init() { extraCommands = append(extraCommands, replayCommand) }

func replayCommand(opts *globalOpts) *cobra.Command {
	var (
		since, until time.Duration
		host, format string
		rescore      bool
	)
	cmd := &cobra.Command{
		Use:   "replay",
		Short: "Replay enriched events from the stream: dump them as JSON lines, or re-score them with a fresh analyzer",
		Long: `replay reads CONTAIN_EVENTS from --since ago until it has caught up (or
--until ago), through an ordered consumer that disturbs no other reader.

Without --rescore it writes every event as one JSON object per line
(protojson of contain.v1.Event), for data teams' own tools.

With --rescore it feeds the events, in stream order, to a new analyzer
engine built from this configuration's analyzer.* settings (learning window,
convergence, group_by...) and prints the alerts it raises (--format text,
json or falco) and a summary: a backtest of a new baseline or scoring
configuration against recorded history. Nothing is published.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if format != "text" && format != "json" && format != "falco" {
				return fmt.Errorf("--format: %q is not text, json or falco", format)
			}
			cfg, err := opts.load(cmd)
			if err != nil {
				return err
			}
			if err := cfg.Analyzer.Validate(); err != nil {
				return err
			}
			s, err := cliConnect(cfg, "replay", readerRoles...)
			if err != nil {
				return fmt.Errorf("replay: %w", err)
			}
			defer s.close()
			js := s.js
			subject := containv1.SubjectPrefix + ".events.>"
			if host != "" {
				subject = containv1.EventsSubject(host)
			}
			now := time.Now()
			r := replayer{w: cmd.OutOrStdout(), format: format, end: now.Add(-until)}
			if rescore {
				if r.engine, err = analyzer.NewEngine(cfg.Analyzer, nil); err != nil {
					return err
				}
			}
			if err := r.run(cmd.Context(), js, subject, now.Add(-since)); err != nil {
				return err
			}
			return r.summary(cmd.ErrOrStderr())
		},
	}
	cmd.Flags().DurationVar(&since, "since", 24*time.Hour, "start this long ago")
	cmd.Flags().DurationVar(&until, "until", 0, "stop at events stored this long ago (0: until caught up)")
	cmd.Flags().StringVar(&host, "event-host", "", "only events of this host")
	cmd.Flags().BoolVar(&rescore, "rescore", false, "re-score with a fresh analyzer and print its alerts")
	cmd.Flags().StringVar(&format, "format", "text", "alerts with --rescore: text, json or falco")
	return cmd
}

type replayer struct {
	w      io.Writer
	format string
	end    time.Time
	engine *analyzer.Engine

	batches, events, malformed, alerts uint64
}

func (r *replayer) run(ctx context.Context, js jetstream.JetStream, subject string, from time.Time) error {
	return readStream(ctx, js, containv1.StreamEvents, subject, from, r.end, false, func(b *containv1.Batch) error {
		r.batches++
		for _, ev := range b.Events {
			r.events++
			if err := r.event(ev); err != nil {
				return err
			}
		}
		return nil
	}, func(string, error) { r.malformed++ })
}

func (r *replayer) event(ev *containv1.Event) error {
	if r.engine == nil {
		line, err := protojson.Marshal(ev)
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(r.w, "%s\n", line)
		return err
	}
	for _, a := range r.engine.Observe(ev) {
		r.alerts++
		if err := writeAlert(r.w, a, r.format); err != nil {
			return err
		}
	}
	return nil
}

func (r *replayer) summary(w io.Writer) error {
	_, err := fmt.Fprintf(w, "replayed %d events in %d batches (%d malformed messages skipped)", r.events, r.batches, r.malformed)
	if err == nil && r.engine != nil {
		s := r.engine.Stats()
		_, err = fmt.Fprintf(w, "; re-scored: %d alerts, %d learned, %d scored, %d deviations grouped, %d baselines",
			r.alerts, s.Learned, s.Scored, s.Grouped, len(r.engine.Keys()))
	}
	if err == nil {
		_, err = fmt.Fprintln(w)
	}
	return err
}
