// Command contain runs contain's stages: all of them in one process with an
// embedded NATS server (`contain run`), or each alone against a shared NATS
// (`contain collect|enrich|analyze|respond|store`), plus operator commands.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"syscall"

	"github.com/spf13/cobra"
)

// Version overrides the version read from the binary's build info
// (-ldflags "-X main.Version=...").
var Version = ""

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	stopProfile := startCPUProfile(ctx)
	err := newRoot().ExecuteContext(ctx)
	stop()
	stopProfile()
	if err != nil {
		var ee exitError
		if errors.As(err, &ee) {
			if ee.msg != "" {
				fmt.Fprintln(os.Stderr, "contain:", ee.msg)
			}
			os.Exit(ee.code)
		}
		fmt.Fprintln(os.Stderr, "contain:", err)
		os.Exit(1)
	}
}

// exitError ends the process with a given status (e.g. an audit gate).
type exitError struct {
	code int
	msg  string
}

func (e exitError) Error() string { return fmt.Sprintf("exit %d: %s", e.code, e.msg) }

func newRoot() *cobra.Command {
	var opts globalOpts
	root := &cobra.Command{
		Use:           "contain",
		Short:         "Runtime security for declarative, immutable containers",
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       versionString(),
	}
	root.SetVersionTemplate("{{.Version}}\n")
	opts.register(root)
	storeCmd := stageCommand(&opts, "store", "Run the ClickHouse sink", []string{stageStore}, false)
	storeCmd.AddCommand(storePruneCommand(&opts))
	root.AddCommand(
		stageCommand(&opts, "run", "Run every stage in one process with an embedded NATS server", allStages, true),
		stageCommand(&opts, "collect", "Run the eBPF collector (root)", []string{stageCollector}, false),
		stageCommand(&opts, "enrich", "Run the enricher", []string{stageEnricher}, false),
		stageCommand(&opts, "analyze", "Run the analyzer", []string{stageAnalyzer}, false),
		stageCommand(&opts, "respond", "Run the responder (root)", []string{stageResponder}, false),
		storeCmd,
		stageCommand(&opts, "notify", "Push alerts and actions to webhooks, syslog and Falcosidekick (notify.outputs)", []string{stageNotify}, false),
		releaseCommand(&opts),
		quarantineCommand(&opts),
		checkConfigCommand(&opts),
		versionCommand(),
	)
	for _, add := range extraCommands {
		root.AddCommand(add(&opts))
	}
	return root
}

// extraCommands lets other files of this package add subcommands.
var extraCommands []func(*globalOpts) *cobra.Command

func versionCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version, VCS revision, Go version and event schema version",
		Args:  cobra.NoArgs,
		Run: func(cmd *cobra.Command, _ []string) {
			fmt.Fprintln(cmd.OutOrStdout(), versionString())
		},
	}
}

// versionString describes this binary from its build info: the module
// version (or Version), the VCS revision and time when recorded, and the
// Go version.
func versionString() string {
	version, rev, goVersion := Version, "", runtime.Version()
	if info, ok := debug.ReadBuildInfo(); ok {
		if version == "" {
			version = info.Main.Version
		}
		goVersion = info.GoVersion
		var modified bool
		var when string
		for _, s := range info.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.time":
				when = s.Value
			case "vcs.modified":
				modified = s.Value == "true"
			}
		}
		if rev != "" {
			rev = " " + rev[:min(12, len(rev))]
			if modified {
				rev += "-dirty"
			}
			if when != "" {
				rev += " " + when
			}
		}
	}
	if version == "" {
		version = "(devel)"
	}
	return fmt.Sprintf("contain %s%s %s (event schema v%d)", version, rev, goVersion, schemaVersion())
}

func checkConfigCommand(opts *globalOpts) *cobra.Command {
	return &cobra.Command{
		Use:   "check-config",
		Short: "Load and validate the configuration, print it, and exit",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := opts.load(cmd)
			if err != nil {
				return err
			}
			if err := cfg.validate(allStages); err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), "configuration OK")
			return printYAML(cmd.OutOrStdout(), cfg)
		},
	}
}
