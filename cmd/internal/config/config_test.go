package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

type inner struct {
	QueueLen      int
	FlushInterval time.Duration
	Addr          []string
}

type top struct {
	Host      string
	NATS      struct{ URL string }
	Collector inner
}

func TestSnakeCase(t *testing.T) {
	for in, want := range map[string]string{
		"QueueLen": "queue_len", "NATS": "nats", "URL": "url", "StoreDir": "store_dir",
		"IPv6Addr": "ipv6_addr", "HTTPListen": "http_listen", "Host": "host", "MaxAge": "max_age",
		"NeverPauseIDs": "never_pause_ids", "URLs": "urls", "CAFile": "ca_file", "TrustedURLsFor": "trusted_urls_for",
		"IDs": "ids", "PIDs": "pids", "Assets": "assets", "ExecSessions": "exec_sessions", "Ipv4": "ipv4",
	} {
		if got := SnakeCase(in); got != want {
			t.Errorf("SnakeCase(%q) = %q, want %q", in, got, want)
		}
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
		"collector:\n  queue_lenn: 5\n":     "queue_lenn",
		"collector:\n  queue_len: lots\n":   "queue_len",
		"collector:\n  flush_interval: x\n": "flush_interval",
	} {
		file := filepath.Join(t.TempDir(), "c.yaml")
		os.WriteFile(file, []byte(body), 0o644)
		cfg := top{}
		err := Load(&cfg, file, nil, nil)
		if err == nil || !strings.Contains(strings.ToLower(err.Error()), wantKey) {
			t.Errorf("%q: error %v does not name %s", body, err, wantKey)
		}
	}
}

// An acronym's plural is one word in its key and its environment variable
// (the key loader once turned NeverPauseIDs into never_pause_i_ds, so the
// documented key was rejected and CONTAIN_..._NEVER_PAUSE_IDS ignored).
func TestAcronymKeysFromFileAndEnv(t *testing.T) {
	type policy struct {
		NeverPauseIDs []string
		CAFile        string
	}
	var cfg struct{ Policy policy }
	file := filepath.Join(t.TempDir(), "c.yaml")
	os.WriteFile(file, []byte("policy:\n  never_pause_ids: [abc*, def]\n"), 0o644)
	t.Setenv("CONTAIN_POLICY_CA_FILE", "/etc/ca.pem")
	if err := Load(&cfg, file, nil, nil); err != nil {
		t.Fatal(err)
	}
	if strings.Join(cfg.Policy.NeverPauseIDs, ",") != "abc*,def" || cfg.Policy.CAFile != "/etc/ca.pem" {
		t.Errorf("loaded %+v", cfg.Policy)
	}
	var env struct{ Policy policy }
	env.Policy.NeverPauseIDs = []string{}
	t.Setenv("CONTAIN_POLICY_NEVER_PAUSE_IDS", "x")
	if err := Load(&env, "", nil, nil); err != nil {
		t.Fatal(err)
	}
	if strings.Join(env.Policy.NeverPauseIDs, ",") != "x" {
		t.Errorf("CONTAIN_POLICY_NEVER_PAUSE_IDS not applied: %+v", env.Policy)
	}
}
