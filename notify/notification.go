package notify

import (
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/containsec/contain/schemas/containv1"
)

// Kinds of notification.
const (
	KindAlert      = "alert"
	KindQuarantine = "quarantine" // a pause, verified frozen
	KindRelease    = "release"    // a release, thawed
	KindRefused    = "refused"    // a pause refused: not a container
	KindFailed     = "failed"     // a pause or release that failed
	KindDryRun     = "dry_run"    // a pause decided in dry-run mode
)

// Notification is what every output renders: an alert or an action, with
// the evidence a responder needs. Its JSON is the generic webhook payload.
type Notification struct {
	// ID is the event id; an output delivers each id once per process.
	ID      string    `json:"id"`
	Kind    string    `json:"kind"`
	Time    time.Time `json:"time"`
	Host    string    `json:"host"`
	Summary string    `json:"summary"`
	// Priority is a Falco priority (Emergency .. Debug).
	Priority  string    `json:"priority"`
	Rule      string    `json:"rule,omitempty"`
	Score     float64   `json:"score"`
	Container Container `json:"container"`
	Reasons   []Reason  `json:"reasons,omitempty"`
	// Mitre are the ATT&CK technique ids of the reasons, sorted.
	Mitre      []string `json:"mitre,omitempty"`
	Process    *Process `json:"process,omitempty"`
	AlertID    string   `json:"alert_id,omitempty"`
	IncidentID string   `json:"incident_id,omitempty"`
	Action     *Action  `json:"action,omitempty"`
	// Snapshot summarises the forensic snapshot of a quarantine.
	Snapshot *SnapshotSummary `json:"snapshot,omitempty"`
	// ReleaseCommand is the exact command that thaws a quarantined
	// container.
	ReleaseCommand string `json:"release_command,omitempty"`
}

// Container identifies the container concerned.
type Container struct {
	ID          string            `json:"id"`
	Name        string            `json:"name,omitempty"`
	ImageRef    string            `json:"image_ref,omitempty"`
	ImageDigest string            `json:"image_digest,omitempty"`
	Pod         string            `json:"pod,omitempty"`
	Namespace   string            `json:"namespace,omitempty"`
	Labels      map[string]string `json:"labels,omitempty"`
}

// Reason is one deviation of an alert.
type Reason struct {
	Code    string   `json:"code"`
	Message string   `json:"message"`
	Score   float64  `json:"score"`
	Mitre   []string `json:"mitre,omitempty"`
}

// Process is the task that triggered an alert.
type Process struct {
	PID  uint32   `json:"pid"`
	PPID uint32   `json:"ppid,omitempty"`
	UID  uint32   `json:"uid"`
	Comm string   `json:"comm,omitempty"`
	Exe  string   `json:"exe,omitempty"`
	Argv []string `json:"argv,omitempty"`
}

// Action is what the responder did.
type Action struct {
	Type      string  `json:"type"`   // pause, release
	Result    string  `json:"result"` // ok, failed, skipped, dry_run
	Actor     string  `json:"actor"`
	Method    string  `json:"method,omitempty"`
	Reason    string  `json:"reason,omitempty"`
	Decision  string  `json:"decision,omitempty"`
	Error     string  `json:"error,omitempty"`
	LatencyMs float64 `json:"latency_ms,omitempty"`
}

// SnapshotSummary is the head of a forensic snapshot.
type SnapshotSummary struct {
	Processes    int      `json:"processes"`
	Sockets      int      `json:"sockets"`
	ChangedFiles int      `json:"changed_files"`
	Top          []string `json:"top,omitempty"`           // first processes: "pid comm argv"
	Listening    []string `json:"listening,omitempty"`     // sockets: "proto local state remote"
	FilesChanged []string `json:"files_changed,omitempty"` // first changed paths
	Truncated    []string `json:"truncated,omitempty"`
}

// summaryItems bounds each list of a SnapshotSummary.
const summaryItems = 5

// detail is the part of the responder's Action.detail JSON notify reads.
type detail struct {
	Decision string `json:"decision"`
	Error    string `json:"error"`
	Snapshot *struct {
		Processes []struct {
			Pid  int      `json:"pid"`
			Comm string   `json:"comm"`
			Argv []string `json:"argv"`
		} `json:"processes"`
		Sockets []struct {
			Proto  string `json:"proto"`
			Local  string `json:"local"`
			Remote string `json:"remote"`
			State  string `json:"state"`
		} `json:"sockets"`
		ChangedFiles []struct {
			Path string `json:"path"`
		} `json:"changed_files"`
		Truncated []string `json:"truncated"`
	} `json:"snapshot"`
}

// decodeDetail parses an action's detail; what does not parse is kept as
// the decision text.
func decodeDetail(s string) (decision, errText string, snap *SnapshotSummary) {
	if s == "" {
		return "", "", nil
	}
	var d detail
	if err := json.Unmarshal([]byte(s), &d); err != nil {
		return clip(s, 512), "", nil
	}
	if d.Snapshot != nil {
		snap = &SnapshotSummary{Processes: len(d.Snapshot.Processes), Sockets: len(d.Snapshot.Sockets),
			ChangedFiles: len(d.Snapshot.ChangedFiles), Truncated: d.Snapshot.Truncated}
		for _, p := range first(d.Snapshot.Processes) {
			snap.Top = append(snap.Top, clip(strings.TrimSpace(fmt.Sprintf("%d %s %s", p.Pid, p.Comm, strings.Join(p.Argv, " "))), 200))
		}
		for _, so := range first(d.Snapshot.Sockets) {
			snap.Listening = append(snap.Listening, clip(strings.TrimSpace(fmt.Sprintf("%s %s %s %s", so.Proto, so.Local, so.State, so.Remote)), 200))
		}
		for _, f := range first(d.Snapshot.ChangedFiles) {
			snap.FilesChanged = append(snap.FilesChanged, clip(f.Path, 200))
		}
	}
	return d.Decision, d.Error, snap
}

func first[T any](s []T) []T { return s[:min(len(s), summaryItems)] }

// clip cuts s to at most n bytes at a rune boundary.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && n < len(s) && s[n]&0xc0 == 0x80 {
		n--
	}
	return s[:n] + "…"
}

// FromEvent makes the notification of an alert or action event; ok is
// false for other kinds and for skipped actions (nothing happened).
func FromEvent(ev *containv1.Event) (n *Notification, ok bool) {
	n = &Notification{
		ID:   containv1.FormatID(ev.GetId()),
		Time: time.Unix(0, ev.GetWallNs()).UTC(),
		Host: ev.GetHost(),
		Container: Container{ID: ev.GetContainerId(), Name: ev.GetContainerName(),
			ImageRef: ev.GetImageRef(), ImageDigest: ev.GetImageDigest()},
	}
	switch {
	case ev.GetAlert() != nil:
		fillAlert(n, ev.GetAlert())
		return n, true
	case ev.GetAction() != nil:
		return n, fillAction(n, ev.GetAction())
	}
	return nil, false
}

func fillAlert(n *Notification, a *containv1.Alert) {
	n.Kind = KindAlert
	n.AlertID = n.ID
	n.Container.Pod, n.Container.Namespace, n.Container.Labels = a.GetPod(), a.GetNamespace(), a.GetLabels()
	n.Rule = a.GetRule()
	n.Score = a.GetScore()
	n.Priority = priority(a.GetPriority(), a.GetScore())
	if id := a.GetIncidentId(); len(id) > 0 {
		n.IncidentID = containv1.FormatID(id)
	}
	mitre := map[string]bool{}
	for _, r := range a.GetReasons() {
		n.Reasons = append(n.Reasons, Reason{Code: r.GetCode(), Message: r.GetMessage(), Score: r.GetScore(), Mitre: r.GetMitre()})
		for _, m := range r.GetMitre() {
			mitre[m] = true
		}
	}
	for m := range mitre {
		n.Mitre = append(n.Mitre, m)
	}
	sort.Strings(n.Mitre)
	n.Process = process(a.GetTrigger())
	var codes []string
	for _, r := range n.Reasons {
		codes = append(codes, r.Code)
	}
	n.Summary = fmt.Sprintf("contain alert %s (score %.2f) in container %s on %s: %s",
		orDash(n.Rule), n.Score, n.Container.label(), n.Host, strings.Join(codes, ", "))
}

func fillAction(n *Notification, a *containv1.Action) bool {
	typ := strings.ToLower(strings.TrimPrefix(a.GetType().String(), "TYPE_"))
	res := strings.ToLower(strings.TrimPrefix(a.GetResult().String(), "RESULT_"))
	decision, errText, snap := decodeDetail(a.GetDetail())
	n.Action = &Action{Type: typ, Result: res, Actor: a.GetActor(), Method: a.GetMethod(), Reason: a.GetReason(),
		Decision: decision, Error: errText, LatencyMs: float64(a.GetLatencyNs()) / 1e6}
	n.Score = a.GetScore()
	if id := a.GetAlertId(); len(id) > 0 {
		n.AlertID = containv1.FormatID(id)
	}
	n.Rule = "contain " + typ
	switch {
	case a.GetResult() == containv1.Action_RESULT_SKIPPED:
		return false
	case a.GetResult() == containv1.Action_RESULT_DRY_RUN:
		n.Kind, n.Priority = KindDryRun, "Warning"
	case a.GetResult() == containv1.Action_RESULT_FAILED && strings.Contains(decision+" "+errText+" "+a.GetReason(), "refused"):
		n.Kind, n.Priority = KindRefused, "Error"
	case a.GetResult() == containv1.Action_RESULT_FAILED:
		n.Kind, n.Priority = KindFailed, "Error"
	case a.GetType() == containv1.Action_TYPE_PAUSE:
		n.Kind, n.Priority, n.Snapshot = KindQuarantine, "Critical", snap
		n.ReleaseCommand = fmt.Sprintf("contain release %s --reason 'REASON'", n.Container.ID)
	case a.GetType() == containv1.Action_TYPE_RELEASE:
		n.Kind, n.Priority = KindRelease, "Notice"
	default:
		return false
	}
	n.Summary = fmt.Sprintf("contain %s: container %s on %s (%s, by %s)", n.Kind, n.Container.label(), n.Host,
		orDash(firstNonEmpty(decision, a.GetReason())), orDash(a.GetActor()))
	return true
}

// priority maps an alert's priority, or its score when it has none.
func priority(p string, score float64) string {
	switch strings.ToLower(p) {
	case "emergency":
		return "Emergency"
	case "alert":
		return "Alert"
	case "critical":
		return "Critical"
	case "error":
		return "Error"
	case "warning", "warn":
		return "Warning"
	case "notice":
		return "Notice"
	case "informational", "info":
		return "Informational"
	case "debug":
		return "Debug"
	}
	switch {
	case score >= 0.9:
		return "Critical"
	case score >= 0.7:
		return "Error"
	case score >= 0.5:
		return "Warning"
	}
	return "Notice"
}

func process(ev *containv1.Event) *Process {
	var p *containv1.Process
	var exe string
	var argv []string
	switch {
	case ev.GetExec() != nil:
		p, exe, argv = ev.GetExec().GetProc(), firstNonEmpty(ev.GetExec().GetExe(), ev.GetExec().GetFilename()), ev.GetExec().GetArgv()
	case ev.GetSyscall() != nil:
		p = ev.GetSyscall().GetProc()
	case ev.GetNetwork() != nil:
		p = ev.GetNetwork().GetProc()
	case ev.GetFile() != nil:
		p = ev.GetFile().GetProc()
	case ev.GetProcess() != nil:
		p = ev.GetProcess().GetProc()
	}
	if p == nil {
		return nil
	}
	return &Process{PID: p.GetTgid(), PPID: p.GetPpid(), UID: p.GetUid(), Comm: p.GetComm(), Exe: exe, Argv: argv}
}

// enrich copies an alert's evidence into the notification of the action
// it caused.
func (n *Notification) enrich(alert *Notification) {
	if alert == nil {
		return
	}
	n.Reasons, n.Mitre, n.Process, n.IncidentID = alert.Reasons, alert.Mitre, alert.Process, alert.IncidentID
	if n.Container.Pod == "" {
		n.Container.Pod, n.Container.Namespace, n.Container.Labels = alert.Container.Pod, alert.Container.Namespace, alert.Container.Labels
	}
	if n.Kind == KindQuarantine || n.Kind == KindDryRun {
		n.Rule = firstNonEmpty(alert.Rule, n.Rule)
	}
}

func (c Container) label() string {
	id := c.ID
	if len(id) > 12 {
		id = id[:12]
	}
	if c.Name != "" {
		return c.Name + " (" + orDash(id) + ")"
	}
	return orDash(id)
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func firstNonEmpty(s ...string) string {
	for _, x := range s {
		if x != "" {
			return x
		}
	}
	return ""
}
