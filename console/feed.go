package console

import (
	"encoding/json"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/containsec/contain/internal/forensics"
	"github.com/containsec/contain/schemas/containv1"
)

// AlertView is an alert as the views show it.
type AlertView struct {
	ID            string
	Time          time.Time
	Host          string
	ContainerID   string
	ContainerName string
	Image         string
	Namespace     string
	Pod           string
	Score         float64
	Severity      string
	Reasons       []ReasonView
	Process       string
	IncidentID    string
}

// ReasonView is one reason of an alert.
type ReasonView struct {
	Code    string
	Message string
	Score   float64
	Attack  []string
}

// ActionView is a responder's action.
type ActionView struct {
	ID            string
	Time          time.Time
	Host          string
	ContainerID   string
	ContainerName string
	Image         string
	Type          string // pause, release
	Result        string // ok, failed, skipped, dry_run
	Actor         string
	Reason        string
	Method        string
	Score         float64
	AlertID       string
	Snapshot      *forensics.Snapshot
}

// Feed is what the console knows of alerts and actions: the newest
// MaxAlerts and MaxActions, indexed by container, with live subscribers.
// Its caller feeds it every alert and action event (Add), in stream order.
type Feed struct {
	mu          sync.Mutex
	maxAlerts   int
	maxActions  int
	alerts      []AlertView // oldest first
	actions     []ActionView
	hosts       map[string]bool
	subs        map[chan Item]struct{}
	slowDropped uint64
}

// Item is one live update for the Now view.
type Item struct {
	Alert  *AlertView
	Action *ActionView
}

// NewFeed returns an empty feed keeping the newest maxAlerts alerts and
// maxActions actions.
func NewFeed(maxAlerts, maxActions int) *Feed {
	return &Feed{maxAlerts: maxAlerts, maxActions: maxActions, hosts: map[string]bool{}, subs: map[chan Item]struct{}{}}
}

func idString(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	return containv1.FormatID(b)
}

var actionTypes = map[containv1.Action_Type]string{containv1.Action_TYPE_PAUSE: "pause", containv1.Action_TYPE_RELEASE: "release"}
var actionResults = map[containv1.Action_Result]string{
	containv1.Action_RESULT_OK: "ok", containv1.Action_RESULT_FAILED: "failed",
	containv1.Action_RESULT_SKIPPED: "skipped", containv1.Action_RESULT_DRY_RUN: "dry_run",
}

// actionDetail is the part of the responder's action detail the console
// shows: the forensic snapshot.
type actionDetail struct {
	Snapshot *forensics.Snapshot `json:"snapshot,omitempty"`
}

// Add records an alert or action event; other kinds are ignored.
func (f *Feed) Add(ev *containv1.Event) {
	var it Item
	switch {
	case ev.GetAlert() != nil:
		a := ev.GetAlert()
		v := AlertView{ID: idString(ev.GetId()), Time: time.Unix(0, ev.GetWallNs()).UTC(), Host: ev.GetHost(),
			ContainerID: ev.GetContainerId(), ContainerName: ev.GetContainerName(), Image: ev.GetImageRef(),
			Score: a.GetScore(), Severity: a.GetPriority(), IncidentID: idString(a.GetIncidentId())}
		if v.Image == "" {
			v.Image = ev.GetImageDigest()
		}
		for _, r := range a.GetReasons() {
			v.Reasons = append(v.Reasons, ReasonView{Code: r.GetCode(), Message: r.GetMessage(), Score: r.GetScore(), Attack: r.GetMitre()})
		}
		if t := a.GetTrigger(); t != nil {
			v.Process = processOf(t)
		}
		it.Alert = &v
	case ev.GetAction() != nil:
		a := ev.GetAction()
		v := ActionView{ID: idString(ev.GetId()), Time: time.Unix(0, ev.GetWallNs()).UTC(), Host: ev.GetHost(),
			ContainerID: ev.GetContainerId(), ContainerName: ev.GetContainerName(), Image: ev.GetImageRef(),
			Type: actionTypes[a.GetType()], Result: actionResults[a.GetResult()], Actor: a.GetActor(),
			Reason: a.GetReason(), Method: a.GetMethod(), Score: a.GetScore(), AlertID: idString(a.GetAlertId())}
		var d actionDetail
		if a.GetDetail() != "" && json.Unmarshal([]byte(a.GetDetail()), &d) == nil {
			v.Snapshot = d.Snapshot
		}
		it.Action = &v
	default:
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if it.Alert != nil {
		f.hosts[it.Alert.Host] = true
		f.alerts = appendBounded(f.alerts, *it.Alert, f.maxAlerts)
	} else {
		f.hosts[it.Action.Host] = true
		f.actions = appendBounded(f.actions, *it.Action, f.maxActions)
	}
	for ch := range f.subs {
		select {
		case ch <- it:
		default:
			f.slowDropped++ // a slow browser misses a live line, not the data: a reload shows it
		}
	}
}

func appendBounded[T any](s []T, v T, max int) []T {
	s = append(s, v)
	if len(s) > max {
		n := copy(s, s[len(s)-max:])
		s = s[:n]
	}
	return s
}

func processOf(ev *containv1.Event) string {
	if e := ev.GetExec(); e != nil {
		if len(e.GetArgv()) > 0 {
			return strings.Join(e.GetArgv(), " ")
		}
		return e.GetFilename()
	}
	type withProc interface{ GetProc() *containv1.Process }
	for _, b := range []withProc{ev.GetProcess(), ev.GetSyscall(), ev.GetFile(), ev.GetNetwork()} {
		if p := b.GetProc(); p != nil {
			return p.GetComm()
		}
	}
	return ""
}

// Subscribe returns a channel of live items and its cancel.
func (f *Feed) Subscribe() (<-chan Item, func()) {
	ch := make(chan Item, 64)
	f.mu.Lock()
	f.subs[ch] = struct{}{}
	f.mu.Unlock()
	return ch, func() {
		f.mu.Lock()
		delete(f.subs, ch)
		f.mu.Unlock()
	}
}

// Filter selects alerts.
type Filter struct {
	Host, Image, Namespace, Container string
	MinScore                          float64
}

func (fl Filter) match(a *AlertView) bool {
	return (fl.Host == "" || a.Host == fl.Host) &&
		(fl.Image == "" || strings.Contains(a.Image, fl.Image)) &&
		(fl.Namespace == "" || a.Namespace == fl.Namespace) &&
		(fl.Container == "" || a.ContainerID == fl.Container || a.ContainerName == fl.Container) &&
		a.Score >= fl.MinScore
}

// Alerts returns the page'th page (0 newest) of size alerts matching fl,
// newest first, and the number matching.
func (f *Feed) Alerts(fl Filter, page, size int) ([]AlertView, int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []AlertView
	total := 0
	skip := page * size
	for i := len(f.alerts) - 1; i >= 0; i-- {
		a := &f.alerts[i]
		if !fl.match(a) {
			continue
		}
		total++
		if total > skip && len(out) < size {
			out = append(out, *a)
		}
	}
	return out, total
}

// Actions returns the newest n actions, newest first, of one container
// when container is not empty.
func (f *Feed) Actions(container string, n int) []ActionView {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []ActionView
	for i := len(f.actions) - 1; i >= 0 && len(out) < n; i-- {
		if container == "" || f.actions[i].ContainerID == container {
			out = append(out, f.actions[i])
		}
	}
	return out
}

// Alert returns an alert by id.
func (f *Feed) Alert(id string) (AlertView, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for i := len(f.alerts) - 1; i >= 0; i-- {
		if f.alerts[i].ID == id {
			return f.alerts[i], true
		}
	}
	return AlertView{}, false
}

// LastPause returns the newest successful pause of a container.
func (f *Feed) LastPause(container string) (ActionView, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for i := len(f.actions) - 1; i >= 0; i-- {
		a := f.actions[i]
		if a.ContainerID == container && a.Type == "pause" && a.Result == "ok" {
			return a, true
		}
	}
	return ActionView{}, false
}

// Hosts lists the hosts seen, sorted.
func (f *Feed) Hosts() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]string, 0, len(f.hosts))
	for h := range f.hosts {
		out = append(out, h)
	}
	sort.Strings(out)
	return out
}

// SlowDropped counts live updates not sent to a browser that read too
// slowly (the data stays in the feed).
func (f *Feed) SlowDropped() uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.slowDropped
}
