package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/containsec/contain/internal/auth"
	"github.com/containsec/contain/responder"
)

func releaseCommand(opts *globalOpts) *cobra.Command {
	var reason, note string
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "release CONTAINER",
		Short: "Thaw a quarantined container through its host's responder, recording who and why",
		Long: `release asks the host's responder to thaw CONTAINER. The request is signed
with the operator credentials (auth.creds_dir/operator.nk, or --nkey-seed):
the responder records that credential and the local OS user as the actor,
and refuses unsigned, stale or replayed requests. --actor adds a note to the
recorded reason; it never sets the actor.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := opts.load(cmd)
			if err != nil {
				return err
			}
			if reason == "" {
				return fmt.Errorf("--reason: say why the container is released")
			}
			s, err := cliConnect(cfg, "release", auth.RoleOperator)
			if err != nil {
				return fmt.Errorf("release %s: %w", args[0], err)
			}
			defer s.close()
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			ev, err := responder.Release(ctx, s.nc, s.signer(), cfg.Host, args[0], reason, note)
			if err != nil {
				return fmt.Errorf("release %s: %w", args[0], err)
			}
			a := ev.GetAction()
			fmt.Fprintf(cmd.OutOrStdout(), "released %s on %s: %s (%s) by %s\n", args[0], cfg.Host, a.GetResult(), a.GetMethod(), a.GetActor())
			return nil
		},
	}
	cmd.Flags().StringVar(&reason, "reason", "", "why the container is released (recorded)")
	cmd.Flags().StringVar(&note, "actor", "", "a note recorded with the reason (the actor is always the signing credential and OS user)")
	cmd.Flags().DurationVar(&timeout, "timeout", 10*time.Second, "how long to wait for the responder")
	return cmd
}

func quarantineCommand(opts *globalOpts) *cobra.Command {
	root := &cobra.Command{Use: "quarantine", Short: "Inspect quarantined containers"}
	var asJSON bool
	list := &cobra.Command{
		Use:   "list",
		Short: "List the containers this host's responder holds frozen, and why",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := opts.load(cmd)
			if err != nil {
				return err
			}
			s, err := cliConnect(cfg, "quarantine", readerRoles...)
			if err != nil {
				return fmt.Errorf("quarantine list: %w", err)
			}
			defer s.close()
			ctx, cancel := context.WithTimeout(cmd.Context(), 10*time.Second)
			defer cancel()
			qs, err := responder.ListQuarantined(ctx, s.nc, cfg.Host)
			if err != nil {
				return err
			}
			if asJSON {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(qs)
			}
			return quarantineTable(cmd.OutOrStdout(), qs, time.Now())
		},
	}
	list.Flags().BoolVar(&asJSON, "json", false, "print JSON (one array of objects) instead of a table")
	root.AddCommand(list)
	return root
}

// quarantineTable prints one line per quarantined container.
func quarantineTable(w io.Writer, qs []responder.Quarantine, now time.Time) error {
	if len(qs) == 0 {
		_, err := fmt.Fprintln(w, "no quarantined containers")
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "CONTAINER\tNAME\tIMAGE\tSTATE\tSINCE\tSCORE\tMETHOD\tREASON\tALERT")
	for _, q := range qs {
		id := q.ContainerID[:min(12, len(q.ContainerID))]
		since := q.Since.UTC().Format(time.RFC3339) + " (" + now.Sub(q.Since).Truncate(time.Second).String() + " ago)"
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%.2f\t%s\t%s\t%s\n", id, dash(q.ContainerName), dash(q.ImageRef),
			dash(q.State), since, q.Score, q.Method, dash(q.Reason), q.AlertID)
	}
	return tw.Flush()
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return strings.ReplaceAll(s, "\t", " ")
}
