package falcojson

import (
	"testing"
	"time"
)

func TestRoundTrip(t *testing.T) {
	e := &Event{Output: "x", Priority: "Critical", Rule: "r", Time: time.Unix(1, 5).UTC(), Source: Source, Hostname: "h",
		OutputFields: map[string]any{"container.id": "abc"}, Tags: []string{"T1059"}}
	b, err := Marshal(e)
	if err != nil {
		t.Fatal(err)
	}
	got, err := Unmarshal(b)
	if err != nil {
		t.Fatal(err)
	}
	if got.Rule != "r" || !got.Time.Equal(e.Time) || got.OutputFields["container.id"] != "abc" || got.Tags[0] != "T1059" {
		t.Fatalf("round trip: %+v", got)
	}
	if _, err := Marshal(&Event{Output: "x", Rule: "r", Priority: "critical", Time: time.Now()}); err == nil {
		t.Fatal("lower-case priority accepted")
	}
	if Priority("warn") != "Warning" || Priority("bogus") != "" {
		t.Fatal("Priority")
	}
}

func FuzzUnmarshal(f *testing.F) {
	f.Add([]byte(`{"output":"o","priority":"Notice","rule":"r","time":"2026-01-01T00:00:00Z","output_fields":{},"source":"contain","tags":[],"hostname":"h"}`))
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := Unmarshal(b)
		if err != nil {
			return
		}
		if _, err := Marshal(e); err != nil {
			t.Fatalf("decoded event does not encode: %v", err)
		}
	})
}
