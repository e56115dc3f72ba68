package responder

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sys/unix"

	"github.com/containsec/contain/internal/auth"
	"github.com/containsec/contain/internal/bus"
	"github.com/containsec/contain/internal/cgroups"
	"github.com/containsec/contain/internal/engines"
	"github.com/containsec/contain/internal/forensics"
	"github.com/containsec/contain/internal/freezer"
	"github.com/containsec/contain/internal/logfields"
	"github.com/containsec/contain/internal/metrics"
	"github.com/containsec/contain/schemas/containv1"
)

// Quarantine is a container this responder paused and has not released.
type Quarantine struct {
	ContainerID   string    `json:"container_id"`
	ContainerName string    `json:"container_name,omitempty"`
	ImageRef      string    `json:"image_ref,omitempty"`
	ImageDigest   string    `json:"image_digest,omitempty"`
	Method        string    `json:"method"`
	Cgroup        string    `json:"cgroup,omitempty"`
	Since         time.Time `json:"since"`
	AlertID       string    `json:"alert_id"`
	ActionID      string    `json:"action_id"`
	Score         float64   `json:"score"`
	Reason        string    `json:"reason"`
	Actor         string    `json:"actor"`
	// State is read when listed: "frozen", "thawed" (thawed behind the
	// responder's back) or "gone".
	State string `json:"state,omitempty"`

	target *freezer.Target
	method freezer.Method
}

// Responder consumes alerts for its host and pauses containers.
type Responder struct {
	cfg Config
	nc  *nats.Conn
	js  jetstream.JetStream
	m   *metrics.Metrics
	log *slog.Logger
	// named holds one of each freeze method, with the engines' clients.
	named      map[string]freezer.Method
	docker     *engines.Docker     // nil: no docker_host
	containerd *engines.Containerd // nil: no containerd_address
	ids        *containv1.IDGen
	actor      string
	selfPid    int
	// protect is what is never frozen besides host units; refusedTotal
	// counts refusals by reason.
	protect      *protector
	refusedTotal *prometheus.CounterVec
	// staleTotal counts alerts older than MaxAlertAge at arrival.
	staleTotal prometheus.Counter
	// journal records intended freezes (Config.StateDir).
	journal *journal
	// proofs caches what freezer.Prove established, per container id.
	proofs proofCache

	pubMu sync.Mutex
	prod  *bus.Producer
	// handled are the alerts already answered by an action (handled.go).
	handled *handledSet

	// actMu serialises pausing and releasing, so a release and a pause of
	// the same container never interleave.
	actMu       sync.Mutex
	quarantined map[string]*Quarantine
	// released remembers operator releases for ReleaseGrace.
	released    map[string]OperatorRelease
	pauses      []time.Time // circuit breaker window
	breakerOpen bool

	// now is the clock; tests may replace it.
	now func() time.Time

	// operators verifies signed control requests.
	operators *auth.Verifier
	// layout says where the cgroup roots came from, logged at start.
	layout string
	// refusedLogged: one log line per refusal reason.
	refusedLogged sync.Map
}

// New makes a Responder; call Run to start it. log is used as given (the
// caller scopes it once with logfields.Stage); the responder adds its host.
func New(cfg Config, nc *nats.Conn, js jetstream.JetStream, m *metrics.Metrics, log *slog.Logger) (*Responder, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if nc == nil || js == nil || m == nil || log == nil {
		return nil, errors.New("responder: nats connection, jetstream, metrics and logger are required")
	}
	layout, err := cfg.resolveRoots(cgroups.Detect)
	if err != nil {
		return nil, err
	}
	eng := freezer.Engines{Timeout: cfg.EngineTimeout, PreFreeze: cfg.EnginePreFreeze}
	if cfg.DockerHost != "" {
		d, err := engines.NewDocker(cfg.DockerHost, cfg.EngineTimeout)
		if err != nil {
			return nil, fmt.Errorf("responder.docker_host: %w", err)
		}
		eng.Docker = d
	}
	if cfg.ContainerdAddress != "" {
		c, err := engines.NewContainerd(cfg.ContainerdAddress, cfg.EngineTimeout)
		if err != nil {
			if eng.Docker != nil {
				_ = eng.Docker.Close()
			}
			return nil, fmt.Errorf("responder.containerd_address: %w", err)
		}
		eng.Containerd = c
	}
	operators, err := auth.ParseTrusted("responder.operator_keys", cfg.OperatorKeys)
	if err != nil {
		return nil, err
	}
	all, err := freezer.NewMethodsWith(freezer.KnownMethods(), cfg.roots(), cfg.RuncBinary, eng)
	if err != nil {
		return nil, fmt.Errorf("responder.methods: %w", err)
	}
	protect, err := newProtector(cfg, os.Getpid())
	if err != nil {
		return nil, err
	}
	jn, err := openJournal(cfg.StateDir, cfg.Host)
	if err != nil {
		return nil, err
	}
	named := make(map[string]freezer.Method, len(all))
	for _, fm := range all {
		named[fm.Name()] = fm
	}
	return &Responder{
		cfg: cfg,
		nc:  nc,
		js:  js,
		m:   m,
		// The caller scopes the logger to the stage (cmd/contain does).
		log:          log.With(logfields.Host, cfg.Host),
		named:        named,
		docker:       eng.Docker,
		containerd:   eng.Containerd,
		ids:          containv1.NewIDGen(),
		actor:        "responder@" + cfg.Host,
		selfPid:      os.Getpid(),
		protect:      protect,
		refusedTotal: refusedCounter(m.Registry),
		staleTotal:   staleCounter(m.Registry),
		journal:      jn,
		prod:         bus.NewProducer(cfg.Host, metrics.StageResponder),
		handled:      newHandledSet(maxHandled),
		quarantined:  map[string]*Quarantine{},
		released:     map[string]OperatorRelease{},
		now:          time.Now,
		operators:    auth.NewVerifier(operators, 0),
		layout:       layout,
	}, nil
}

// Run serves the control subjects and consumes alerts until ctx ends.
func (r *Responder) Run(ctx context.Context) error {
	defer r.closeEngines()
	r.logMethods(ctx)
	pctx, pcancel := context.WithCancel(ctx)
	defer pcancel()
	go r.protect.keepFresh(pctx, func(err error) {
		r.m.Errors.WithLabelValues(metrics.StageResponder, "protect_listeners").Inc()
		r.log.Error("finding the protected services' listeners", logfields.Err, err)
	})
	if inert := r.cfg.Policy.InertNeverPauseLabels(); len(inert) > 0 {
		r.log.Warn("never_pause_labels inert: their keys are not in policy.trusted_labels (an image can set labels)", logfields.Keys, strings.Join(inert, ","))
	}
	if len(r.protect.ports) > 0 {
		r.log.Info("protected from freezing", logfields.Ports, r.protect.ports, logfields.ListenerPIDs, r.protect.protected().Pids)
	}
	n, err := r.restore(ctx)
	if err != nil {
		// Not fatal: acting on new alerts matters more than the list.
		r.m.Errors.WithLabelValues(metrics.StageResponder, "restore").Inc()
		r.log.Error("quarantine list not restored", logfields.Err, err)
	}
	if completed, intents := r.recoverIntents(ctx); len(completed) > 0 || len(intents) > 0 {
		if len(completed) == 0 {
			r.journal.done(intents, r.log)
		} else if err := r.publish(ctx, completed); err != nil {
			r.log.Error("recording pauses completed from intents", logfields.Err, err)
		} else {
			r.journal.done(intents, r.log)
		}
	}
	if recovered := r.recoverPreFrozen(ctx); len(recovered) > 0 {
		if err := r.publish(ctx, recovered); err != nil {
			r.log.Error("recording completed pauses", logfields.Err, err)
		}
	}
	subs, err := r.serveControl(ctx)
	if err != nil {
		return err
	}
	defer func() {
		for _, s := range subs {
			_ = s.Unsubscribe()
		}
	}()
	r.log.Info("responder started", logfields.Subject, containv1.AlertsSubject(r.cfg.Host), logfields.Threshold, r.cfg.Threshold,
		logfields.DryRun, r.cfg.DryRun, logfields.Methods, strings.Join(r.cfg.Methods, ","), logfields.RestoredQuarantines, n)
	return bus.Consume(ctx, r.js, bus.ConsumerConfig{
		Stream:        containv1.StreamAlerts,
		Durable:       r.cfg.durable(),
		FilterSubject: containv1.AlertsSubject(r.cfg.Host),
		Stage:         metrics.StageResponder,
		// One message per fetch: a fetch returns when it is full or its
		// wait ends, so a larger fetch would hold a lone alert back.
		Fetch:     1,
		FetchWait: time.Second,
		// An alert is never held back at the memory bound: it is small,
		// and its delay is a container left running.
		NoMemoryWait: true,
	}, r.handle, r.m, r.log)
}

// handle acts on every alert of the batches and publishes the actions;
// the intents recorded before freezing are removed once published. An
// alert already answered (same id) is counted and left alone: responses
// are idempotent per alert id.
func (r *Responder) handle(ctx context.Context, batches []*containv1.Batch) error {
	recv := r.now()
	var actions []*containv1.Event
	var intents []string
	inBatch := map[string]bool{}
	for _, b := range batches {
		for _, ev := range b.Events {
			if ev.GetKind() != containv1.Kind_KIND_ALERT || ev.GetAlert() == nil {
				r.m.Dropped.WithLabelValues(metrics.StageResponder, "not_alert").Inc()
				continue
			}
			if len(ev.Id) > 0 && (inBatch[string(ev.Id)] || r.handled.has(ev.Id)) {
				r.m.Dropped.WithLabelValues(metrics.StageResponder, reasonDuplicateAlert).Inc()
				r.log.Debug("alert already answered; not decided again", logfields.AlertID, containv1.FormatID(ev.Id), logfields.ContainerID, ev.ContainerId)
				continue
			}
			inBatch[string(ev.Id)] = true
			act, intent := r.onAlert(ctx, ev, recv)
			actions = append(actions, act)
			if intent != "" {
				intents = append(intents, intent)
			}
		}
	}
	if len(actions) == 0 {
		return nil
	}
	crashAt(crashBeforePublish)
	if err := r.publish(ctx, actions); err != nil {
		return err
	}
	r.journal.done(intents, r.log)
	return nil
}

func (r *Responder) publish(ctx context.Context, actions []*containv1.Event) error {
	r.pubMu.Lock()
	batch := r.prod.Batch(actions)
	r.pubMu.Unlock()
	if err := bus.Publish(ctx, r.js, containv1.ActionsSubject(r.cfg.Host), batch); err != nil {
		r.m.Errors.WithLabelValues(metrics.StageResponder, "publish").Inc()
		return fmt.Errorf("publishing %d actions: %w", len(actions), err)
	}
	r.handled.addActions(actions)
	r.m.EventsOut.WithLabelValues(metrics.StageResponder).Add(float64(len(actions)))
	return nil
}

// Detail is the JSON carried in Action.detail.
type Detail struct {
	// Decision says in words why the action has its result.
	Decision string `json:"decision"`
	Error    string `json:"error,omitempty"`
	// PolicyRule is the rule that set the threshold ("" = defaults).
	PolicyRule string  `json:"policy_rule,omitempty"`
	Threshold  float64 `json:"threshold"`
	Cgroup     string  `json:"cgroup,omitempty"`
	// FreezeUs is from the freeze write to its verification (the
	// container contained).
	FreezeUs int64 `json:"freeze_us,omitempty"`
	// MethodDoneUs is from the freeze start to the method's return: after
	// FreezeUs when an engine method pre-froze the cgroup and then had the
	// engine pause it (the engine's view agreeing).
	MethodDoneUs int64 `json:"method_done_us,omitempty"`
	// AlertToFrozenUs is from the alert's own wall time (when the analyzer
	// made it) to the verified freeze; latency_ns minus this is the
	// detection part.
	AlertToFrozenUs int64 `json:"alert_to_frozen_us,omitempty"`
	// ReceivedToFreezeUs is from the alert's batch being handed to the
	// responder to the freeze's first write: the decision, the proof and
	// the intent.
	ReceivedToFreezeUs int64 `json:"received_to_freeze_us,omitempty"`
	// ReceivedToFrozenUs is the responder's own share: from the alert's
	// batch being handed to it to the verified freeze.
	ReceivedToFrozenUs int64 `json:"received_to_frozen_us,omitempty"`
	// Fallback lists the methods tried before the one that acted, with
	// their errors (e.g. docker-pause on an unreachable engine).
	Fallback []string            `json:"fallback,omitempty"`
	Snapshot *forensics.Snapshot `json:"snapshot,omitempty"`
}

// alertReason joins the alert's reasons.
func alertReason(a *containv1.Alert) string {
	var parts []string
	for _, rs := range a.GetReasons() {
		switch {
		case rs.GetCode() != "" && rs.GetMessage() != "":
			parts = append(parts, rs.GetCode()+": "+rs.GetMessage())
		case rs.GetCode() != "":
			parts = append(parts, rs.GetCode())
		case rs.GetMessage() != "":
			parts = append(parts, rs.GetMessage())
		}
	}
	if len(parts) == 0 && a.GetRule() != "" {
		return a.GetRule()
	}
	return strings.Join(parts, "; ")
}

// triggerWall is the wall time the latency is measured from.
func triggerWall(ev *containv1.Event) int64 {
	if w := ev.GetAlert().GetTrigger().GetWallNs(); w > 0 {
		return w
	}
	return ev.GetWallNs()
}

// newAction makes the action event answering alert ev (nil for a release).
func (r *Responder) newAction(ev *containv1.Event, typ containv1.Action_Type) (*containv1.Event, *containv1.Action) {
	now := r.now()
	act := &containv1.Action{Type: typ, Actor: r.actor}
	out := &containv1.Event{
		Id:            r.ids.Next(),
		Host:          r.cfg.Host,
		WallNs:        now.UnixNano(),
		MonoNs:        monoNow(),
		Kind:          containv1.Kind_KIND_ACTION,
		SchemaVersion: containv1.SchemaVersion,
		Body:          &containv1.Event_Action{Action: act},
	}
	if ev != nil {
		out.ContainerId = ev.ContainerId
		out.ContainerName = ev.ContainerName
		out.ImageRef = ev.ImageRef
		out.ImageDigest = ev.ImageDigest
		out.CgroupId = ev.CgroupId
		out.ProfileRef = ev.ProfileRef
		act.AlertId = ev.Id
		act.Score = ev.GetAlert().GetScore()
		act.Reason = alertReason(ev.GetAlert())
	}
	return out, act
}

// finish sets the result and detail, counts and logs the decision.
func (r *Responder) finish(out *containv1.Event, act *containv1.Action, res containv1.Action_Result, d *Detail) *containv1.Event {
	act.Result = res
	act.Detail = r.encodeDetail(d)
	r.m.Actions.WithLabelValues(strings.TrimPrefix(act.Type.String(), "TYPE_"), strings.TrimPrefix(res.String(), "RESULT_")).Inc()
	r.m.Quarantined.Set(float64(len(r.quarantined)))
	if res == containv1.Action_RESULT_OK && act.Type == containv1.Action_TYPE_PAUSE {
		if act.LatencyNs > 0 {
			r.m.ExecToFrozen.Observe(float64(act.LatencyNs) / 1e9)
		}
		if d.AlertToFrozenUs > 0 {
			r.m.AlertToFrozen.Observe(float64(d.AlertToFrozenUs) / 1e6)
		}
	}
	level := slog.LevelInfo
	if res == containv1.Action_RESULT_FAILED {
		level = slog.LevelWarn
	}
	r.log.Log(context.Background(), level, "action", logfields.Type, act.Type.String(), logfields.Result, res.String(), logfields.ContainerID, out.ContainerId,
		logfields.Decision, d.Decision, logfields.Method, act.Method, logfields.Score, act.Score, logfields.LatencyMs, float64(act.LatencyNs)/1e6, logfields.Err, d.Error)
	return out
}

// encodeDetail marshals d within MaxDetailBytes, shedding the snapshot's
// bulkiest parts first.
func (r *Responder) encodeDetail(d *Detail) string {
	b, err := json.Marshal(d)
	if err == nil && len(b) <= r.cfg.MaxDetailBytes {
		return string(b)
	}
	if s := d.Snapshot; s != nil {
		for _, shed := range []func(){
			func() { s.ChangedFiles, s.Truncated = nil, append(s.Truncated, "files (detail size)") },
			func() { s.Sockets, s.Truncated = nil, append(s.Truncated, "sockets (detail size)") },
			func() { s.Processes, s.Truncated = nil, append(s.Truncated, "processes (detail size)") },
		} {
			shed()
			if b, err = json.Marshal(d); err == nil && len(b) <= r.cfg.MaxDetailBytes {
				return string(b)
			}
		}
	}
	d.Snapshot = nil
	d.Decision = truncate(d.Decision, 512)
	d.Error = truncate(d.Error, 512)
	b, _ = json.Marshal(d)
	return string(b)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	s, _, _ = containv1.SafeString([]byte(s[:n]), 0)
	return s + "…"
}

func firstNonEmpty(s ...string) string {
	for _, v := range s {
		if v != "" {
			return v
		}
	}
	return ""
}

// monoNow is CLOCK_MONOTONIC in ns, as the schema's mono_ns.
func monoNow() uint64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return 0
	}
	return uint64(ts.Nano())
}
