package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/user"
	"time"

	"github.com/spf13/cobra"

	"github.com/containsec/contain/responder"
)

func actorName() string {
	name := "unknown"
	if u, err := user.Current(); err == nil {
		name = u.Username
	}
	h, _ := os.Hostname()
	return name + "@" + h
}

func releaseCommand(opts *globalOpts) *cobra.Command {
	var reason, actor string
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "release CONTAINER",
		Short: "Thaw a quarantined container through its host's responder, recording who and why",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := opts.load(cmd)
			if err != nil {
				return err
			}
			if reason == "" {
				return fmt.Errorf("--reason: say why the container is released")
			}
			if actor == "" {
				actor = actorName()
			}
			log := cfg.logger(os.Stderr)
			nc, _, closeNATS, err := connect(cfg, false, "release", log)
			if err != nil {
				return err
			}
			defer closeNATS()
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			ev, err := responder.Release(ctx, nc, cfg.Host, args[0], actor, reason)
			if err != nil {
				return fmt.Errorf("release %s: %w", args[0], err)
			}
			a := ev.GetAction()
			fmt.Fprintf(cmd.OutOrStdout(), "released %s on %s: %s (%s) by %s\n", args[0], cfg.Host, a.GetResult(), a.GetMethod(), a.GetActor())
			return nil
		},
	}
	cmd.Flags().StringVar(&reason, "reason", "", "why the container is released (recorded)")
	cmd.Flags().StringVar(&actor, "actor", "", "who releases it (default user@host)")
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
			nc, _, closeNATS, err := connect(cfg, false, "quarantine", cfg.logger(os.Stderr))
			if err != nil {
				return err
			}
			defer closeNATS()
			ctx, cancel := context.WithTimeout(cmd.Context(), 10*time.Second)
			defer cancel()
			qs, err := responder.ListQuarantined(ctx, nc, cfg.Host)
			if err != nil {
				return err
			}
			if asJSON {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(qs)
			}
			for _, q := range qs {
				fmt.Fprintf(cmd.OutOrStdout(), "%+v\n", q)
			}
			return nil
		},
	}
	list.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	root.AddCommand(list)
	return root
}
