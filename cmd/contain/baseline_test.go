package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containsec/contain/analyzer"
	"github.com/containsec/contain/internal/auth"
	"github.com/containsec/contain/schemas/containv1"
	"github.com/containsec/contain/schemas/kvdoc"
)

// TestBaselineCLI learns a baseline with the real engine, then goes through
// the operator's commands against a real NATS: import, list, show, export
// as seccomp, lock.
func TestBaselineCLI(t *testing.T) {
	a := deployNATS(t)
	url := a.url
	// The analyzer makes the bucket (its credentials may; an operator's
	// may not).
	_, ajs := a.conn("analyzer")
	if _, err := analyzer.OpenStore(context.Background(), ajs, analyzer.DefaultBaselinesBucket); err != nil {
		t.Fatal(err)
	}
	e, err := analyzer.NewEngine(analyzer.DefaultConfig(), nil)
	if err != nil {
		t.Fatal(err)
	}
	ids := containv1.NewIDGen()
	now := time.Now().UnixNano()
	digest := "sha256:" + strings.Repeat("c", 64)
	for i, nr := range []uint32{0, 1, 2, 60, 231} {
		e.Observe(&containv1.Event{
			Id: ids.Next(), Host: "h", ContainerId: "c1", ImageRef: "demo/cli:1", ImageDigest: digest,
			Kind: containv1.Kind_KIND_SYSCALL, WallNs: now + int64(i), SchemaVersion: containv1.SchemaVersion,
			Body: &containv1.Event_Syscall{Syscall: &containv1.Syscall{Mode: containv1.Syscall_MODE_FIRST, Nr: nr}},
		})
	}
	keys := e.Keys()
	if len(keys) != 1 {
		t.Fatalf("engine keys %v", keys)
	}
	doc, err := e.Snapshot(keys[0])
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "b.yaml")
	var buf bytes.Buffer
	if err := analyzer.WriteYAML(&buf, doc); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(file, buf.Bytes(), 0o644)

	nats := []string{"--nats-url", url}
	if out, err := runCLI(t, append([]string{"baseline", "import", file}, nats...)...); err != nil {
		t.Fatalf("import: %v: %s", err, out)
	}
	out, err := runCLI(t, append([]string{"baseline", "list"}, nats...)...)
	if err != nil || !strings.Contains(out, keys[0]) || !strings.Contains(out, "learning") {
		t.Fatalf("list: %v:\n%s", err, out)
	}
	out, err = runCLI(t, append([]string{"baseline", "export", "--format", "seccomp", keys[0]}, nats...)...)
	if err != nil {
		t.Fatalf("export: %v: %s", err, out)
	}
	var prof struct {
		DefaultAction string `json:"defaultAction"`
		Syscalls      []struct {
			Names  []string `json:"names"`
			Action string   `json:"action"`
		} `json:"syscalls"`
	}
	if err := json.Unmarshal([]byte(out), &prof); err != nil {
		t.Fatalf("seccomp export is not JSON: %v\n%s", err, out)
	}
	allowed := fmt.Sprint(prof.Syscalls)
	if prof.DefaultAction == "SCMP_ACT_ALLOW" || !strings.Contains(allowed, "read") || !strings.Contains(allowed, "exit_group") {
		t.Fatalf("seccomp profile does not allow the learned syscalls only: %+v", prof)
	}
	// The change is signed with the operator credentials; the actor is
	// that credential and this OS user.
	if out, err := runCLI(t, append([]string{"baseline", "lock", keys[0]}, nats...)...); err != nil || !strings.Contains(out, "(by operator/"+auth.LocalOSUser()+")") {
		t.Fatalf("lock: %v: %s", err, out)
	}
	// A reader cannot write the bucket.
	_, rjs := a.conn("reader")
	rctx, rcancel := context.WithTimeout(context.Background(), time.Second)
	defer rcancel()
	if kv, err := rjs.KeyValue(rctx, analyzer.DefaultBaselinesBucket); err != nil {
		t.Fatalf("reader opening the bucket: %v", err)
	} else if _, err := kv.Put(rctx, kvdoc.EscapeKey(keys[0]), []byte("{}")); err == nil {
		t.Fatal("a reader wrote a baseline")
	}
	out, err = runCLI(t, append([]string{"baseline", "list", "--json"}, nats...)...)
	if err != nil || !strings.Contains(out, `"phase":"locked"`) {
		t.Fatalf("after lock: %v:\n%s", err, out)
	}
	if _, err := runCLI(t, append([]string{"baseline", "show", "no-such-key"}, nats...)...); err == nil {
		t.Fatal("show of a missing baseline succeeded")
	}
}

func TestEvalCLI(t *testing.T) {
	dir := t.TempDir()
	write := func(sub string, i int, trace string) {
		p := filepath.Join(dir, sub)
		os.MkdirAll(p, 0o755)
		os.WriteFile(filepath.Join(p, fmt.Sprintf("t%d.txt", i)), []byte(trace), 0o644)
	}
	normal := "0 1 2 3 0 1 2 3 0 1 2 3 0 1 2 3 0 1 2 3 0 1 2 3"
	for i := range 20 {
		write("train", i, normal)
		write("normal", i, normal)
		write("attack/shell", i, "0 1 2 59 161 165 59 0 1 2 59 161 165 59 0 1 2")
	}
	out, err := runCLI(t, "eval", "--train", filepath.Join(dir, "train"), "--normal", filepath.Join(dir, "normal"), "--attack", filepath.Join(dir, "attack"))
	if err != nil {
		t.Fatalf("eval: %v\n%s", err, out)
	}
	if !strings.Contains(out, "ROC AUC: 1.0000") || !strings.Contains(out, "shell") {
		t.Fatalf("eval output:\n%s", out)
	}
	dirs := []string{"--train", filepath.Join(dir, "train"), "--normal", filepath.Join(dir, "normal"), "--attack", filepath.Join(dir, "attack")}
	out, err = runCLI(t, append([]string{"eval", "--compare"}, dirs...)...)
	if err != nil {
		t.Fatalf("eval --compare: %v\n%s", err, out)
	}
	for _, m := range []string{"ngram ", "markov ", "markov-mean ", "knn ", "ensemble "} {
		if !strings.Contains(out, m) {
			t.Fatalf("eval --compare: no row %q:\n%s", m, out)
		}
	}
	out, err = runCLI(t, append([]string{"eval", "--model", "knn"}, dirs...)...)
	if err != nil || !strings.Contains(out, "ROC AUC: 1.0000") || !strings.Contains(out, "RECORDING") {
		t.Fatalf("eval --model knn: %v\n%s", err, out)
	}
	if _, err := runCLI(t, append([]string{"eval", "--model", "lstm"}, dirs...)...); err == nil {
		t.Fatal("eval --model lstm succeeded")
	}
	if _, err := runCLI(t, "eval", "--train", dir); err == nil {
		t.Fatal("eval without --normal/--attack succeeded")
	}
}
