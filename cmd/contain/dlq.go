package main

import (
	"context"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/containsec/contain/internal/auth"
	"github.com/containsec/contain/internal/bus"
)

func init() { extraCommands = append(extraCommands, dlqCommand) }

// dlqRoles may read and replay the dead-letter stream.
var dlqRoles = []string{auth.RoleAdmin}

func dlqCommand(opts *globalOpts) *cobra.Command {
	var (
		stage string
		seq   uint64
	)
	cmd := &cobra.Command{
		Use:   "dlq",
		Short: "List or replay dead letters (" + bus.DLQStream + "): batches a stage's handler kept failing on or panicked on",
	}
	run := func(f func(ctx context.Context, w io.Writer, s *cliSession) error) func(*cobra.Command, []string) error {
		return func(cmd *cobra.Command, _ []string) error {
			cfg, err := opts.load(cmd)
			if err != nil {
				return err
			}
			s, err := cliConnect(cfg, "dlq", dlqRoles...)
			if err != nil {
				return fmt.Errorf("dlq: %w", err)
			}
			defer s.close()
			ctx, cancel := context.WithTimeout(cmd.Context(), 2*time.Minute)
			defer cancel()
			return f(ctx, cmd.OutOrStdout(), s)
		}
	}
	list := &cobra.Command{
		Use:   "list",
		Short: "Print the dead letters: sequence, time, stage, reason, deliveries, size, original subject, error",
		Args:  cobra.NoArgs,
		RunE: run(func(ctx context.Context, w io.Writer, s *cliSession) error {
			dl, err := bus.ListDLQ(ctx, s.js, stage, seq)
			if err != nil {
				return fmt.Errorf("dlq list: %w", err)
			}
			return printDLQ(w, dl)
		}),
	}
	replay := &cobra.Command{
		Use:   "replay",
		Short: "Republish dead letters to their original subjects, then delete them from the DLQ",
		Args:  cobra.NoArgs,
		RunE: run(func(ctx context.Context, w io.Writer, s *cliSession) error {
			n, err := bus.ReplayDLQ(ctx, s.js, stage, seq)
			fmt.Fprintf(w, "replayed %d\n", n)
			if err != nil {
				return fmt.Errorf("dlq replay: %w", err)
			}
			return nil
		}),
	}
	for _, c := range []*cobra.Command{list, replay} {
		c.Flags().StringVar(&stage, "stage", "", "only this stage's dead letters")
		c.Flags().Uint64Var(&seq, "seq", 0, "only the dead letter with this "+bus.DLQStream+" sequence")
		cmd.AddCommand(c)
	}
	return cmd
}

func printDLQ(w io.Writer, dl []bus.DeadLetter) error {
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SEQ\tTIME\tSTAGE\tREASON\tDELIVERIES\tSIZE\tSUBJECT\tERROR")
	for _, d := range dl {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%d\t%d\t%s\t%s\n", d.Seq, d.Time.UTC().Format(time.RFC3339), d.Stage, d.Reason,
			d.Deliveries, d.Size, d.Subject, d.Error)
	}
	return tw.Flush()
}
