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
		"IPv6Addr": "i_pv6_addr", "HTTPListen": "http_listen", "Host": "host", "MaxAge": "max_age",
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
