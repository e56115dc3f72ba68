package responder

import (
	"errors"
	"fmt"
	"path"
	"slices"
	"strings"
	"time"

	"github.com/containsec/contain/internal/auth"
	"github.com/containsec/contain/internal/cgroups"
	"github.com/containsec/contain/internal/forensics"
	"github.com/containsec/contain/internal/freezer"
	"github.com/containsec/contain/schemas/containv1"
)

// Config configures a Responder. The keys named in errors are those of the
// "responder" section of contain's configuration.
type Config struct {
	// Host is the host this responder acts on; it consumes
	// containv1.AlertsSubject(Host) only.
	Host string `config:"host"`
	// Threshold is the alert score at or above which a container is paused,
	// unless a policy rule sets another one.
	Threshold float64 `config:"threshold"`
	// DryRun records DRY_RUN actions instead of pausing, everywhere.
	DryRun bool `config:"dry_run"`

	// FreezerRoot is the cgroup v1 freezer hierarchy; "" detects it from
	// the mount table (none on a cgroup2-only host), RootDisabled turns it
	// off.
	FreezerRoot string `config:"freezer_root"`
	// Cgroup2Root is the cgroup2 mount; "" detects it (/sys/fs/cgroup on a
	// cgroup2-only host, /sys/fs/cgroup/unified on a hybrid one),
	// RootDisabled turns it off.
	Cgroup2Root string `config:"cgroup2_root"`
	// RuncRoot is runc's state directory ("" disables it).
	RuncRoot string `config:"runc_root"`
	// CrunRoot is crun's state directory ("" disables it); crun's
	// containers are frozen through cgroup.freeze (crun runs on
	// cgroup2-only hosts).
	CrunRoot string `config:"crun_root"`
	// RuncBinary is the runc executable for the runc-pause method.
	RuncBinary string `config:"runc_binary"`
	// Methods are the freeze methods in order of preference (see
	// freezer.KnownMethods) for runc containers and containers whose
	// runtime is not known; the first that applies to a container is used,
	// a method failing for another reason than an exit falls through to the
	// next.
	Methods []string `config:"methods"`
	// DockerMethods is the order for docker containers; empty: Methods.
	// The default pauses through the Docker Engine API (so `docker ps`
	// shows Paused and `docker unpause` works), the cgroup files being the
	// fallback when the engine is unreachable or refuses.
	DockerMethods []string `config:"docker_methods"`
	// ContainerdMethods is the order for containerd containers; empty:
	// Methods. The default pauses the task through containerd.
	ContainerdMethods []string `config:"containerd_methods"`
	// DockerHost is the Docker Engine API address for docker-pause
	// ("" disables the method). An engine that does not answer is
	// logged at start and each freeze falls back.
	DockerHost string `config:"docker_host"`
	// ContainerdAddress is containerd's socket for containerd-pause
	// ("" disables the method).
	ContainerdAddress string `config:"containerd_address"`
	// EngineTimeout bounds an engine method's freeze or thaw (engine call
	// and verification), so a hung engine leaves verify_timeout for the
	// fallback. Must be below VerifyTimeout.
	EngineTimeout time.Duration `config:"engine_timeout"`
	// EnginePreFreeze: on a hybrid cgroup host, the engine methods freeze
	// the container's cgroup2 directory first (~0.1 ms), then have the
	// engine pause it (through the v1 freezer), then let cgroup2 go: the
	// container is contained at once and ends up paused by its engine
	// (see freezer.Engines.PreFreeze). Without it containment waits for the
	// engine (docker ~8 ms p50).
	EnginePreFreeze bool `config:"engine_pre_freeze"`
	// DockerRuncRoot is the runc state directory of dockerd's containers
	// (<exec-root>/runtime-runc/moby); "" disables it (docker containers
	// are then found by their cgroup /docker/<id>).
	DockerRuncRoot string `config:"docker_runc_root"`
	// DockerRoot is dockerd's data root, read for a docker container's
	// labels (containers/<id>/config.v2.json); "" disables it.
	DockerRoot string `config:"docker_root"`
	// ContainerdRuncRoot holds containerd's runc state, one directory per
	// namespace; "" disables it (containerd containers are then found by
	// their cgroup /<namespace>/<id>).
	ContainerdRuncRoot string `config:"containerd_runc_root"`
	// VerifyTimeout bounds a freeze or thaw from the write to its
	// verification.
	VerifyTimeout time.Duration `config:"verify_timeout"`

	// Durable names the JetStream consumer; "" means
	// "responder-<host token>".
	Durable string `config:"durable"`
	// OperatorKeys are the operators whose signed control requests
	// (release) this responder obeys: "name:<public nkey>" each. A request
	// not signed by one of them, stale or replayed is refused and counted
	// (contain_refused_total{stage="responder"}). A batch's self-declared
	// stage is no authority: only the analyzer's credentials may publish
	// on the alerts subjects (internal/auth).
	OperatorKeys []string `config:"operator_keys"`

	// Snapshot captures a forensic snapshot of each paused container
	// (processes, sockets, changed files) into the action's detail.
	Snapshot bool `config:"snapshot"`
	// SnapshotLimits bound the snapshot.
	SnapshotLimits forensics.Limits `config:"snapshot_limits"`
	// MaxDetailBytes bounds an action's detail JSON.
	MaxDetailBytes int `config:"max_detail_bytes"`
	// ProcRoot is the procfs mount read for snapshots.
	ProcRoot string `config:"proc_root"`

	// MaxPausesPerMinute is the circuit breaker: once this many containers
	// were paused in the last minute, further alerts are recorded as
	// SKIPPED (alert only) until the window frees up. 0 disables it.
	MaxPausesPerMinute int `config:"max_pauses_per_minute"`

	// ReleaseGrace: after an operator releases a container, its alerts are
	// recorded but not acted on for this long, so the aftermath of the
	// released incident (the thawed process finishing) does not re-freeze
	// it. 0 disables the grace.
	ReleaseGrace time.Duration `config:"release_grace"`

	// StateDir holds what the responder must not lose in a crash: the
	// intent recorded before each freeze, in <state_dir>/<host>/intents
	// (see docs/design/011-responder-crash-windows.md). StateDirNone
	// records none (a crash between a freeze and its action then leaves a
	// container frozen that the quarantine list does not show).
	StateDir string `config:"state_dir"`
	// MaxAlertAge: an alert older than this when it arrives (its wall
	// time to its arrival: a backlog after a restart or an outage) is
	// recorded SKIPPED and counted in
	// contain_responder_stale_alerts_total, never acted on. 0 acts on
	// alerts of any age.
	MaxAlertAge time.Duration `config:"max_alert_age"`

	// ProtectPids are processes whose cgroups are never frozen (nor any
	// cgroup holding them): the responder's own pid is always protected.
	ProtectPids []int `config:"protect_pids"`
	// ProtectCgroups are cgroup paths, relative to the mounts (e.g.
	// "/system.slice/nats-server.service"), never frozen nor any ancestor.
	ProtectCgroups []string `config:"protect_cgroups"`
	// ProtectAddrs are addresses of the services contain depends on (the
	// NATS server, ClickHouse: host:port or nats://host:port); the
	// processes of this host listening on their ports are protected like
	// ProtectPids. `contain run` fills it from nats.url and
	// store.clickhouse.addr.
	ProtectAddrs []string `config:"protect_addrs"`

	// Policy scopes thresholds and dry-run, and lists what is never paused.
	Policy Policy `config:"policy"`
}

// Policy says, per scope, how alerts are acted on.
type Policy struct {
	// Rules are tried in order; the first whose scope matches sets the
	// threshold and dry-run for the alert. Without a match the Config's
	// Threshold and DryRun apply.
	Rules []Rule `config:"rules"`
	// Allow lists scopes that are never paused (recorded as SKIPPED).
	Allow []Scope `config:"allow"`
	// NeverPauseLabels: a container carrying any of these label values is
	// never paused, for the keys listed in TrustedLabels only: labels come
	// from the runtime's state, which carries what an image author wrote
	// (docker copies an image's LABELs into the container's), so a label
	// exempts nothing unless the operator vouches for its key. Default
	// io.contain.critical=true, inert until trusted
	// (trusted_labels: [io.contain.critical]).
	NeverPauseLabels map[string]string `config:"never_pause_labels"`
	// TrustedLabels are the label keys the policy reads (NeverPauseLabels,
	// Scope.Labels); every other label is invisible to the policy. List a
	// key only when your deployment tooling, not the images, sets it
	// (e.g. io.contain.critical set by `docker run --label` on vetted
	// images).
	TrustedLabels []string `config:"trusted_labels"`
	// NeverPauseIDs are container id patterns never paused (contain's own
	// containers). The container holding the responder's own process is
	// never paused whatever this says.
	NeverPauseIDs []string `config:"never_pause_ids"`
}

// Rule sets the threshold and dry-run for the alerts its scope matches.
type Rule struct {
	Name      string  `config:"name"`      // names the rule in actions and logs
	Scope     Scope   `config:"scope"`     // which alerts it applies to
	Threshold float64 `config:"threshold"` // score at which a matching alert pauses
	DryRun    bool    `config:"dry_run"`   // record the decision without pausing
}

// Scope matches alerts. Empty fields match anything; patterns are
// path.Match globs; all set fields must match.
type Scope struct {
	Image         string            `config:"image"`          // alert's image_ref
	ImageDigest   string            `config:"image_digest"`   // alert's image_digest
	ContainerName string            `config:"container_name"` // alert's container_name
	ContainerID   string            `config:"container_id"`   // alert's container_id
	AlertRule     string            `config:"alert_rule"`     // Alert.rule
	ReasonCode    string            `config:"reason_code"`    // any of Alert.reasons[].code
	Labels        map[string]string `config:"labels"`         // runtime labels (OCI annotations)
}

// CriticalLabel marks a container that is never paused.
const CriticalLabel = "io.contain.critical"

// StateDirNone as responder.state_dir records no intents.
const StateDirNone = "none"

// RootDisabled as responder.freezer_root or responder.cgroup2_root turns
// that hierarchy off ("" detects it).
const RootDisabled = "none"

// DefaultConfig is a responder for this host's runc containers on a hybrid
// or unified cgroup layout, detected at start.
func DefaultConfig() Config {
	return Config{
		Threshold:          0.8,
		RuncRoot:           "/run/runc",
		CrunRoot:           "/run/crun",
		RuncBinary:         "runc",
		Methods:            freezer.MethodNames(),
		DockerMethods:      freezer.DefaultMethods(freezer.RuntimeDocker),
		ContainerdMethods:  freezer.DefaultMethods(freezer.RuntimeContainerd),
		DockerHost:         "unix:///run/docker.sock",
		ContainerdAddress:  "/run/containerd/containerd.sock",
		EngineTimeout:      500 * time.Millisecond,
		EnginePreFreeze:    true,
		DockerRuncRoot:     "/run/docker/runtime-runc/moby",
		DockerRoot:         "/var/lib/docker",
		ContainerdRuncRoot: "/run/containerd/runc",
		VerifyTimeout:      2 * time.Second,
		Snapshot:           true,
		SnapshotLimits:     forensics.DefaultLimits(),
		MaxDetailBytes:     64 << 10,
		ProcRoot:           "/proc",
		MaxPausesPerMinute: 10,
		ReleaseGrace:       2 * time.Minute,
		StateDir:           "/run/contain/responder",
		MaxAlertAge:        2 * time.Minute,
		Policy: Policy{
			NeverPauseLabels: map[string]string{CriticalLabel: "true"},
		},
	}
}

// Validate reports the first invalid key.
func (c Config) Validate() error {
	switch {
	case strings.TrimSpace(c.Host) == "":
		return errors.New("responder.host: must be set")
	case c.Threshold < 0 || c.Threshold > 1:
		return fmt.Errorf("responder.threshold: %v must be in [0, 1] (scores are; use dry_run to never pause)", c.Threshold)
	case c.FreezerRoot != "" && c.FreezerRoot != RootDisabled && !path.IsAbs(c.FreezerRoot):
		return fmt.Errorf("responder.freezer_root: %q must be an absolute path, %q (off) or empty (detect)", c.FreezerRoot, RootDisabled)
	case c.Cgroup2Root != "" && c.Cgroup2Root != RootDisabled && !path.IsAbs(c.Cgroup2Root):
		return fmt.Errorf("responder.cgroup2_root: %q must be an absolute path, %q (off) or empty (detect)", c.Cgroup2Root, RootDisabled)
	case c.FreezerRoot == RootDisabled && c.Cgroup2Root == RootDisabled && c.RuncRoot == "":
		return errors.New("responder.freezer_root, responder.cgroup2_root, responder.runc_root: at least one must be on")
	case len(c.Methods) == 0:
		return fmt.Errorf("responder.methods: must list at least one of %s", strings.Join(freezer.MethodNames(), ", "))
	case c.VerifyTimeout <= 0:
		return errors.New("responder.verify_timeout: must be > 0")
	case c.EngineTimeout <= 0 || c.EngineTimeout >= c.VerifyTimeout:
		return fmt.Errorf("responder.engine_timeout: %v must be > 0 and below responder.verify_timeout %v (the fallback needs the rest)", c.EngineTimeout, c.VerifyTimeout)
	case c.DockerHost != "" && !strings.Contains(c.DockerHost, "://"):
		return fmt.Errorf("responder.docker_host: %q is not an address like unix:///run/docker.sock or tcp://host:2375 (empty disables)", c.DockerHost)
	case c.ReleaseGrace < 0:
		return errors.New("responder.release_grace: must be >= 0")
	case c.MaxPausesPerMinute < 0:
		return errors.New("responder.max_pauses_per_minute: must be >= 0 (0 disables the circuit breaker)")
	case c.StateDir == "" || (c.StateDir != StateDirNone && !path.IsAbs(c.StateDir)):
		return fmt.Errorf("responder.state_dir: %q must be an absolute path or %q", c.StateDir, StateDirNone)
	case c.MaxAlertAge < 0:
		return errors.New("responder.max_alert_age: must be >= 0 (0 acts on alerts of any age)")
	case c.MaxDetailBytes < 1024:
		return errors.New("responder.max_detail_bytes: must be >= 1024")
	}
	if _, err := auth.ParseTrusted("responder.operator_keys", c.OperatorKeys); err != nil {
		return err
	}
	for _, l := range []struct {
		key     string
		runtime string
		names   []string
	}{
		{"responder.methods", "", c.Methods},
		{"responder.docker_methods", freezer.RuntimeDocker, c.DockerMethods},
		{"responder.containerd_methods", freezer.RuntimeContainerd, c.ContainerdMethods},
	} {
		for _, m := range l.names {
			if !slices.Contains(freezer.KnownMethods(), m) {
				return fmt.Errorf("%s: unknown method %q (known: %s)", l.key, m, strings.Join(freezer.KnownMethods(), ", "))
			}
			if rt := freezer.MethodRuntime(m); l.runtime != "" && rt != "" && rt != l.runtime {
				return fmt.Errorf("%s: %s acts on %s containers only, never on a %s one", l.key, m, rt, l.runtime)
			}
		}
	}
	if c.Snapshot {
		l := c.SnapshotLimits
		if l.MaxProcs <= 0 || l.MaxArgv <= 0 || l.MaxSockets <= 0 || l.MaxFiles <= 0 || l.MaxWalk <= 0 {
			return errors.New("responder.snapshot_limits: every limit must be > 0")
		}
	}
	for i, r := range c.Policy.Rules {
		if r.Threshold < 0 || r.Threshold > 1 {
			return fmt.Errorf("responder.policy.rules[%d].threshold: must be in [0, 1]", i)
		}
		if err := r.Scope.validate(); err != nil {
			return fmt.Errorf("responder.policy.rules[%d].scope: %w", i, err)
		}
	}
	for i, s := range c.Policy.Allow {
		if err := s.validate(); err != nil {
			return fmt.Errorf("responder.policy.allow[%d]: %w", i, err)
		}
	}
	if err := c.Policy.validateLabels(); err != nil {
		return err
	}
	for i, p := range c.ProtectPids {
		if p <= 0 {
			return fmt.Errorf("responder.protect_pids[%d]: %d is not a pid", i, p)
		}
	}
	for i, cg := range c.ProtectCgroups {
		if !strings.HasPrefix(cg, "/") || strings.Contains(cg, "..") {
			return fmt.Errorf("responder.protect_cgroups[%d]: %q must be an absolute cgroup path like /system.slice/nats.service", i, cg)
		}
	}
	for _, a := range c.ProtectAddrs {
		if _, err := addrPort(a); err != nil {
			return err
		}
	}
	for i, p := range c.Policy.NeverPauseIDs {
		if _, err := path.Match(p, ""); err != nil || p == "" {
			return fmt.Errorf("responder.policy.never_pause_ids[%d]: bad pattern %q", i, p)
		}
	}
	return nil
}

// validateLabels checks that the policy reads trusted label keys only.
func (p Policy) validateLabels() error {
	for i, k := range p.TrustedLabels {
		if strings.TrimSpace(k) == "" || len(k) > 253 {
			return fmt.Errorf("responder.policy.trusted_labels[%d]: %q is not a label key", i, k)
		}
	}
	untrusted := func(key string, labels map[string]string) error {
		for k := range labels {
			if !slices.Contains(p.TrustedLabels, k) {
				return fmt.Errorf("%s: label %q is not in responder.policy.trusted_labels (labels can come from an image; trust the key explicitly)", key, k)
			}
		}
		return nil
	}
	for i, r := range p.Rules {
		if err := untrusted(fmt.Sprintf("responder.policy.rules[%d].scope.labels", i), r.Scope.Labels); err != nil {
			return err
		}
	}
	for i, s := range p.Allow {
		if err := untrusted(fmt.Sprintf("responder.policy.allow[%d].labels", i), s.Labels); err != nil {
			return err
		}
	}
	return nil
}

// InertNeverPauseLabels lists the never_pause_labels keys that are not
// trusted, and so exempt nothing (logged at start).
func (p Policy) InertNeverPauseLabels() []string {
	var out []string
	for k := range p.NeverPauseLabels {
		if !slices.Contains(p.TrustedLabels, k) {
			out = append(out, k)
		}
	}
	slices.Sort(out)
	return out
}

// trusted keeps the labels whose keys the operator trusts.
func (p Policy) trusted(labels map[string]string) map[string]string {
	if len(labels) == 0 || len(p.TrustedLabels) == 0 {
		return nil
	}
	out := make(map[string]string, len(p.TrustedLabels))
	for _, k := range p.TrustedLabels {
		if v, ok := labels[k]; ok {
			out[k] = v
		}
	}
	return out
}

func (s Scope) validate() error {
	for _, p := range []string{s.Image, s.ImageDigest, s.ContainerName, s.ContainerID, s.AlertRule, s.ReasonCode} {
		if _, err := path.Match(p, ""); err != nil {
			return fmt.Errorf("bad pattern %q", p)
		}
	}
	return nil
}

// durable is the consumer name.
func (c Config) durable() string {
	if c.Durable != "" {
		return c.Durable
	}
	return "responder-" + containv1.SubjectToken(c.Host)
}

// restoreConsumer names the consumer that replays this host's actions at
// start.
func (c Config) restoreConsumer() string {
	return c.durable() + "-restore"
}

// resolveRoots fills empty cgroup roots from the host's layout (read only
// when one is empty) and turns RootDisabled into "" (off), the form the
// rest of the responder uses. It returns what to log: the layout, or that
// both roots are configured.
func (c *Config) resolveRoots(detect func() (cgroups.Layout, error)) (string, error) {
	how := "configured"
	if c.FreezerRoot == "" || c.Cgroup2Root == "" {
		l, err := detect()
		if err != nil {
			return "", fmt.Errorf("responder.freezer_root, responder.cgroup2_root: empty, and %w", err)
		}
		how = "detected " + l.String()
		if c.FreezerRoot == "" {
			c.FreezerRoot = l.FreezerV1
		}
		if c.Cgroup2Root == "" {
			c.Cgroup2Root = l.Cgroup2
		}
	}
	for _, r := range []*string{&c.FreezerRoot, &c.Cgroup2Root} {
		if *r == RootDisabled {
			*r = ""
		}
	}
	if c.FreezerRoot == "" && c.Cgroup2Root == "" && c.RuncRoot == "" {
		return "", fmt.Errorf("responder.freezer_root, responder.cgroup2_root, responder.runc_root: none is on (%s)", how)
	}
	return how, nil
}

func (c Config) roots() freezer.Roots {
	return freezer.Roots{
		FreezerV1:          c.FreezerRoot,
		Cgroup2:            c.Cgroup2Root,
		RuncRoot:           c.RuncRoot,
		CrunRoot:           c.CrunRoot,
		DockerRuncRoot:     c.DockerRuncRoot,
		DockerRoot:         c.DockerRoot,
		ContainerdRuncRoot: c.ContainerdRuncRoot,
	}
}

// methodsFor is the configured order for a runtime's containers.
func (c Config) methodsFor(runtime string) []string {
	switch {
	case runtime == freezer.RuntimeDocker && len(c.DockerMethods) > 0:
		return c.DockerMethods
	case runtime == freezer.RuntimeContainerd && len(c.ContainerdMethods) > 0:
		return c.ContainerdMethods
	}
	return c.Methods
}
