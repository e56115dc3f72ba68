package responder

import (
	"sync"

	"github.com/containsec/contain/schemas/containv1"
)

// maxHandled bounds the alert ids remembered as answered.
const maxHandled = 1 << 16

// reasonDuplicateAlert counts redelivered alerts already answered
// (contain_dropped_total{stage="responder",reason}).
const reasonDuplicateAlert = "duplicate_alert"

// handledSet remembers the ids of the alerts an action answered, so that
// an alert delivered again — its acknowledgement lost with a NATS node, or
// raised again under the same id by the analyzer instance that took its
// partition over (alert ids derive from the triggering event) — is not
// decided, and acted on, twice. It is bounded (the oldest ids are
// forgotten first) and restart-safe: restore refills it from this host's
// CONTAIN_ACTIONS, whose actions name the alert they answer
// (Action.alert_id), the same record the quarantine list is rebuilt from.
type handledSet struct {
	mu   sync.Mutex
	ids  map[string]struct{}
	ring []string // grows to max, then wraps
	max  int
	pos  int
}

// newHandledSet remembers up to n ids; its memory grows with the ids
// added, not with n (a responder that answers few alerts stays small).
func newHandledSet(n int) *handledSet {
	return &handledSet{ids: map[string]struct{}{}, max: n}
}

// has reports whether id was answered.
func (h *handledSet) has(id []byte) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	_, ok := h.ids[string(id)]
	return ok
}

// add remembers id, forgetting the oldest when full.
func (h *handledSet) add(id []byte) {
	if len(id) == 0 {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	k := string(id)
	if _, ok := h.ids[k]; ok {
		return
	}
	if len(h.ring) < h.max {
		h.ring = append(h.ring, k)
		h.ids[k] = struct{}{}
		return
	}
	delete(h.ids, h.ring[h.pos])
	h.ring[h.pos] = k
	h.pos = (h.pos + 1) % len(h.ring)
	h.ids[k] = struct{}{}
}

// addActions remembers the alerts that published actions answer.
func (h *handledSet) addActions(actions []*containv1.Event) {
	for _, ev := range actions {
		if a := ev.GetAction(); a != nil && a.Type == containv1.Action_TYPE_PAUSE {
			h.add(a.AlertId)
		}
	}
}
