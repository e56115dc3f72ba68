package main

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/containsec/contain/store"
)

// storePruneCommand is `contain store prune`: drop the day partitions
// older than --older-than now (what store.retention does daily).
func storePruneCommand(opts *globalOpts) *cobra.Command {
	var olderThan string
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "prune --older-than AGE",
		Short: "Drop the ClickHouse day partitions older than AGE (e.g. 30d, 720h) in every table, print them, and exit",
		Long: `prune drops whole days (ALTER TABLE ... DROP PARTITION) whose day ended
more than AGE ago, in every day-partitioned table of store.database; the
baselines, declarations and image_audits tables are never pruned. AGE is a Go
duration or a number of days (30d), at least one day.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			age, err := parseAge(olderThan)
			if err != nil {
				return fmt.Errorf("--older-than: %w", err)
			}
			cfg, err := opts.load(cmd)
			if err != nil {
				return err
			}
			if err := cfg.validate([]string{stageStore}); err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			s, err := store.Open(ctx, cfg.Store, cfg.logger(cmd.ErrOrStderr()))
			if err != nil {
				return fmt.Errorf("store prune: %w", err)
			}
			defer s.Close()
			dropped, err := s.Prune(ctx, age)
			for _, d := range dropped {
				fmt.Fprintln(cmd.OutOrStdout(), "dropped", d)
			}
			if err != nil {
				return fmt.Errorf("store prune: %w", err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%d partitions older than %s dropped\n", len(dropped), olderThan)
			return nil
		},
	}
	cmd.Flags().StringVar(&olderThan, "older-than", "", "drop days that ended longer ago than this (30d, 720h); required")
	cmd.Flags().DurationVar(&timeout, "timeout", 5*time.Minute, "give up after this long")
	_ = cmd.MarkFlagRequired("older-than")
	return cmd
}

// parseAge reads a duration or a number of days ("30d").
func parseAge(s string) (time.Duration, error) {
	if days, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.Atoi(days)
		if err != nil || n < 1 {
			return 0, fmt.Errorf("%q is not a number of days", s)
		}
		return time.Duration(n) * 24 * time.Hour, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("%q is not a duration (30d, 720h)", s)
	}
	if d < 24*time.Hour {
		return 0, errors.New("must be at least one day (retention is by day)")
	}
	return d, nil
}
