package bus

import (
	"testing"

	"github.com/containsec/contain/schemas/containv1"
)

func TestCheckHost(t *testing.T) {
	ev := func(h string) *containv1.Event { return &containv1.Event{Host: h} }
	for _, tc := range []struct {
		subject string
		b       *containv1.Batch
		reason  string
	}{
		{containv1.RawSubject("a"), &containv1.Batch{Host: "a", Events: []*containv1.Event{ev("a"), ev("")}}, ""},
		{containv1.RawSubject("a"), &containv1.Batch{Host: "b", Events: []*containv1.Event{ev("b")}}, ReasonHost},
		{containv1.RawSubject("a"), &containv1.Batch{Host: "a", Events: []*containv1.Event{ev("a"), ev("b")}}, ReasonEventHost},
		{containv1.EventsSubject("a"), &containv1.Batch{Host: "b"}, ReasonHost},
		{containv1.ActionsSubject("a"), &containv1.Batch{Host: "a"}, ""},
		// Alerts come from the central analyzer: its batch names its own
		// host, each alert the host it is about.
		{containv1.AlertsSubject("a"), &containv1.Batch{Host: "central", Events: []*containv1.Event{ev("a")}}, ""},
		{containv1.AlertsSubject("a"), &containv1.Batch{Host: "central", Events: []*containv1.Event{ev("b")}}, ReasonEventHost},
		// Each event is checked, not only the first of a host (a host
		// found good is remembered).
		{containv1.AlertsSubject("a"), &containv1.Batch{Host: "central", Events: []*containv1.Event{ev("a"), ev("a"), ev("b"), ev("a")}}, ReasonEventHost},
		{containv1.RawSubject("a_b"), &containv1.Batch{Host: "a.b", Events: []*containv1.Event{ev("a.b"), ev("a b"), ev("a.b"), ev("a.c")}}, ReasonEventHost},
		{containv1.RawSubject("a_b"), &containv1.Batch{Host: "a.b", Events: []*containv1.Event{ev("a.b"), ev("a b"), ev("a.b")}}, ""},
		// A partitioned events subject binds the host before the partition.
		{containv1.EventsPartitionSubject("a", 3), &containv1.Batch{Host: "a", Events: []*containv1.Event{ev("a")}}, ""},
		{containv1.EventsPartitionSubject("a", 3), &containv1.Batch{Host: "b"}, ReasonHost},
		{"contain.v1.events.a.x3", &containv1.Batch{Host: "a"}, ReasonSubject},
		{"contain.v1.raw.a.p3", &containv1.Batch{Host: "a"}, ReasonSubject},
		{"contain.v1.events.a.p3.p4", &containv1.Batch{Host: "a"}, ReasonSubject},
		{"other.subject", &containv1.Batch{Host: "a"}, ReasonSubject},
		{"contain.v1.raw", &containv1.Batch{Host: "a"}, ReasonSubject},
	} {
		err := CheckHost(tc.subject, tc.b)
		got := ""
		if err != nil {
			got = err.(*HostError).Reason
		}
		if got != tc.reason {
			t.Errorf("%s host %q: %v, want %q", tc.subject, tc.b.Host, err, tc.reason)
		}
	}
}

func FuzzCheckHost(f *testing.F) {
	f.Add("contain.v1.raw.a", "a", "b")
	f.Add("contain.v1.alerts.a.b", "", "")
	f.Add("contain.v1.events.a.p7", "a", "a")
	f.Fuzz(func(t *testing.T, subject, bh, eh string) {
		err := CheckHost(subject, &containv1.Batch{Host: bh, Events: []*containv1.Event{{Host: eh}}})
		if err == nil {
			_, host, ok := SubjectHost(subject)
			if !ok || (eh != "" && containv1.SubjectToken(eh) != host) {
				t.Fatalf("accepted %q batch %q event %q", subject, bh, eh)
			}
		}
	})
}
