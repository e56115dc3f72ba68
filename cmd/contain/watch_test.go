package main

import (
	"fmt"
	"sync"
	"testing"

	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/proto"

	"github.com/containsec/contain/schemas/containv1"
)

// watchEvents subscribes nc to subjects for the rest of the test and calls
// each, holding mu, for every event of every batch that arrives there; a
// message that is not a batch is ignored.
func watchEvents(t *testing.T, nc *nats.Conn, mu *sync.Mutex, each func(*containv1.Event), subjects ...string) {
	t.Helper()
	for _, subj := range subjects {
		sub, err := nc.Subscribe(subj, func(m *nats.Msg) {
			var b containv1.Batch
			if proto.Unmarshal(m.Data, &b) != nil || b.Expand() != nil {
				return
			}
			mu.Lock()
			defer mu.Unlock()
			for _, ev := range b.Events {
				each(ev)
			}
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = sub.Unsubscribe() })
	}
}

// alertLines is "code score message" for each reason of ev's alert (none
// when ev is not an alert).
func alertLines(ev *containv1.Event) []string {
	var lines []string
	for _, r := range ev.GetAlert().GetReasons() {
		lines = append(lines, fmt.Sprintf("%s %.2f %s", r.Code, r.Score, r.Message))
	}
	return lines
}
