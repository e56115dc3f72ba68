package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/containsec/contain/analyzer"
	"github.com/containsec/contain/internal/auth"
)

func init() { extraCommands = append(extraCommands, baselineCommand, evalCommand) }

// withJS loads the config, connects to NATS with reader (or operator)
// credentials and calls fn with a bounded context.
func withJS(cmd *cobra.Command, opts *globalOpts, fn func(ctx context.Context, cfg *Config, js jetstream.JetStream) error) error {
	return withSession(cmd, opts, readerRoles, func(ctx context.Context, cfg *Config, s *cliSession) error { return fn(ctx, cfg, s.js) })
}

// withSession loads the config, connects with the first readable
// credentials of roles and calls fn with a bounded context.
func withSession(cmd *cobra.Command, opts *globalOpts, roles []string, fn func(ctx context.Context, cfg *Config, s *cliSession) error) error {
	cfg, err := opts.load(cmd)
	if err != nil {
		return err
	}
	s, err := cliConnect(cfg, "baseline", roles...)
	if err != nil {
		return fmt.Errorf("%s: %w", cmd.CommandPath(), err)
	}
	defer s.close()
	ctx, cancel := context.WithTimeout(cmd.Context(), 30*time.Second)
	defer cancel()
	return fn(ctx, cfg, s)
}

// operatorRoles may change baselines (the change is signed).
var operatorRoles = []string{auth.RoleOperator}

func baselineCommand(opts *globalOpts) *cobra.Command {
	root := &cobra.Command{
		Use:   "baseline",
		Short: "Review and manage learned baselines (list, show, export, import, lock, unlock, reset)",
	}
	var asJSON bool
	list := &cobra.Command{
		Use:   "list",
		Short: "List baselines with their phase (learning, converged, locked) and version",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withJS(cmd, opts, func(ctx context.Context, cfg *Config, js jetstream.JetStream) error {
				sums, err := analyzer.ListBaselines(ctx, js, cfg.Analyzer.BaselinesBucket)
				if err != nil {
					return err
				}
				if asJSON {
					return json.NewEncoder(cmd.OutOrStdout()).Encode(sums)
				}
				return writeSummaries(cmd.OutOrStdout(), sums)
			})
		},
	}
	list.Flags().BoolVar(&asJSON, "json", false, "print JSON")

	var format string
	show := &cobra.Command{
		Use:   "show KEY",
		Short: "Print a baseline as readable YAML",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withJS(cmd, opts, func(ctx context.Context, cfg *Config, js jetstream.JetStream) error {
				return analyzer.ExportBaseline(ctx, js, cfg.Analyzer.BaselinesBucket, args[0], "yaml", cmd.OutOrStdout())
			})
		},
	}
	export := &cobra.Command{
		Use:   "export KEY",
		Short: "Write a baseline as yaml, json, or an OCI seccomp profile (--format seccomp)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withJS(cmd, opts, func(ctx context.Context, cfg *Config, js jetstream.JetStream) error {
				return analyzer.ExportBaseline(ctx, js, cfg.Analyzer.BaselinesBucket, args[0], format, cmd.OutOrStdout())
			})
		},
	}
	export.Flags().StringVar(&format, "format", "yaml", "yaml, json or seccomp")
	imp := &cobra.Command{
		Use:   "import FILE",
		Short: "Store a reviewed YAML baseline (running analyzers apply it)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			f, err := os.Open(args[0])
			if err != nil {
				return err
			}
			defer f.Close()
			return withSession(cmd, opts, operatorRoles, func(ctx context.Context, cfg *Config, s *cliSession) error {
				d, err := analyzer.ImportBaseline(ctx, s.js, cfg.Analyzer.BaselinesBucket, f, s.signer())
				if err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "imported baseline %s (by %s)\n", d.Key, d.OpActor)
				return nil
			})
		},
	}
	root.AddCommand(list, show, export, imp)
	for verb, fn := range map[string]func(context.Context, jetstream.JetStream, string, string, *auth.Signer) error{
		"lock":   analyzer.LockBaseline,
		"unlock": analyzer.UnlockBaseline,
		"reset":  analyzer.ResetBaseline,
	} {
		root.AddCommand(&cobra.Command{
			Use:   verb + " KEY",
			Short: verb + " a baseline (running analyzers apply it)",
			Args:  cobra.ExactArgs(1),
			RunE: func(cmd *cobra.Command, args []string) error {
				return withSession(cmd, opts, operatorRoles, func(ctx context.Context, cfg *Config, s *cliSession) error {
					if err := fn(ctx, s.js, cfg.Analyzer.BaselinesBucket, args[0], s.signer()); err != nil {
						return err
					}
					fmt.Fprintf(cmd.OutOrStdout(), "%s: %s (by %s)\n", verb, args[0], s.signer().Actor())
					return nil
				})
			},
		})
	}
	return root
}

func writeSummaries(w io.Writer, sums []analyzer.Summary) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "KEY\tIMAGE\tPHASE\tVERSION\tITEMS\tLEARNING SINCE\tCONVERGED\tERROR")
	for _, s := range sums {
		conv := ""
		if !s.Converged.IsZero() {
			conv = s.Converged.UTC().Format(time.RFC3339)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%s\t%s\t%s\n", s.Key, s.Image, s.Phase, s.Version, s.Items,
			s.First.UTC().Format(time.RFC3339), conv, s.Err)
	}
	return tw.Flush()
}

func evalCommand(*globalOpts) *cobra.Command {
	var train, normal, attack string
	var cfg analyzer.EvalConfig
	var asJSON, compare bool
	cmd := &cobra.Command{
		Use:   "eval --train DIR --normal DIR --attack DIR",
		Short: "Score syscall traces: ROC AUC, detection at 1% and 5% false alarms, per attack family",
		Long: `eval learns from --train only, then scores --normal and --attack traces (one
trace per file, whitespace-separated syscall numbers; --attack may hold one
subfolder per attack family) and prints ROC AUC, the detection rate at 1% and
5% false-alarm rate, per-family detection and, per recording (files named
RECORDING-NNN), the alarms at the 1% threshold, consecutive ones counted once.
--model chooses the scorer (` + strings.Join(analyzer.EvalModels, ", ") + `);
--compare runs them all and prints one row each.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if train == "" || normal == "" || attack == "" {
				return fmt.Errorf("--train, --normal and --attack are required")
			}
			set, err := analyzer.ReadTraceSet(train, normal, attack)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if compare {
				rs, err := analyzer.EvalCompare(set, cfg)
				if err != nil {
					return err
				}
				if asJSON {
					return writeJSON(out, rs)
				}
				return analyzer.WriteCompare(out, rs)
			}
			res, err := analyzer.EvalSet(set, cfg)
			if err != nil {
				return err
			}
			if asJSON {
				return writeJSON(out, res)
			}
			if err := res.WriteText(out); err != nil {
				return err
			}
			return res.WriteRecordings(out)
		},
	}
	cmd.Flags().StringVar(&train, "train", "", "directory of training traces (normal behaviour)")
	cmd.Flags().StringVar(&normal, "normal", "", "directory of held-out normal traces")
	cmd.Flags().StringVar(&attack, "attack", "", "directory of attack traces (subfolders = families)")
	cmd.Flags().StringVar(&cfg.Model, "model", analyzer.ModelMarkov, "scorer: "+strings.Join(analyzer.EvalModels, "|"))
	cmd.Flags().BoolVar(&compare, "compare", false, "run every model and print them side by side")
	cmd.Flags().IntVar(&cfg.N, "n", 3, "n-gram length (model ngram)")
	cmd.Flags().IntVar(&cfg.Window, "window", 0, "locality frame: n-grams (ngram, default 20) or syscalls (markov, default 24)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
