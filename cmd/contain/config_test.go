package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/containsec/contain/cmd/internal/config"
	"github.com/containsec/contain/internal/testenv"
	"github.com/containsec/contain/responder"
)

// envValue returns, for a key's default, a different value and the
// environment variable text that sets it.
func envValue(t *testing.T, key string, def reflect.Value) (string, any) {
	t.Helper()
	switch tp := def.Type(); {
	case tp == reflect.TypeOf(time.Duration(0)):
		d := time.Duration(def.Int()) + 3*time.Second
		return d.String(), d
	case tp.Kind() == reflect.String:
		return "env-" + strings.ReplaceAll(key, ".", "-"), "env-" + strings.ReplaceAll(key, ".", "-")
	case tp.Kind() == reflect.Bool:
		return fmt.Sprint(!def.Bool()), !def.Bool()
	case tp.Kind() >= reflect.Int && tp.Kind() <= reflect.Int64:
		v := reflect.New(tp).Elem()
		v.SetInt(def.Int() + 7)
		return fmt.Sprint(def.Int() + 7), v.Interface()
	case tp.Kind() >= reflect.Uint && tp.Kind() <= reflect.Uint64:
		v := reflect.New(tp).Elem()
		v.SetUint(def.Uint() + 7)
		return fmt.Sprint(def.Uint() + 7), v.Interface()
	case tp.Kind() == reflect.Float64:
		return fmt.Sprint(def.Float() + 0.25), def.Float() + 0.25
	case tp == reflect.TypeOf([]string(nil)):
		return "a,b", []string{"a", "b"}
	case tp == reflect.TypeOf([]int(nil)):
		return "5,6", []int{5, 6}
	case tp == reflect.TypeOf(map[string]string(nil)):
		// Entries are added to the default's.
		want := map[string]string{"k1": "v1", "k2": "v2"}
		for _, k := range def.MapKeys() {
			want[k.String()] = def.MapIndex(k).String()
		}
		return "{k1: v1, k2: v2}", want
	case tp.Kind() == reflect.Slice && tp.Elem().Kind() == reflect.Struct:
		// A list of objects is YAML in its variable; the first field of
		// the element is set.
		f := tp.Elem().Field(0)
		if f.Type.Kind() != reflect.String {
			t.Fatalf("%s: first field of %s is not a string", key, tp.Elem())
		}
		want := reflect.MakeSlice(tp, 1, 1)
		want.Index(0).Field(0).SetString("from-env")
		return fmt.Sprintf("[{%s: from-env}]", f.Tag.Get(config.Tag)), want.Interface()
	}
	t.Fatalf("%s: no test value for type %s", key, def.Type())
	return "", nil
}

// Every key's environment variable is applied (CONTAIN_ + the key in upper
// case, dots as underscores), including acronyms like never_pause_ids.
func TestEveryEnvVarApplied(t *testing.T) {
	def := defaultConfig()
	fields, err := config.Fields(&def)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]any{}
	for _, f := range fields {
		text, v := envValue(t, f.Key, f.Value)
		t.Setenv(config.Env(f.Key), text)
		want[f.Key] = v
	}
	if _, ok := want["responder.policy.never_pause_ids"]; !ok {
		t.Fatal("responder.policy.never_pause_ids is not a key")
	}
	cfg := defaultConfig()
	if err := config.Load(&cfg, "", nil, nil); err != nil {
		t.Fatal(err)
	}
	got := config.Keys(&cfg)
	for k, w := range want {
		if !reflect.DeepEqual(got[k], w) {
			t.Errorf("%s=%v: loaded %#v, want %#v", config.Env(k), os.Getenv(config.Env(k)), got[k], w)
		}
	}
	t.Logf("%d keys, each set by its environment variable", len(want))
}

// topSections are the first components of contain's keys.
func topSections(t *testing.T) (map[string]bool, map[string]bool) {
	cfg := defaultConfig()
	keys := config.Keys(&cfg)
	tops := map[string]bool{}
	for k := range keys {
		top, _, _ := strings.Cut(k, ".")
		tops[top] = true
	}
	all := map[string]bool{}
	for k := range keys {
		all[k] = true
		for p := k; strings.Contains(p, "."); {
			p = p[:strings.LastIndex(p, ".")]
			all[p] = true
		}
	}
	return tops, all
}

var docKey = regexp.MustCompile("`((?:collector|enricher|analyzer|responder|store|nats|auth|log|metrics|audit)(?:\\.[a-z0-9_]+)+)`")

// Every config key the docs name in backquotes, and every key the shipped
// YAML sets, exists; and the shipped YAML loads.
func TestDocumentedKeysExist(t *testing.T) {
	root := testenv.RepoRoot(t)
	_, all := topSections(t)
	var docs []string
	for _, glob := range []string{"README.md", "docs/*.md", "docs/design/*.md", "deploy/*.md", "*/doc.go", "store/queries.md"} {
		m, _ := filepath.Glob(filepath.Join(root, glob))
		docs = append(docs, m...)
	}
	checked := 0
	for _, file := range docs {
		if filepath.Base(file) == "config.md" {
			continue
		}
		body, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range docKey.FindAllStringSubmatch(string(body), -1) {
			k := m[1]
			if ext := filepath.Ext(k); ext == ".c" || ext == ".go" || ext == ".h" || ext == ".md" {
				continue // a file name
			}
			if !all[k] && !all[strings.TrimSuffix(k, ".")] {
				t.Errorf("%s names `%s`, which is not a config key", strings.TrimPrefix(file, root+"/"), k)
			}
			checked++
		}
	}
	yamls, _ := filepath.Glob(filepath.Join(root, "deploy", "*.yaml"))
	for _, y := range yamls {
		if filepath.Base(y) == "compose.yaml" {
			continue
		}
		if out, err := runCLI(t, "check-config", "-c", y); err != nil {
			t.Errorf("%s: %v\n%s", y, err, out)
		}
		checked++
	}
	t.Logf("%d documented keys and %d files checked", checked, len(yamls))
}

// check-config prints YAML that, pasted back as a config file, loads to
// the same configuration.
func TestCheckConfigRoundTrip(t *testing.T) {
	dir := t.TempDir()
	in := filepath.Join(dir, "in.yaml")
	os.WriteFile(in, []byte("host: node-7\nresponder:\n  policy:\n    never_pause_ids: [abc*, def]\n    never_pause_labels: {tier: db}\n"+
		"    rules:\n      - name: web\n        threshold: 0.9\n        scope: {image: \"nginx*\"}\nanalyzer:\n  learning_window: 90s\n"), 0o644)
	first, err := runCLI(t, "check-config", "-c", in)
	if err != nil {
		t.Fatalf("%v\n%s", err, first)
	}
	body, ok := strings.CutPrefix(first, "configuration OK\n")
	if !ok || !strings.Contains(body, "never_pause_ids: [abc*, def]") || strings.Contains(body, "responder.policy") {
		t.Fatalf("check-config output is not nested YAML:\n%s", first)
	}
	out := filepath.Join(dir, "out.yaml")
	os.WriteFile(out, []byte(body), 0o644)
	second, err := runCLI(t, "check-config", "-c", out)
	if err != nil {
		t.Fatalf("pasted back: %v\n%s", err, body)
	}
	if second != first {
		t.Errorf("round trip changed the configuration:\n%s\n---\n%s", first, second)
	}
	var a, b globalOpts
	a.file, b.file = in, out
	ca, err := a.load(newRoot())
	if err != nil {
		t.Fatal(err)
	}
	cb, err := b.load(newRoot())
	if err != nil {
		t.Fatal(err)
	}
	ka, kb := config.Keys(ca), config.Keys(cb)
	for k := range ka {
		// nil and empty lists print alike and mean the same.
		if a, b := config.Inline(reflect.ValueOf(ka[k])), config.Inline(reflect.ValueOf(kb[k])); a != b {
			t.Errorf("%s: %#v pasted back is %#v", k, ka[k], kb[k])
		}
	}
}

// Errors name the key and show the value, in YAML's words.
func TestConfigErrorsNameKeyAndValue(t *testing.T) {
	dir := t.TempDir()
	for body, want := range map[string]string{
		"collector:\n  queue_len: lots\n":                   `collector.queue_len: "lots" is not an integer`,
		"store:\n  insert_max_age: 5 minutes\n":             `store.insert_max_age: "5 minutes" is not a duration`,
		"responder:\n  policy:\n    never_pause_idz: [x]\n": "unknown key responder.policy.never_pause_idz",
		"responder:\n  dry_run: maybe\n":                    `responder.dry_run: "maybe" is not true or false`,
	} {
		f := filepath.Join(dir, "bad.yaml")
		os.WriteFile(f, []byte(body), 0o644)
		_, err := runCLI(t, "check-config", "-c", f)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: error %v, want %s", body, err, want)
		}
		if err != nil && (strings.Contains(err.Error(), "main.") || strings.Contains(err.Error(), "'int'") || strings.Contains(err.Error(), "float64")) {
			t.Errorf("%q: error names Go types: %v", body, err)
		}
	}
}

// The default config file is read when no -c is given.
func TestDefaultConfigPath(t *testing.T) {
	f := filepath.Join(t.TempDir(), "contain.yaml")
	os.WriteFile(f, []byte("host: from-default-path\n"), 0o644)
	old := defaultConfigPath
	defaultConfigPath = f
	t.Cleanup(func() { defaultConfigPath = old })
	t.Setenv("CONTAIN_CONFIG", "")
	out, err := runCLI(t, "check-config")
	if err != nil || !strings.Contains(out, "host: from-default-path") {
		t.Fatalf("default config path not read: %v\n%s", err, out)
	}
	defaultConfigPath = filepath.Join(t.TempDir(), "missing.yaml")
	if out, err := runCLI(t, "check-config"); err != nil || strings.Contains(out, "from-default-path") {
		t.Fatalf("missing default config: %v\n%s", err, out)
	}
}

const configDocIntro = `Generated from the typed config structs by ` + "`CONTAIN_UPDATE_DOCS=1 go test -run TestConfigDoc ./cmd/contain`" + `;
do not edit. Keys are read from a YAML file (` + "`-c`" + `, ` + "`CONTAIN_CONFIG`" + `, or /etc/contain/contain.yaml when it
exists), then from the environment variables below, then from flags. Lists may be given in an environment variable
comma-separated (` + "`a,b`" + `), maps and lists of objects as YAML (` + "`{k: v}`" + `). ` + "`contain check-config`" + ` prints the
effective configuration as YAML. The default of ` + "`host`" + ` is the machine's hostname.`

// docs/config.md is current.
func TestConfigDoc(t *testing.T) {
	root := testenv.RepoRoot(t)
	cfg := defaultConfig()
	cfg.Host = ""
	got, err := config.Markdown(&cfg, root, "github.com/containsec/contain", "Configuration reference", configDocIntro)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(root, "docs", "config.md")
	if os.Getenv("CONTAIN_UPDATE_DOCS") == "1" {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	have, err := os.ReadFile(path)
	if err != nil || !bytes.Equal(have, []byte(got)) {
		t.Fatalf("docs/config.md is stale (%v): run CONTAIN_UPDATE_DOCS=1 go test -run TestConfigDoc ./cmd/contain", err)
	}
	var missing []string
	for _, line := range strings.Split(got, "\n") {
		if strings.HasPrefix(line, "| `") && strings.HasSuffix(line, "|  |") {
			missing = append(missing, strings.Split(line, "`")[1])
		}
	}
	sort.Strings(missing)
	if len(missing) > 0 {
		t.Logf("%d keys without a description: %s", len(missing), strings.Join(missing, ", "))
	}
}

func TestVersionFlag(t *testing.T) {
	for _, args := range [][]string{{"version"}, {"--version"}} {
		out, err := runCLI(t, args...)
		if err != nil || !strings.HasPrefix(out, "contain ") || !strings.Contains(out, " go1.") || !strings.Contains(out, "event schema v1") {
			t.Errorf("%v: %q %v", args, out, err)
		}
	}
}

func TestQuarantineTable(t *testing.T) {
	now := time.Date(2026, 12, 3, 10, 0, 0, 0, time.UTC)
	var b bytes.Buffer
	err := quarantineTable(&b, []responder.Quarantine{{ContainerID: "0123456789abcdef0123", ContainerName: "web", ImageRef: "nginx:1",
		Method: "cgroup2", Since: now.Add(-90 * time.Second), AlertID: "a-1", Score: 0.93, Reason: "exec.unseen", State: "frozen"}}, now)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(b.String()), "\n")
	if len(lines) != 2 || !strings.HasPrefix(lines[0], "CONTAINER ") ||
		!regexp.MustCompile(`^0123456789ab +web +nginx:1 +frozen +2026-12-03T09:58:30Z \(1m30s ago\) +0\.93 +cgroup2 +exec\.unseen +a-1$`).MatchString(lines[1]) {
		t.Errorf("table:\n%s", b.String())
	}
	b.Reset()
	quarantineTable(&b, nil, now)
	if b.String() != "no quarantined containers\n" {
		t.Errorf("empty table: %q", b.String())
	}
}
