package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/containsec/contain/enricher"
	"github.com/containsec/contain/store"
)

func init() { extraCommands = append(extraCommands, auditCommand) }

func auditCommand(opts *globalOpts) *cobra.Command {
	var (
		format, failOn string
		save, running  bool
		engine         engineAudit
	)
	cmd := &cobra.Command{
		Use:   "audit IMAGE...",
		Short: "Audit images for poor construction and policy violations (exit 3 at or above --fail-on)",
		Long: `audit reads each image's config and history (registry, OCI layout or docker-save
tarball per the enricher's image sources) and reports findings with severity
and evidence: packages installed without an index update, stale base, root
user, mutable tag, ADD from URL, curl|sh installs, secret-like ENV names,
SSH/debug ports, setuid binaries added. It exits 3 when a finding is at or
above --fail-on, so it works as a deploy gate.

--running --policy read-only (or non-root) audits the running containers of
every engine instead (docker, containerd namespaces, podman): read-only root
filesystem, writable mounts against declared volumes and tmpfs, root user;
exit 3 on a violation, --store writes container_audits rows.
--inventory audits every tagged image of those engines and names the running
containers whose image failed; --store writes image_audits rows.`,
		Args: cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, images []string) error {
			cfg, err := opts.load(cmd)
			if err != nil {
				return err
			}
			if engine.active() {
				if len(images) > 0 {
					return fmt.Errorf("audit: name images, or use --policy/--inventory, not both")
				}
				if format != "table" && format != "json" {
					return fmt.Errorf("--format: %q is not table or json", format)
				}
				threshold, err := enricher.ParseSeverity(failOn)
				if err != nil {
					return fmt.Errorf("--fail-on: %w", err)
				}
				return engine.run(cmd, cfg, running, format, threshold, save)
			}
			if running {
				more, err := runningImages(cmd, cfg)
				if err != nil {
					return err
				}
				images = append(images, more...)
			}
			if len(images) == 0 {
				return fmt.Errorf("audit: name images, or --running for those in use on this host")
			}
			threshold, err := enricher.ParseSeverity(failOn)
			if err != nil {
				return fmt.Errorf("--fail-on: %w", err)
			}
			if format != "table" && format != "json" {
				return fmt.Errorf("--format: %q is not table or json", format)
			}
			var all []enricher.Finding
			for _, ref := range images {
				findings, err := enricher.AuditWith(cmd.Context(), cfg.Audit, ref)
				if err != nil {
					return err
				}
				all = append(all, findings...)
				if save {
					if err := saveAudit(cmd.Context(), cfg, ref, findings); err != nil {
						return err
					}
				}
			}
			out := cmd.OutOrStdout()
			if format == "json" {
				err = enricher.RenderJSON(out, all)
			} else {
				err = enricher.RenderTable(out, all)
			}
			if err != nil {
				return err
			}
			if enricher.Exceeds(all, threshold) {
				return exitError{code: 3, msg: fmt.Sprintf("findings at or above %s", failOn)}
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&format, "format", "table", "table or json")
	cmd.Flags().StringVar(&failOn, "fail-on", "high", "exit 3 when a finding is at or above this severity (info, low, medium, high, critical)")
	cmd.Flags().BoolVar(&running, "running", false, "also audit every image in use on this host (--host), as the enricher knows them")
	cmd.Flags().BoolVar(&save, "store", false, "also store the results in ClickHouse (store.*)")
	engine.register(cmd)
	return cmd
}

func saveAudit(ctx context.Context, cfg *Config, ref string, findings []enricher.Finding) error {
	log := cfg.logger(os.Stderr)
	s, err := store.Open(ctx, cfg.Store, log)
	if err != nil {
		return err
	}
	defer s.Close()
	if err := s.Migrate(ctx); err != nil {
		return err
	}
	row := store.ImageAuditRow{Time: time.Now(), ImageRef: ref, Auditor: "contain audit@" + cfg.Host}
	for _, f := range findings {
		if f.Digest != "" {
			row.ImageDigest = f.Digest // the first finding's that has one
			break
		}
	}
	row = withFindings(row, findings)
	return s.InsertImageAudit(ctx, row)
}

// withFindings fills row's finding columns, its verdict ("pass", or the
// worst finding's severity in lower case) and its doc (findings as JSON).
func withFindings(row store.ImageAuditRow, findings []enricher.Finding) store.ImageAuditRow {
	row.Verdict = "pass"
	worst := enricher.SeverityInfo
	for _, f := range findings {
		row.FindingCodes = append(row.FindingCodes, f.Rule)
		row.FindingMessages = append(row.FindingMessages, f.Message)
		row.FindingSeverities = append(row.FindingSeverities, f.Severity.String())
		worst = max(worst, f.Severity)
	}
	if len(findings) > 0 {
		row.Verdict = strings.ToLower(worst.String())
	}
	doc, _ := json.Marshal(findings)
	row.Doc = string(doc)
	return row
}

// runningImages asks the enricher's containers bucket which images this
// host's containers run.
func runningImages(cmd *cobra.Command, cfg *Config) ([]string, error) {
	s, err := cliConnect(cfg, "audit", readerRoles...)
	if err != nil {
		return nil, fmt.Errorf("--running: %w", err)
	}
	defer s.close()
	js := s.js
	ctx, cancel := context.WithTimeout(cmd.Context(), 30*time.Second)
	defer cancel()
	recs, skipped, err := enricher.RunningImages(ctx, js, cfg.Enricher.ContainersBucket, cfg.Host)
	if err != nil {
		return nil, fmt.Errorf("--running: %w", err)
	}
	if skipped > 0 {
		fmt.Fprintf(cmd.ErrOrStderr(), "contain: %d undecodable container records skipped\n", skipped)
	}
	var refs []string
	for _, r := range recs {
		ref := r.ImageRef
		if r.ImageDigest != "" && !strings.Contains(ref, "@") {
			ref += "@" + r.ImageDigest
		}
		refs = append(refs, ref)
	}
	return refs, nil
}
