package enricher

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/google/go-containerregistry/pkg/name"

	"github.com/containsec/contain/internal/dockerfile"
	"github.com/containsec/contain/internal/imagecfg"
	"github.com/containsec/contain/schemas/kvdoc"
)

// Severity orders audit findings.
type Severity int

// Severities, lowest first.
const (
	SeverityInfo Severity = iota
	SeverityLow
	SeverityMedium
	SeverityHigh
	SeverityCritical
)

var severityNames = []string{"info", "low", "medium", "high", "critical"}

func (s Severity) String() string {
	if s < 0 || int(s) >= len(severityNames) {
		return "severity(" + strconv.Itoa(int(s)) + ")"
	}
	return severityNames[s]
}

// MarshalJSON writes the name.
func (s Severity) MarshalJSON() ([]byte, error) { return json.Marshal(s.String()) }

// UnmarshalJSON reads the name.
func (s *Severity) UnmarshalJSON(b []byte) error {
	var n string
	if err := json.Unmarshal(b, &n); err != nil {
		return err
	}
	v, err := ParseSeverity(n)
	*s = v
	return err
}

// ParseSeverity reads "info".."critical" (case-insensitive).
func ParseSeverity(s string) (Severity, error) {
	i := slices.Index(severityNames, strings.ToLower(strings.TrimSpace(s)))
	if i < 0 {
		return 0, fmt.Errorf("severity %q: want one of %s", s, strings.Join(severityNames, ", "))
	}
	return Severity(i), nil
}

// Finding is one audit result.
type Finding struct {
	Image    string   `json:"image"`
	Digest   string   `json:"digest,omitempty"`
	Rule     string   `json:"rule"`
	Severity Severity `json:"severity"`
	Message  string   `json:"message"`
	// Evidence is the config field, history line or Dockerfile line
	// (secret values are never included).
	Evidence string `json:"evidence,omitempty"`
}

// AuditConfig configures the image audit (`contain audit`).
type AuditConfig struct {
	Registry     RegistryConfig     `config:"registry"`
	ImageSources ImageSourcesConfig `config:"image_sources"`
	// MaxBaseAge flags a base image built longer ago than this.
	MaxBaseAge time.Duration `config:"max_base_age"`
	// Dockerfile, when set, is audited with the image.
	Dockerfile string `config:"dockerfile"`
	// Timeout bounds the audit of one image.
	Timeout time.Duration `config:"timeout"`
}

// DefaultAuditConfig pulls from registries with the default keychain.
func DefaultAuditConfig() AuditConfig {
	return AuditConfig{
		Registry:   RegistryConfig{Enabled: true, Keychain: true, LayerFiles: true, MaxLayerBytes: 512 << 20},
		MaxBaseAge: 180 * 24 * time.Hour,
		Timeout:    2 * time.Minute,
	}
}

// Validate names the offending key.
func (c AuditConfig) Validate() error {
	switch {
	case c.MaxBaseAge <= 0:
		return errors.New("audit.max_base_age: must be > 0")
	case c.Timeout <= 0:
		return errors.New("audit.timeout: must be > 0")
	case c.Registry.MaxLayerBytes < 0:
		return errors.New("audit.registry.max_layer_bytes: must be >= 0")
	}
	return nil
}

// Audit audits one image reference with DefaultAuditConfig.
func Audit(ctx context.Context, ref string) ([]Finding, error) {
	return AuditWith(ctx, DefaultAuditConfig(), ref)
}

// AuditWith fetches ref (local sources, then the registry), reads its
// declaration and returns its findings, most severe first.
func AuditWith(ctx context.Context, cfg AuditConfig, ref string) ([]Finding, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	digest := ""
	if i := strings.LastIndexByte(ref, '@'); i >= 0 && kvdoc.ValidDigest(ref[i+1:]) {
		digest = ref[i+1:]
	}
	img, source, err := sourcesOf(cfg.Registry, cfg.ImageSources).Fetch(ctx, ref, digest)
	if err != nil {
		return nil, fmt.Errorf("auditing %s: %w", ref, err)
	}
	decl, err := imagecfg.Declare(img, imagecfg.Options{ListFiles: cfg.Registry.LayerFiles || source != imagecfg.SourceRegistry, MaxLayerBytes: cfg.Registry.MaxLayerBytes})
	if err != nil {
		return nil, fmt.Errorf("auditing %s: %w", ref, err)
	}
	decl.Ref, decl.Source = ref, source
	var df *dockerfile.Dockerfile
	if cfg.Dockerfile != "" {
		if df, err = readDockerfile(cfg.Dockerfile); err != nil {
			return nil, fmt.Errorf("auditing %s: %w", ref, err)
		}
	}
	return AuditDeclaration(decl, df, cfg.MaxBaseAge, time.Now()), nil
}

var (
	curlPipeRE  = regexp.MustCompile(`(curl|wget)\b[^|;&]*\|\s*(sudo\s+)?(ba|z|da|k)?sh\b`)
	aptInstall  = regexp.MustCompile(`\bapt(-get)?\s+(-\S+\s+)*install\b`)
	aptUpdate   = regexp.MustCompile(`\bapt(-get)?\s+(-\S+\s+)*update\b`)
	addURLRE    = regexp.MustCompile(`(?i)(^|\s|#\(nop\)\s+)ADD\s+(--\S+\s+)*https?://`)
	debugPorts  = map[uint16]string{22: "ssh", 23: "telnet", 2375: "docker API", 2376: "docker API", 5005: "JDWP", 9229: "node inspector", 2345: "delve", 5678: "debugpy", 6060: "pprof", 4444: "remote shell"}
	highDbgPort = map[uint16]bool{22: true, 23: true, 2375: true, 2376: true}
)

// AuditDeclaration applies the audit rules to a declaration (and its
// Dockerfile if known). It is pure.
func AuditDeclaration(decl *imagecfg.Declaration, df *dockerfile.Dockerfile, maxBaseAge time.Duration, now time.Time) []Finding {
	var out []Finding
	add := func(rule string, sev Severity, msg, evidence string) {
		out = append(out, Finding{Image: decl.Ref, Digest: decl.Digest, Rule: rule, Severity: sev, Message: msg, Evidence: evidence})
	}
	// Build steps: history lines and Dockerfile lines.
	type step struct{ text, where string }
	var steps []step
	for i, h := range decl.History {
		steps = append(steps, step{h.CreatedBy, "history[" + strconv.Itoa(i) + "]"})
	}
	if df != nil {
		for _, in := range df.Instructions {
			steps = append(steps, step{in.Original, "Dockerfile:" + strconv.Itoa(in.Line)})
		}
	}
	updated := false
	for _, s := range steps {
		if strings.HasPrefix(s.where, "Dockerfile") && strings.HasPrefix(strings.ToUpper(strings.TrimSpace(s.text)), "FROM") {
			updated = false // a new stage starts with a fresh index
		}
		if aptUpdate.MatchString(s.text) {
			updated = true
		}
		if aptInstall.MatchString(s.text) && !updated {
			add("apt_install_without_update", SeverityMedium, "packages installed without updating the package index first (stale or missing packages)", s.where+": "+s.text)
		}
		if curlPipeRE.MatchString(s.text) {
			add("curl_pipe_shell", SeverityHigh, "a downloaded script is piped into a shell", s.where+": "+s.text)
		}
		if addURLRE.MatchString(s.text) {
			add("add_from_url", SeverityMedium, "ADD fetches a URL at build time (no checksum, not reproducible)", s.where+": "+s.text)
		}
	}
	user := decl.User
	if user == "" && df != nil {
		user = df.User
	}
	switch uidOf(user) {
	case 0:
		if user == "" {
			add("no_user", SeverityMedium, "no USER: the container runs as root", "config.User is empty")
		} else {
			add("root_user", SeverityHigh, "the image runs as root", "config.User="+user)
		}
	}
	if ref := decl.Ref; ref != "" && !strings.Contains(ref, "@") {
		tag := "latest"
		if r, err := name.NewTag(ref); err == nil {
			tag = r.TagStr()
		}
		if tag == "latest" {
			add("latest_tag", SeverityMedium, "referenced by the mutable :latest tag", ref)
		} else {
			add("mutable_tag", SeverityLow, "referenced by tag, not by digest", ref)
		}
	}
	if base := decl.BaseCreated(); !base.IsZero() && now.Sub(base) > maxBaseAge {
		add("stale_base", SeverityMedium, fmt.Sprintf("base image built %d days ago (max %d)", int(now.Sub(base).Hours()/24), int(maxBaseAge.Hours()/24)),
			"oldest history entry: "+base.Format(time.RFC3339)+baseName(decl, df))
	}
	for _, ev := range decl.Env {
		if ev.Redacted {
			add("secret_env", SeverityHigh, "an environment variable looks like a secret baked into the image", "ENV "+ev.Name+" (value redacted)")
		}
	}
	ports := slices.Clone(decl.ExposedPorts)
	if df != nil {
		ports = append(ports, df.Expose...)
	}
	for _, p := range parsePorts(ports) {
		if what, ok := debugPorts[p.Port]; ok {
			sev := SeverityMedium
			if highDbgPort[p.Port] {
				sev = SeverityHigh
			}
			add("debug_port_exposed", sev, what+" port exposed", "EXPOSE "+strconv.Itoa(int(p.Port))+"/"+p.Protocol)
		}
	}
	for _, f := range decl.Setuid {
		if f.Layer == 0 && len(decl.Layers) > 1 {
			continue // shipped by the base layer
		}
		ev := fmt.Sprintf("%s mode %o layer %d", f.Path, f.Mode&0o7777, f.Layer)
		if f.Layer < len(decl.Layers) && decl.Layers[f.Layer].CreatedBy != "" {
			ev += " (" + decl.Layers[f.Layer].CreatedBy + ")"
		}
		add("setuid_added", SeverityMedium, "a setuid/setgid binary is added by the image", ev)
	}
	slices.SortStableFunc(out, func(a, b Finding) int { return int(b.Severity) - int(a.Severity) })
	return out
}

func baseName(decl *imagecfg.Declaration, df *dockerfile.Dockerfile) string {
	switch {
	case decl.BaseName != "":
		return ", base " + decl.BaseName
	case df != nil && df.Base() != "":
		return ", base " + df.Base()
	}
	return ""
}

// Exceeds reports whether any finding is at or above threshold: the CLI
// exits non-zero when it does (deploy gate).
func Exceeds(findings []Finding, threshold Severity) bool {
	for _, f := range findings {
		if f.Severity >= threshold {
			return true
		}
	}
	return false
}

// RenderTable writes findings as an aligned text table.
func RenderTable(w io.Writer, findings []Finding) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SEVERITY\tIMAGE\tRULE\tMESSAGE\tEVIDENCE")
	for _, f := range findings {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", strings.ToUpper(f.Severity.String()), f.Image, f.Rule, f.Message, oneLine(f.Evidence, 120))
	}
	return tw.Flush()
}

// RenderJSON writes findings as a JSON array.
func RenderJSON(w io.Writer, findings []Finding) error {
	if findings == nil {
		findings = []Finding{}
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(findings)
}

func oneLine(s string, max int) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > max {
		s = s[:max-3] + "..."
	}
	return s
}
