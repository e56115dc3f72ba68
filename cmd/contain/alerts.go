package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/containsec/contain/analyzer"
	"github.com/containsec/contain/schemas/containv1"
)

func init() { extraCommands = append(extraCommands, alertsCommand) }

func alertsCommand(opts *globalOpts) *cobra.Command {
	var (
		follow bool
		since  time.Duration
		format string
		host   string
	)
	cmd := &cobra.Command{
		Use:   "alerts",
		Short: "Print alerts from the CONTAIN_ALERTS stream (text, json, or Falco's JSON output format)",
		Long: `alerts reads the alert stream from --since ago (an ordered consumer that
disturbs no other reader) and prints each alert; --follow keeps printing new
ones. --format falco writes Falco's JSON output (rule, priority, output,
output_fields, time), one per line, for tools that consume Falco alerts.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if format != "text" && format != "json" && format != "falco" {
				return fmt.Errorf("--format: %q is not text, json or falco", format)
			}
			cfg, err := opts.load(cmd)
			if err != nil {
				return err
			}
			s, err := cliConnect(cfg, "alerts", readerRoles...)
			if err != nil {
				return fmt.Errorf("alerts: %w", err)
			}
			defer s.close()
			subject := containv1.SubjectPrefix + ".alerts.>"
			if host != "" {
				subject = containv1.AlertsSubject(host)
			}
			return printAlerts(cmd.Context(), s.js, subject, time.Now().Add(-since), follow, format, cmd.OutOrStdout())
		},
	}
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "keep printing new alerts")
	cmd.Flags().DurationVar(&since, "since", time.Hour, "start this long ago")
	cmd.Flags().StringVar(&format, "format", "text", "text, json or falco")
	cmd.Flags().StringVar(&host, "alert-host", "", "only alerts about this host")
	return cmd
}

func printAlerts(ctx context.Context, js jetstream.JetStream, subject string, from time.Time, follow bool, format string, w io.Writer) error {
	return readStream(ctx, js, containv1.StreamAlerts, subject, from, time.Time{}, follow, func(b *containv1.Batch) error {
		for _, ev := range b.Events {
			if ev.GetAlert() == nil {
				continue
			}
			if err := writeAlert(w, ev, format); err != nil {
				return err
			}
		}
		return nil
	}, func(subject string, err error) {
		fmt.Fprintf(os.Stderr, "contain: skipping malformed message on %s: %v\n", subject, err)
	})
}

func writeAlert(w io.Writer, ev *containv1.Event, format string) error {
	switch format {
	case "falco":
		line, err := analyzer.FalcoJSON(ev)
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(w, "%s\n", line)
		return err
	case "json":
		line, err := protojson.Marshal(ev)
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(w, "%s\n", line)
		return err
	}
	a := ev.GetAlert()
	var reasons []string
	for _, r := range a.GetReasons() {
		reasons = append(reasons, r.GetCode()+": "+r.GetMessage())
	}
	_, err := fmt.Fprintf(w, "%s %s score=%.2f %s container=%s image=%s incident=%s\n  %s\n",
		time.Unix(0, ev.GetWallNs()).UTC().Format(time.RFC3339), ev.GetHost(), a.GetScore(), a.GetPriority(),
		ev.GetContainerId(), ev.GetImageRef(), containv1.FormatID(a.GetIncidentId()), strings.Join(reasons, "\n  "))
	return err
}
