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

	"github.com/spf13/cobra"

	"github.com/containsec/contain/enricher"
	"github.com/containsec/contain/internal/engines"
	"github.com/containsec/contain/internal/posture"
	"github.com/containsec/contain/store"
)

// engineAudit holds the flags of the engine-wide audits: --running
// --policy (containers) and --inventory (images).
type engineAudit struct {
	policy      string
	inventory   bool
	dockerHosts []string
	containerd  []string
	podman      bool
}

func (a *engineAudit) register(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringVar(&a.policy, "policy", "", "with --running: audit the running containers of every engine against a policy (read-only, non-root); exit 3 on a violation")
	f.BoolVar(&a.inventory, "inventory", false, "audit every tagged image of every engine (docker, containerd namespaces, podman) and report running containers whose image failed")
	f.StringSliceVar(&a.dockerHosts, "docker-host", nil, "Docker Engine addresses for --policy/--inventory (default commits.docker_hosts)")
	f.StringSliceVar(&a.containerd, "containerd", nil, "containerd sockets for --policy/--inventory (default commits.containerd)")
	f.BoolVar(&a.podman, "podman", false, "also podman for --policy/--inventory (default commits.podman)")
}

// active says whether an engine-wide audit was asked for.
func (a *engineAudit) active() bool { return a.policy != "" || a.inventory }

func (a *engineAudit) sources(cmd *cobra.Command, cfg *Config) posture.Sources {
	s := posture.Sources{DockerHosts: cfg.Commits.DockerHosts, Containerd: cfg.Commits.Containerd, Podman: cfg.Commits.Podman,
		PodmanBinary: cfg.Commits.PodmanBinary}
	f := cmd.Flags()
	if f.Changed("docker-host") {
		s.DockerHosts = a.dockerHosts
	}
	if f.Changed("containerd") {
		s.Containerd = a.containerd
	}
	if f.Changed("podman") {
		s.Podman = a.podman
	}
	return s
}

// warnEngines reports engines that did not answer; the audit goes on with
// the others.
func warnEngines(cmd *cobra.Command, err error) {
	if err != nil {
		for _, l := range strings.Split(err.Error(), "\n") {
			fmt.Fprintf(cmd.ErrOrStderr(), "contain: engine not audited: %s\n", l)
		}
	}
}

// run performs the engine-wide audit asked for.
func (a *engineAudit) run(cmd *cobra.Command, cfg *Config, running bool, format string, threshold enricher.Severity, save bool) error {
	if a.policy != "" && !running {
		return fmt.Errorf("audit: --policy audits running containers: add --running")
	}
	ctx := cmd.Context()
	src := a.sources(cmd, cfg)
	var st *store.Store
	if save {
		s, err := store.Open(ctx, cfg.Store, cfg.logger(os.Stderr))
		if err != nil {
			return err
		}
		defer s.Close()
		if err := s.Migrate(ctx); err != nil {
			return err
		}
		st = s
	}
	failed := false
	if a.policy != "" {
		policy, err := posture.ParsePolicy(a.policy)
		if err != nil {
			return fmt.Errorf("--policy: %w", err)
		}
		cs, err := src.Running(ctx)
		warnEngines(cmd, err)
		results := make([]posture.Result, 0, len(cs))
		for _, c := range cs {
			r := posture.Evaluate(c, policy)
			failed = failed || r.Verdict == posture.VerdictFail
			results = append(results, r)
		}
		if err := renderResults(cmd.OutOrStdout(), format, results); err != nil {
			return err
		}
		if st != nil {
			if err := st.InsertContainerAudits(ctx, auditRows(cfg.Host, results)...); err != nil {
				return err
			}
		}
	}
	if a.inventory {
		bad, err := a.runInventory(cmd, cfg, src, format, threshold, st)
		if err != nil {
			return err
		}
		failed = failed || bad
	}
	if failed {
		return exitError{code: 3, msg: "policy violations or failed images"}
	}
	return nil
}

func auditRows(host string, results []posture.Result) []store.ContainerAuditRow {
	now := time.Now().UTC()
	rows := make([]store.ContainerAuditRow, 0, len(results))
	for _, r := range results {
		c := r.Container
		row := store.ContainerAuditRow{Time: now, Host: host, Engine: c.Engine, ContainerID: c.ID, ContainerName: c.Name,
			ImageRef: c.ImageRef, ImageID: c.ImageID, Policy: r.Policy, Verdict: r.Verdict, ReadOnlyRootfs: c.ReadOnlyRootfs,
			RunsAsRoot: r.RunsAsRoot, WritableMounts: r.WritableMounts, Auditor: "contain audit@" + host}
		for _, f := range r.Findings {
			row.FindingCodes = append(row.FindingCodes, f.Code)
			row.FindingMessages = append(row.FindingMessages, f.Message)
		}
		rows = append(rows, row)
	}
	return rows
}

func renderResults(w io.Writer, format string, results []posture.Result) error {
	if format == "json" {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(results)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "VERDICT\tENGINE\tCONTAINER\tIMAGE\tROOTFS\tROOT\tFINDINGS")
	for _, r := range results {
		c := r.Container
		rootfs := "rw"
		if c.ReadOnlyRootfs {
			rootfs = "ro"
		}
		var fs []string
		for _, f := range r.Findings {
			fs = append(fs, f.Code+": "+f.Message)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%v\t%s\n", strings.ToUpper(r.Verdict), c.Engine, containerLabel(c), c.ImageRef, rootfs, r.RunsAsRoot, strings.Join(fs, "; "))
	}
	return tw.Flush()
}

func containerLabel(c engines.ContainerConfig) string {
	id := c.ID
	if len(id) > 12 {
		id = id[:12]
	}
	if c.Name != "" && c.Name != c.ID {
		id = c.Name + " (" + id + ")"
	}
	if c.Namespace != "" {
		id = c.Namespace + "/" + id
	}
	return id
}

// inventoryImage is one image's audit in the inventory report.
type inventoryImage struct {
	posture.Image
	Verdict  string             `json:"verdict"`
	Error    string             `json:"error,omitempty"`
	Findings []enricher.Finding `json:"findings"`
}

// inventoryReport is --inventory's JSON output.
type inventoryReport struct {
	Images []inventoryImage `json:"images"`
	// Running are running containers whose image failed.
	Running []engines.ContainerConfig `json:"running_failed"`
}

func (a *engineAudit) runInventory(cmd *cobra.Command, cfg *Config, src posture.Sources, format string, threshold enricher.Severity, st *store.Store) (bool, error) {
	ctx := cmd.Context()
	ims, err := src.Images(ctx)
	warnEngines(cmd, err)
	dir, err := os.MkdirTemp("", "contain-inventory-")
	if err != nil {
		return false, err
	}
	defer os.RemoveAll(dir)
	var rep inventoryReport
	failedRefs := map[string]bool{}
	for _, im := range ims {
		ii := inventoryImage{Image: im, Verdict: "pass"}
		findings, err := auditExported(ctx, cfg, src, im, dir)
		if err != nil {
			ii.Verdict, ii.Error = "error", err.Error()
		} else {
			ii.Findings = findings
			if enricher.Exceeds(findings, threshold) {
				ii.Verdict = "fail"
				failedRefs[im.Ref] = true
				if im.ID != "" {
					failedRefs[im.ID] = true
				}
			}
			if st != nil {
				if err := st.InsertImageAudit(ctx, imageAuditRow(cfg.Host, im, findings)); err != nil {
					return false, err
				}
			}
		}
		rep.Images = append(rep.Images, ii)
	}
	cs, err := src.Running(ctx)
	warnEngines(cmd, err)
	for _, c := range cs {
		if failedRefs[c.ImageRef] || failedRefs[c.ImageID] || failedRefs["docker.io/"+c.ImageRef] {
			rep.Running = append(rep.Running, c)
		}
	}
	out := cmd.OutOrStdout()
	if format == "json" {
		enc := json.NewEncoder(out)
		enc.SetIndent("", "  ")
		return len(failedRefs) > 0, enc.Encode(rep)
	}
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "VERDICT\tENGINE\tIMAGE\tFINDINGS")
	for _, ii := range rep.Images {
		var fs []string
		for _, f := range ii.Findings {
			fs = append(fs, strings.ToLower(f.Severity.String())+" "+f.Rule)
		}
		if ii.Error != "" {
			fs = append(fs, ii.Error)
		}
		ref := ii.Ref
		if ii.Namespace != "" {
			ref = ii.Namespace + "/" + ref
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", strings.ToUpper(ii.Verdict), ii.Engine, ref, strings.Join(fs, ", "))
	}
	if err := tw.Flush(); err != nil {
		return false, err
	}
	if len(rep.Running) > 0 {
		fmt.Fprintln(out, "\nRunning containers whose image failed:")
		for _, c := range rep.Running {
			fmt.Fprintf(out, "  %s %s %s\n", c.Engine, containerLabel(c), c.ImageRef)
		}
	}
	return len(failedRefs) > 0, nil
}

// auditExported exports im from its engine and audits the tarball.
func auditExported(ctx context.Context, cfg *Config, src posture.Sources, im posture.Image, dir string) ([]enricher.Finding, error) {
	path, err := src.Export(ctx, im, dir)
	if err != nil {
		return nil, err
	}
	defer os.Remove(path)
	acfg := cfg.Audit
	acfg.Registry.Enabled = false
	acfg.ImageSources = enricher.ImageSourcesConfig{Tarballs: []string{path}}
	return enricher.AuditWith(ctx, acfg, im.Ref)
}

func imageAuditRow(host string, im posture.Image, findings []enricher.Finding) store.ImageAuditRow {
	row := store.ImageAuditRow{Time: time.Now().UTC(), ImageRef: im.Ref, ImageDigest: im.ID, Auditor: "contain audit --inventory@" + host + "/" + im.Engine}
	for _, f := range findings {
		if f.Digest != "" {
			row.ImageDigest = f.Digest // the last finding's that has one
		}
	}
	return withFindings(row, findings)
}
