package bus

import (
	"encoding/json"
	"testing"

	"github.com/nats-io/nats.go"
)

// FuzzPubAckOK: the relay takes a reply for a stored message only when it
// is a JSON PubAck naming a stream and carrying no error; a status is
// never one.
func FuzzPubAckOK(f *testing.F) {
	for _, s := range []string{
		`{"stream":"CONTAIN_EVENTS", "seq":12}`,
		`{"stream":"CONTAIN_EVENTS", "seq":12,"duplicate": true}`,
		`{"error":{"code":400,"err_code":10071,"description":"wrong last sequence: 1"}}`,
		`{"stream":"S","error":{"code":503}}`,
		`{"stream":"error"}`,
		`{"stream":`, ``, `+ACK`, `{"stream":"S","\u0065rror":{"code":503}}`,
	} {
		f.Add([]byte(s), false)
		f.Add([]byte(s), true)
	}
	f.Fuzz(func(t *testing.T, data []byte, status bool) {
		m := &nats.Msg{Data: data}
		if status {
			m.Header = nats.Header{statusHeader: []string{"503"}}
		}
		if !pubAckOK(m) {
			return
		}
		if status {
			t.Fatalf("a status taken for a PubAck: %q", data)
		}
		var ack struct {
			Stream string          `json:"stream"`
			Error  json.RawMessage `json:"error"`
		}
		if err := json.Unmarshal(data, &ack); err != nil {
			// Taken by its shape ({"stream": … }, no "error", no
			// escape) without being JSON: not what a server sends, and
			// no error in it either.
			return
		}
		if len(ack.Error) > 0 && string(ack.Error) != "null" {
			t.Fatalf("an error PubAck taken for stored: %q", data)
		}
	})
}
