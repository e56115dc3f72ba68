package notify

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/containsec/contain/internal/falcojson"
)

// HeaderID carries the notification id on every HTTP request, so a
// receiver can drop a duplicate (delivery is at least once).
const HeaderID = "X-Contain-Id"

// httpOutput posts one JSON document per notification.
type httpOutput struct {
	url     string
	headers map[string]string
	client  *http.Client
	encode  func(*Notification) ([]byte, error)
}

func newWebhook(cfg OutputConfig) *httpOutput {
	enc := func(n *Notification) ([]byte, error) { return json.Marshal(n) }
	if cfg.Format == FormatSlack {
		enc = func(n *Notification) ([]byte, error) { return json.Marshal(SlackPayload(n)) }
	}
	return &httpOutput{url: cfg.URL, headers: cfg.Headers, client: &http.Client{}, encode: enc}
}

func newFalcosidekick(cfg OutputConfig) *httpOutput {
	return &httpOutput{url: cfg.URL, headers: cfg.Headers, client: &http.Client{},
		encode: func(n *Notification) ([]byte, error) { return falcojson.Marshal(FalcoEvent(n)) }}
}

func (h *httpOutput) Send(ctx context.Context, n *Notification) error {
	body, err := h.encode(n)
	if err != nil {
		return &PermanentError{fmt.Errorf("encoding: %w", err)}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, h.url, bytes.NewReader(body))
	if err != nil {
		return &PermanentError{err}
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set(HeaderID, n.ID)
	for k, v := range h.headers {
		req.Header.Set(k, v)
	}
	resp, err := h.client.Do(req)
	if err != nil {
		return fmt.Errorf("post: %w", err)
	}
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	_ = resp.Body.Close()
	if resp.StatusCode/100 == 2 {
		return nil
	}
	err = fmt.Errorf("post: %s: %s", resp.Status, strings.TrimSpace(string(msg)))
	if resp.StatusCode/100 == 4 && resp.StatusCode != http.StatusRequestTimeout && resp.StatusCode != http.StatusTooManyRequests {
		return &PermanentError{err}
	}
	return err
}

func (h *httpOutput) Close() error { h.client.CloseIdleConnections(); return nil }

// Slack is the Slack incoming-webhook message (also accepted by Mattermost
// and Rocket.Chat): a text with one attachment of fields.
type Slack struct {
	Text        string            `json:"text"`
	Attachments []SlackAttachment `json:"attachments,omitempty"`
}

// SlackAttachment is a coloured block of fields.
type SlackAttachment struct {
	Fallback string       `json:"fallback"`
	Color    string       `json:"color"`
	Title    string       `json:"title,omitempty"`
	Text     string       `json:"text,omitempty"`
	Fields   []SlackField `json:"fields,omitempty"`
	Footer   string       `json:"footer,omitempty"`
	Ts       int64        `json:"ts,omitempty"`
}

// SlackField is one titled value.
type SlackField struct {
	Title string `json:"title"`
	Value string `json:"value"`
	Short bool   `json:"short"`
}

// SlackPayload renders n as a Slack message.
func SlackPayload(n *Notification) *Slack {
	color := map[string]string{"Emergency": "#8b0000", "Alert": "#8b0000", "Critical": "#d00000", "Error": "#e36209",
		"Warning": "#f2c744", "Notice": "#2eb886", "Informational": "#439fe0", "Debug": "#aaaaaa"}[n.Priority]
	a := SlackAttachment{Fallback: n.Summary, Color: color, Title: n.Rule, Footer: "contain on " + n.Host, Ts: n.Time.Unix()}
	add := func(title, value string, short bool) {
		if value != "" {
			a.Fields = append(a.Fields, SlackField{Title: title, Value: value, Short: short})
		}
	}
	add("Kind", n.Kind, true)
	add("Priority", n.Priority, true)
	add("Score", fmt.Sprintf("%.2f", n.Score), true)
	add("Container", n.Container.label(), true)
	add("Image", n.Container.ImageRef, true)
	if n.Container.Pod != "" {
		add("Pod", n.Container.Namespace+"/"+n.Container.Pod, true)
	}
	var reasons []string
	for _, r := range n.Reasons {
		reasons = append(reasons, fmt.Sprintf("%s (%.2f): %s", r.Code, r.Score, r.Message))
	}
	add("Reasons", strings.Join(reasons, "\n"), false)
	add("ATT&CK", strings.Join(n.Mitre, ", "), true)
	if p := n.Process; p != nil {
		add("Process", strings.TrimSpace(fmt.Sprintf("pid %d uid %d %s %s", p.PID, p.UID, p.Comm, strings.Join(p.Argv, " "))), false)
	}
	if ac := n.Action; ac != nil {
		add("Action", fmt.Sprintf("%s %s by %s (%s)", ac.Type, ac.Result, ac.Actor, ac.Method), false)
		add("Decision", firstNonEmpty(ac.Decision, ac.Reason), false)
		add("Error", ac.Error, false)
	}
	if s := n.Snapshot; s != nil {
		add("Snapshot", fmt.Sprintf("%d processes, %d sockets, %d changed files\n%s", s.Processes, s.Sockets, s.ChangedFiles,
			strings.Join(s.Top, "\n")), false)
	}
	if n.ReleaseCommand != "" {
		add("Release", "`"+n.ReleaseCommand+"`", false)
	}
	return &Slack{Text: n.Summary, Attachments: []SlackAttachment{a}}
}

// FalcoEvent renders n as a Falco event: output_fields use Falco's field
// names where one exists (container.id, k8s.pod.name, proc.cmdline, ...)
// and contain.* for the rest.
func FalcoEvent(n *Notification) *falcojson.Event {
	f := map[string]any{
		"container.id":             n.Container.ID,
		"container.name":           n.Container.Name,
		"container.image":          n.Container.ImageRef,
		"container.image.digest":   n.Container.ImageDigest,
		"contain.kind":             n.Kind,
		"contain.score":            n.Score,
		"contain.alert_id":         n.AlertID,
		"contain.id":               n.ID,
		"contain.incident_id":      n.IncidentID,
		"contain.release_command":  n.ReleaseCommand,
		"k8s.pod.name":             n.Container.Pod,
		"k8s.ns.name":              n.Container.Namespace,
		"evt.time.iso8601":         n.Time.Format(time.RFC3339Nano),
		"contain.reasons":          reasonCodes(n.Reasons),
		"contain.action.actor":     "",
		"contain.action.decision":  "",
		"contain.snapshot.summary": "",
	}
	for k, v := range n.Container.Labels {
		f["container.label["+k+"]"] = v
	}
	if p := n.Process; p != nil {
		f["proc.pid"], f["proc.ppid"], f["user.uid"], f["proc.name"], f["proc.exepath"] = p.PID, p.PPID, p.UID, p.Comm, p.Exe
		f["proc.cmdline"] = strings.TrimSpace(p.Comm + " " + strings.Join(tail(p.Argv), " "))
	}
	if a := n.Action; a != nil {
		f["contain.action.actor"], f["contain.action.decision"], f["contain.action.method"] = a.Actor, firstNonEmpty(a.Decision, a.Reason), a.Method
	}
	if s := n.Snapshot; s != nil {
		f["contain.snapshot.summary"] = fmt.Sprintf("%d processes, %d sockets, %d changed files", s.Processes, s.Sockets, s.ChangedFiles)
	}
	for k, v := range f {
		if v == "" {
			delete(f, k)
		}
	}
	tags := append([]string{"contain", n.Kind}, n.Mitre...)
	return &falcojson.Event{UUID: n.ID, Output: n.Summary, Priority: n.Priority, Rule: n.Rule, Time: n.Time,
		OutputFields: f, Source: falcojson.Source, Tags: tags, Hostname: n.Host}
}

func reasonCodes(rs []Reason) string {
	var c []string
	for _, r := range rs {
		c = append(c, r.Code)
	}
	return strings.Join(c, ",")
}

func tail(s []string) []string {
	if len(s) == 0 {
		return nil
	}
	return s[1:]
}
