package bus

import (
	"fmt"
	"strings"

	"github.com/containsec/contain/schemas/containv1"
)

// Host-binding refusal reasons (contain_refused_total{reason}).
const (
	// ReasonSubject: the subject is not contain.v1.<kind>.<host>.
	ReasonSubject = "bad_subject"
	// ReasonHost: the batch says it comes from another host than the
	// subject it was published on (raw, events, actions).
	ReasonHost = "host_mismatch"
	// ReasonEventHost: an event of the batch is about another host than
	// the subject's.
	ReasonEventHost = "event_host_mismatch"
)

// HostError is a batch refused because its hosts do not match its subject.
type HostError struct {
	Reason  string
	Subject string
	Detail  string
}

func (e *HostError) Error() string {
	return fmt.Sprintf("refusing batch on %s (%s): %s", e.Subject, e.Reason, e.Detail)
}

// SubjectHost splits contain.v1.<kind>.<host> into kind and host. An
// events subject may carry a partition token after the host
// (contain.v1.events.<host>.p<n>, containv1.EventsPartitionSubject).
func SubjectHost(subject string) (kind, host string, ok bool) {
	rest, ok := strings.CutPrefix(subject, containv1.SubjectPrefix+".")
	if !ok {
		return "", "", false
	}
	kind, host, ok = strings.Cut(rest, ".")
	if ok && kind == "events" {
		if h, part, cut := strings.Cut(host, "."); cut {
			if _, valid := containv1.ParsePartitionToken(part); !valid {
				return "", "", false
			}
			host = h
		}
	}
	if !ok || kind == "" || host == "" || strings.Contains(host, ".") {
		return "", "", false
	}
	return kind, host, true
}

// CheckHost binds a batch to the subject it arrived on. The subject's host
// is the only thing the server vouches for: per-host credentials may
// publish only their own host's subjects. So every event must be about
// that host, and a batch produced on the host itself (raw, events relayed
// from raw, actions) must name it as its host; alerts are produced by the
// central analyzer, whose batches name the analyzer's host. It is pure.
func CheckHost(subject string, b *containv1.Batch) error {
	kind, host, ok := SubjectHost(subject)
	if !ok {
		return &HostError{Reason: ReasonSubject, Subject: subject, Detail: "not " + containv1.SubjectPrefix + ".<kind>.<host>"}
	}
	// good is a host whose token was found to be the subject's (as in
	// WireBatch.BoundTo): a batch's events name one host, mostly, so its
	// token is made once, not per event.
	good := ""
	if kind != "alerts" {
		if containv1.SubjectToken(b.GetHost()) != host {
			return &HostError{Reason: ReasonHost, Subject: subject,
				Detail: fmt.Sprintf("batch host %q is not the subject's %q", truncate(b.GetHost()), host)}
		}
		good = b.GetHost()
	}
	for i, ev := range b.GetEvents() {
		h := ev.GetHost()
		if h == "" || h == good {
			continue
		}
		if containv1.SubjectToken(h) != host {
			return &HostError{Reason: ReasonEventHost, Subject: subject,
				Detail: fmt.Sprintf("event %d is about host %q, not the subject's %q", i, truncate(h), host)}
		}
		good = h
	}
	return nil
}

func truncate(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}
