package analyzer

import (
	"errors"
	"fmt"
	"time"

	"github.com/containsec/contain/internal/auth"
	"github.com/containsec/contain/schemas/containv1"
	"github.com/containsec/contain/schemas/kvdoc"
)

// Default names.
const (
	DefaultDurable         = "analyzer"
	DefaultBaselinesBucket = kvdoc.BaselinesBucket
	DefaultProfilesBucket  = kvdoc.ProfilesBucket
)

// Config configures an Analyzer. The cmd/ owner fills it from viper under
// the "analyzer" key; Validate names the offending key.
type Config struct {
	// LearningWindow is how long, in event time from the first event seen
	// for an image, its baseline learns before deviations are scored. A
	// baseline may converge earlier (see Convergence).
	LearningWindow time.Duration `config:"learning_window"`
	// Convergence ends learning early once the baseline stops seeing new
	// behaviour.
	Convergence ConvergenceConfig `config:"convergence"`
	// GroupWindow groups identical deviations (same container, reason code
	// and subject) in event time: the first raises an alert, the others are
	// counted into the next alert for that key.
	GroupWindow time.Duration `config:"group_window"`
	// IncidentWindow joins a container's alerts into one incident
	// (Alert.incident_id) while each comes within this span of event time
	// of the previous one; 0 makes every alert its own incident.
	IncidentWindow time.Duration `config:"incident_window"`
	// MinAlertScore: deviations scoring below it are counted, not alerted.
	MinAlertScore float64 `config:"min_alert_score"`
	// AbsorbBelow: while converged (not locked), a deviation scoring below
	// it is added to the baseline after it is reported.
	AbsorbBelow float64 `config:"absorb_below"`
	// MaxImages bounds the baselines held in memory; events of further
	// images are counted and ignored.
	MaxImages int `config:"max_images"`
	// MaxContainers bounds per-container state (process table, groups).
	MaxContainers int `config:"max_containers"`
	// GroupBy chooses which containers share a baseline: "digest" (the
	// image digest, the default), "repository" (image repository, any tag
	// or digest), "compose" (compose project + service labels) or
	// "kubernetes" (namespace + workload + container name). A container
	// whose labels do not name its group falls back to its image digest.
	GroupBy string `config:"group_by"`
	// MaxItems bounds each set of one baseline (executables, syscalls,
	// peers, ...); once full, further items are not learned (counted).
	MaxItems int `config:"max_items"`

	// ExecSessions is the policy for events of exec sessions (runc, docker,
	// podman, CRI exec, nsenter: Process.origin ORIGIN_EXEC_SESSION):
	// "behaviours" (default) raises one low-score exec.session alert per
	// session naming its command and scores the session's attack
	// behaviours (credential reads, escapes, persistence, reverse shells,
	// fileless or drifted executables...: SessionBehaviours) at their
	// class scores, but not what an operator routinely does (a shell,
	// tools, unseen executables or syscalls); "record" raises only the
	// exec.session alert; "alert" scores all its activity as deviations;
	// "container" treats it as the container's own; "ignore" only counts.
	// A session's activity is never learned (but under "container").
	ExecSessions string `config:"exec_sessions"`
	// ClassScores overrides default scores per reason code: entries
	// "code=score", e.g. "exec.pkg_manager=0.85" (see docs/detection.md).
	ClassScores []string `config:"class_scores"`
	// CombineWindow joins the deviations of one process tree (the
	// container's own processes, or one exec session) within this span of
	// event time: an alert's score becomes the noisy-OR of the distinct
	// reason codes in the window (each at its highest score), capped at
	// CombineCap, when that is higher than its own. 0 turns it off.
	CombineWindow time.Duration `config:"combine_window"`
	// CombineCap caps a combined score.
	CombineCap float64 `config:"combine_cap"`
	// SequenceThreshold is the mean surprise, in bits per syscall, over a
	// thread's last SequenceWindow syscalls above which sequence mode
	// raises syscall.sequence (docs/design/018-sequence-model.md).
	SequenceThreshold float64 `config:"sequence_threshold"`
	// SequenceWindow is that window, in syscalls (at most MaxSeqWindow).
	SequenceWindow int `config:"sequence_window"`

	// Durable is the JetStream durable consumer on CONTAIN_EVENTS.
	Durable string `config:"durable"`
	// FilterSubject narrows CONTAIN_EVENTS; empty takes every host. With
	// enricher.fleet_batches (the default) the enricher publishes every
	// host's events on contain.v1.events.@fleet[.p<n>]: a subject naming a
	// host matches none of them, so narrow by host only with
	// fleet_batches off.
	FilterSubject string `config:"filter_subject"`
	// Fetch is the number of batches per fetch, held decoded while they
	// are scored: 16 batches of 1,024 events are ~16 MB in memory
	// (docs/benchmarks.md, "Bounded memory").
	Fetch int `config:"fetch"`
	// AckWait is how long NATS waits for a fetched batch's ack before
	// redelivering it: after a NATS node dies, the batches whose fetch
	// reply or ack died with it wait this long (docs/scaling.md).
	AckWait time.Duration `config:"ack_wait"`
	// Host names this analyzer instance in the batches it publishes;
	// empty means the machine's host name.
	Host string `config:"host"`
	// BaselinesBucket is the NATS KV bucket holding baselines; empty turns
	// persistence off.
	BaselinesBucket string `config:"baselines_bucket"`
	// KVReplicas is the number of replicas of the baselines bucket in a
	// clustered JetStream (docs/scaling.md, "NATS cluster"); 0 takes
	// nats.streams.replicas.
	KVReplicas int `config:"kv_replicas"`
	// PersistInterval is how often changed baselines are written.
	PersistInterval time.Duration `config:"persist_interval"`
	// ProfilesBucket is the NATS KV bucket of declared profiles (written
	// by the enricher, keyed by image digest); empty turns seeding off.
	ProfilesBucket string `config:"profiles_bucket"`
	// OperatorKeys are the operators whose signed baseline operations
	// (lock, unlock, reset, import) are applied: "name:<public nkey>"
	// each. An unsigned, forged or replayed operation is refused and
	// counted (contain_refused_total{stage="analyzer"}).
	OperatorKeys []string `config:"operator_keys"`
	// Commits is the commit policy (commits.go).
	Commits CommitsConfig `config:"commits"`

	// Partitions splits CONTAIN_EVENTS by baseline group
	// (docs/design/022-analyzer-partitions.md): with more than 1, the
	// enricher publishes each event on its group's partition and each
	// analyzer instance consumes the partitions it holds a lease on, so
	// every group is scored by exactly one instance. Every enricher and
	// analyzer must use the same value. 1 (the default): one consumer,
	// no leases, as before.
	Partitions int `config:"partitions"`
	// InstanceID names this analyzer instance among those sharing the
	// partitions ([A-Za-z0-9_-], at most 64); empty means the host name
	// and a random suffix. Two running instances must never share one.
	InstanceID string `config:"instance_id"`
	// LeaseTTL is how long a partition's lease outlives its owner's last
	// renewal (renewed every quarter of it): an instance that dies has
	// its partitions taken over after at most about LeaseTTL.
	LeaseTTL time.Duration `config:"lease_ttl"`
}

// Exec-session policies (Config.ExecSessions).
const (
	ExecSessionsBehaviours = "behaviours"
	ExecSessionsRecord     = "record"
	ExecSessionsAlert      = "alert"
	ExecSessionsContainer  = "container"
	ExecSessionsIgnore     = "ignore"
)

// ConvergenceConfig decides when a baseline stops learning before the
// learning window ends: when at least MinObservations events were seen
// over at least MinDuration and the novelty rate (new behaviour per event,
// an exponential moving average over about WindowEvents events) is below
// NoveltyThreshold.
type ConvergenceConfig struct {
	// NoveltyThreshold in (0,1); 0 turns novelty convergence off.
	NoveltyThreshold float64       `config:"novelty_threshold"`
	WindowEvents     int           `config:"window_events"`
	MinObservations  uint64        `config:"min_observations"`
	MinDuration      time.Duration `config:"min_duration"`
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	return Config{
		LearningWindow: 10 * time.Minute,
		Convergence: ConvergenceConfig{
			NoveltyThreshold: 0.001,
			WindowEvents:     5000,
			MinObservations:  20000,
			MinDuration:      2 * time.Minute,
		},
		GroupWindow:       5 * time.Minute,
		IncidentWindow:    30 * time.Second,
		MinAlertScore:     0.3,
		AbsorbBelow:       0.45,
		MaxImages:         10000,
		MaxContainers:     65536,
		MaxItems:          4096,
		GroupBy:           GroupByDigest,
		ExecSessions:      ExecSessionsBehaviours,
		CombineWindow:     10 * time.Second,
		CombineCap:        0.95,
		SequenceThreshold: DefaultSeqThreshold,
		SequenceWindow:    DefaultSeqWindow,
		Durable:           DefaultDurable,
		Fetch:             16,
		AckWait:           30 * time.Second,
		BaselinesBucket:   DefaultBaselinesBucket,
		PersistInterval:   10 * time.Second,
		ProfilesBucket:    DefaultProfilesBucket,
		Partitions:        1,
		LeaseTTL:          10 * time.Second,
	}
}

// Validate reports the first invalid field, naming its config key.
func (c Config) Validate() error {
	if err := c.validateEngine(); err != nil {
		return err
	}
	if _, err := auth.ParseTrusted("analyzer.operator_keys", c.OperatorKeys); err != nil {
		return err
	}
	switch {
	case c.Durable == "":
		return errors.New("analyzer.durable: must be set")
	case c.Fetch <= 0:
		return errors.New("analyzer.fetch: must be > 0")
	case c.AckWait < 0:
		return errors.New("analyzer.ack_wait: must be >= 0 (0: 30s)")
	case c.KVReplicas < 0 || c.KVReplicas > 5:
		return fmt.Errorf("analyzer.kv_replicas: %d out of range 0..5", c.KVReplicas)
	case c.BaselinesBucket != "" && c.PersistInterval <= 0:
		return errors.New("analyzer.persist_interval: must be > 0 when analyzer.baselines_bucket is set")
	case c.Partitions < 0 || c.Partitions > containv1.MaxPartitions:
		return fmt.Errorf("analyzer.partitions: %d out of range 0..%d", c.Partitions, containv1.MaxPartitions)
	case c.InstanceID != "" && !validInstanceID(c.InstanceID):
		return fmt.Errorf("analyzer.instance_id: %q is not 1-64 of [A-Za-z0-9_-]", c.InstanceID)
	case c.Partitions > 1 && c.LeaseTTL < 200*time.Millisecond:
		return errors.New("analyzer.lease_ttl: must be >= 200ms when analyzer.partitions > 1")
	case c.Partitions > 1 && c.FilterSubject != "":
		return errors.New("analyzer.filter_subject: must be empty when analyzer.partitions > 1 (each partition has its own filter)")
	}
	return nil
}

// validInstanceID: 1-64 of [A-Za-z0-9_-], usable in a KV key and a
// consumer name.
func validInstanceID(s string) bool {
	if len(s) == 0 || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

func (c Config) validateEngine() error {
	switch {
	case c.LearningWindow <= 0:
		return errors.New("analyzer.learning_window: must be > 0")
	case c.Convergence.NoveltyThreshold < 0 || c.Convergence.NoveltyThreshold >= 1:
		return fmt.Errorf("analyzer.convergence.novelty_threshold: %v not in [0,1)", c.Convergence.NoveltyThreshold)
	case c.Convergence.NoveltyThreshold > 0 && c.Convergence.WindowEvents <= 0:
		return errors.New("analyzer.convergence.window_events: must be > 0")
	case c.Convergence.MinDuration < 0:
		return errors.New("analyzer.convergence.min_duration: must not be negative")
	case c.GroupWindow < 0:
		return errors.New("analyzer.group_window: must not be negative")
	case c.IncidentWindow < 0:
		return errors.New("analyzer.incident_window: must not be negative")
	case c.MinAlertScore < 0 || c.MinAlertScore > 1:
		return fmt.Errorf("analyzer.min_alert_score: %v not in [0,1]", c.MinAlertScore)
	case c.AbsorbBelow < 0 || c.AbsorbBelow > 1:
		return fmt.Errorf("analyzer.absorb_below: %v not in [0,1]", c.AbsorbBelow)
	case c.MaxImages <= 0:
		return errors.New("analyzer.max_images: must be > 0")
	case c.MaxContainers <= 0:
		return errors.New("analyzer.max_containers: must be > 0")
	case c.MaxItems <= 0:
		return errors.New("analyzer.max_items: must be > 0")
	case c.CombineWindow < 0:
		return errors.New("analyzer.combine_window: must not be negative")
	case c.CombineCap < 0 || c.CombineCap > 1:
		return fmt.Errorf("analyzer.combine_cap: %v not in [0,1]", c.CombineCap)
	case c.SequenceThreshold < 0:
		return errors.New("analyzer.sequence_threshold: must not be negative")
	case c.SequenceWindow < 0 || c.SequenceWindow > MaxSeqWindow:
		return fmt.Errorf("analyzer.sequence_window: %d not in [0,%d]", c.SequenceWindow, MaxSeqWindow)
	}
	switch c.ExecSessions {
	case ExecSessionsBehaviours, ExecSessionsRecord, ExecSessionsAlert, ExecSessionsContainer, ExecSessionsIgnore:
	case "":
	default:
		return fmt.Errorf("analyzer.exec_sessions: %q is not behaviours, record, alert, container or ignore", c.ExecSessions)
	}
	if _, err := parseClassScores(c.ClassScores); err != nil {
		return err
	}
	if err := c.Commits.Validate(); err != nil {
		return err
	}
	return validGroupBy(c.GroupBy)
}
