package main

import (
	"bufio"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/parquet-go/parquet-go"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/containsec/contain/schemas/containv1"
)

// TestExportRoundTrip stores a recorded window in a real ClickHouse and
// exports container c1's events as NDJSON and as Parquet: reading either
// file back gives exactly the events that were stored (proto.Equal), in
// order, and the Parquet columns hold the flat values.
func TestExportRoundTrip(t *testing.T) {
	t0 := time.Now().Add(-10 * time.Minute).Truncate(time.Second)
	history := replayHistory(t0)
	var want []*containv1.Event
	for _, ev := range history {
		if ev.ContainerId == "c1" {
			want = append(want, ev)
		}
	}
	addr, _ := seedStore(t, history...)
	dir := t.TempDir()
	export := func(format string) string {
		path := filepath.Join(dir, "c1."+format)
		out, err := runCLI(t, "export", "--clickhouse", addr, "--from", t0.Add(-time.Second).Format(time.RFC3339),
			"--container", "c1-name", "--format", format, "-o", path)
		if err != nil {
			t.Fatalf("export %s: %v\n%s", format, err, out)
		}
		t.Log(out)
		return path
	}
	check := func(format string, got []*containv1.Event) {
		t.Helper()
		if len(got) != len(want) {
			t.Fatalf("%s: %d events, want %d", format, len(got), len(want))
		}
		for i := range want {
			if !proto.Equal(got[i], want[i]) {
				t.Errorf("%s event %d:\n got %v\nwant %v", format, i, got[i], want[i])
			}
		}
	}

	f, err := os.Open(export(formatNDJSON))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var got []*containv1.Event
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		ev := &containv1.Event{}
		if err := protojson.Unmarshal(sc.Bytes(), ev); err != nil {
			t.Fatalf("ndjson line: %v: %s", err, sc.Text())
		}
		got = append(got, ev)
	}
	check(formatNDJSON, got)

	rows, err := parquet.ReadFile[exportRow](export(formatParquet))
	if err != nil {
		t.Fatal(err)
	}
	got = got[:0]
	for i, r := range rows {
		ev := &containv1.Event{}
		if err := proto.Unmarshal(r.Raw, ev); err != nil {
			t.Fatalf("parquet row %d raw: %v", i, err)
		}
		got = append(got, ev)
		if r.TimeNs != want[i].WallNs || r.ContainerID != "c1" || r.Kind != kindName(want[i]) {
			t.Errorf("parquet row %d: time %d kind %s container %s", i, r.TimeNs, r.Kind, r.ContainerID)
		}
	}
	check(formatParquet, got)
	last := rows[len(rows)-1]
	if last.NetOp != "connect" || last.RemoteAddr != "203.0.113.9" || last.RemotePort != 4444 || last.PID != 200 {
		t.Errorf("parquet network row: %+v", last)
	}
	if w := rows[len(rows)-2]; w.ExecFilename != "/bin/wget" || len(w.ExecArgv) != 1 {
		t.Errorf("parquet exec row: %+v", w)
	}
}
