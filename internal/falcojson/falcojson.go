// Package falcojson is Falco's JSON output format (json_output: true), the
// document Falcosidekick accepts on POST /: so every output Falcosidekick
// forwards to (Slack, Loki, Elasticsearch, PagerDuty, ...) works with
// contain's alerts and actions.
package falcojson

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Falco priorities, most severe first, as Falco writes them.
var Priorities = []string{"Emergency", "Alert", "Critical", "Error", "Warning", "Notice", "Informational", "Debug"}

// Source is the source field of every event contain writes: Falcosidekick
// passes it through; Falco's own are "syscall", "k8s_audit", ...
const Source = "contain"

// Event is one Falco event.
type Event struct {
	UUID         string         `json:"uuid,omitempty"`
	Output       string         `json:"output"`
	Priority     string         `json:"priority"`
	Rule         string         `json:"rule"`
	Time         time.Time      `json:"time"`
	OutputFields map[string]any `json:"output_fields"`
	Source       string         `json:"source"`
	Tags         []string       `json:"tags"`
	Hostname     string         `json:"hostname"`
}

// Priority returns Falco's spelling of p (any case; "info" and "warn"
// are accepted), or "" when p is no Falco priority.
func Priority(p string) string {
	switch strings.ToLower(p) {
	case "info":
		return "Informational"
	case "warn":
		return "Warning"
	}
	for _, q := range Priorities {
		if strings.EqualFold(p, q) {
			return q
		}
	}
	return ""
}

// Marshal encodes e, checking the fields Falcosidekick requires.
func Marshal(e *Event) ([]byte, error) {
	if err := e.Validate(); err != nil {
		return nil, err
	}
	if e.OutputFields == nil {
		e.OutputFields = map[string]any{}
	}
	if e.Tags == nil {
		e.Tags = []string{}
	}
	return json.Marshal(e)
}

// Validate reports the first field Falcosidekick would reject or misread.
func (e *Event) Validate() error {
	switch {
	case e.Output == "":
		return errors.New("falco event: output is empty")
	case e.Rule == "":
		return errors.New("falco event: rule is empty")
	case Priority(e.Priority) != e.Priority:
		return fmt.Errorf("falco event: priority %q is not a Falco priority", e.Priority)
	case e.Time.IsZero():
		return errors.New("falco event: time is zero")
	}
	return nil
}

// Unmarshal decodes and validates one Falco event (a receiver's side, and
// the tests').
func Unmarshal(b []byte) (*Event, error) {
	var e Event
	if err := json.Unmarshal(b, &e); err != nil {
		return nil, fmt.Errorf("falco event: %w", err)
	}
	if err := e.Validate(); err != nil {
		return nil, err
	}
	return &e, nil
}
