package config

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

type inner struct {
	QueueLen      int           `config:"queue_len"`
	FlushInterval time.Duration `config:"flush_interval"`
	Addr          []string      `config:"addr"`
	Ratio         float64       `config:"ratio"`
}

type top struct {
	Host string `config:"host"`
	NATS struct {
		URL string `config:"url"`
	} `config:"nats"`
	Collector inner `config:"collector"`
}

// A field without a tag is reported, never given a guessed key.
func TestFieldsRequireTags(t *testing.T) {
	var bad struct {
		Good int `config:"good"`
		Bad  int
	}
	if _, err := Fields(&bad); err == nil || !strings.Contains(err.Error(), "Bad has no config tag") {
		t.Errorf("untagged field: %v", err)
	}
	var twice struct {
		A int `config:"a"`
		B int `config:"a"`
	}
	if _, err := Fields(&twice); err == nil {
		t.Error("a key used twice was accepted")
	}
}

func TestLoadLayers(t *testing.T) {
	cfg := top{Host: "default", Collector: inner{QueueLen: 10, FlushInterval: time.Second}}
	file := filepath.Join(t.TempDir(), "c.yaml")
	os.WriteFile(file, []byte("host: fromfile\ncollector:\n  queue_len: 20\n  addr: [a, b]\n"), 0o644)
	t.Setenv("CONTAIN_COLLECTOR_FLUSH_INTERVAL", "250ms")
	t.Setenv("CONTAIN_NATS_URL", "nats://x:1")
	if err := Load(&cfg, file, nil, nil); err != nil {
		t.Fatal(err)
	}
	if cfg.Host != "fromfile" || cfg.Collector.QueueLen != 20 || cfg.Collector.FlushInterval != 250*time.Millisecond ||
		cfg.NATS.URL != "nats://x:1" || strings.Join(cfg.Collector.Addr, ",") != "a,b" {
		t.Fatalf("loaded %+v", cfg)
	}
}

func TestLoadRejectsUnknownAndBadValues(t *testing.T) {
	for body, wantKey := range map[string]string{
		"collector:\n  queue_lenn: 5\n":      "unknown key collector.queue_lenn",
		"collector:\n  queue_len: lots\n":    `collector.queue_len: "lots" is not an integer`,
		"collector:\n  flush_interval: 5x\n": `collector.flush_interval: "5x" is not a duration`,
		"collector:\n  ratio: [1]\n":         "collector.ratio: [1] is not a number",
		"nats: {url: x, tls: true}\n":        "unknown key nats.tls",
	} {
		file := filepath.Join(t.TempDir(), "c.yaml")
		os.WriteFile(file, []byte(body), 0o644)
		cfg := top{}
		err := Load(&cfg, file, nil, nil)
		if err == nil || !strings.Contains(err.Error(), wantKey) {
			t.Errorf("%q: error %v, want %s", body, err, wantKey)
		} else if strings.Contains(err.Error(), "config.top") || strings.Contains(err.Error(), "int'") {
			t.Errorf("%q: error %v names Go types", body, err)
		}
	}
}

// An acronym's plural is one word in its key and its environment variable
// (the key loader once turned NeverPauseIDs into never_pause_i_ds, so the
// documented key was rejected and CONTAIN_..._NEVER_PAUSE_IDS ignored).
func TestAcronymKeysFromFileAndEnv(t *testing.T) {
	type policy struct {
		NeverPauseIDs []string `config:"never_pause_ids"`
		CAFile        string   `config:"ca_file"`
	}
	type root struct {
		Policy policy `config:"policy"`
	}
	var cfg root
	file := filepath.Join(t.TempDir(), "c.yaml")
	os.WriteFile(file, []byte("policy:\n  never_pause_ids: [abc*, def]\n"), 0o644)
	t.Setenv("CONTAIN_POLICY_CA_FILE", "/etc/ca.pem")
	if err := Load(&cfg, file, nil, nil); err != nil {
		t.Fatal(err)
	}
	if strings.Join(cfg.Policy.NeverPauseIDs, ",") != "abc*,def" || cfg.Policy.CAFile != "/etc/ca.pem" {
		t.Errorf("loaded %+v", cfg.Policy)
	}
	var env root
	env.Policy.NeverPauseIDs = []string{}
	t.Setenv("CONTAIN_POLICY_NEVER_PAUSE_IDS", "x,y")
	if err := Load(&env, "", nil, nil); err != nil {
		t.Fatal(err)
	}
	if strings.Join(env.Policy.NeverPauseIDs, ",") != "x,y" {
		t.Errorf("CONTAIN_POLICY_NEVER_PAUSE_IDS not applied: %+v", env.Policy)
	}
}

// FuzzLoad: any YAML file either loads or is one error; never a panic.
// Whatever loads prints as YAML that loads again to the same values.
func FuzzLoad(f *testing.F) {
	f.Add("collector:\n  queue_len: 5\n  addr: [a, b]\n")
	f.Add("collector:\n  flush_interval: 5x\n")
	f.Add("nats: {url: x}\nhost: y\n")
	f.Add("collector:\n  ratio: .5\n")
	f.Fuzz(func(t *testing.T, body string) {
		file := filepath.Join(t.TempDir(), "c.yaml")
		if err := os.WriteFile(file, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		var cfg top
		if err := Load(&cfg, file, nil, nil); err != nil {
			return
		}
		out, err := YAML(&cfg, nil)
		if err != nil {
			t.Fatal(err)
		}
		os.WriteFile(file, out, 0o644)
		var again top
		if err := Load(&again, file, nil, nil); err != nil {
			t.Fatalf("printed config does not load: %v\n%s", err, out)
		}
		if a, b := Inline(reflect.ValueOf(cfg)), Inline(reflect.ValueOf(again)); a != b {
			t.Fatalf("round trip: %s != %s", a, b)
		}
	})
}

// A renamed key still sets its successor, from a file or the environment;
// setting both is an error naming both.
func TestRenamedKeys(t *testing.T) {
	old := Renamed
	t.Cleanup(func() { Renamed = old })
	Renamed = map[string]string{"collector.flush_every": "collector.flush_interval"}
	dir := t.TempDir()
	file := filepath.Join(dir, "old.yaml")
	os.WriteFile(file, []byte("collector:\n  flush_every: 3s\n"), 0o644)
	cfg := top{Collector: inner{FlushInterval: time.Second}}
	if err := Load(&cfg, file, nil, nil); err != nil || cfg.Collector.FlushInterval != 3*time.Second {
		t.Fatalf("old key in a file: %v, flush_interval %v", err, cfg.Collector.FlushInterval)
	}
	t.Setenv("CONTAIN_COLLECTOR_FLUSH_EVERY", "4s")
	cfg = top{Collector: inner{FlushInterval: time.Second}}
	if err := Load(&cfg, "", nil, nil); err != nil || cfg.Collector.FlushInterval != 4*time.Second {
		t.Fatalf("old key in the environment: %v, flush_interval %v", err, cfg.Collector.FlushInterval)
	}
	both := filepath.Join(dir, "both.yaml")
	os.WriteFile(both, []byte("collector:\n  flush_every: 3s\n  flush_interval: 2s\n"), 0o644)
	if err := Load(&cfg, both, nil, nil); err == nil || !strings.Contains(err.Error(), "collector.flush_every is the old name of collector.flush_interval") {
		t.Fatalf("both keys set: %v", err)
	}
}
