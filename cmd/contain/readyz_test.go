package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/containsec/contain/internal/bus"
	"github.com/containsec/contain/internal/testenv"
	"github.com/containsec/contain/schemas/containv1"
)

// TestReadyzRun: a running stage's /readyz is 200 naming its NATS
// connection and its consumer, 503 naming NATS once the server is gone,
// 200 again after it restarts; /healthz answers all along.
func TestReadyzRun(t *testing.T) {
	store := t.TempDir()
	srv, err := bus.StartEmbedded(bus.EmbeddedConfig{Port: -1, StoreDir: store})
	if err != nil {
		t.Fatal(err)
	}
	natsPort := srv.Addr().(interface{ AddrPort() netAddrPort }).AddrPort().Port()
	cfg := defaultConfig()
	cfg.Host = "h1"
	cfg.NATS.URL = srv.ClientURL()
	cfg.Auth.Enabled = false
	cfg.NATS.Health.CheckInterval = 100 * time.Millisecond
	cfg.NATS.Health.JetstreamTimeout = 500 * time.Millisecond
	cfg.Metrics.Listen = fmt.Sprintf("127.0.0.1:%d", freePort(t))
	t.Cleanup(startStages(t, &cfg, []string{stageAnalyzer}, testenv.Logger(t)))
	get := func(path string) (int, string) {
		resp, err := http.Get("http://" + cfg.Metrics.Listen + path)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	wait := func(what string, cond func(int, string) bool, path string) string {
		t.Helper()
		var body string
		testenv.WaitForState(t, 20*time.Second, what, func() (bool, string) {
			code, b := get(path)
			body = b
			return cond(code, b), fmt.Sprintf("%d %q", code, b)
		})
		return body
	}
	body := wait("ready", func(c int, b string) bool { return c == 200 && strings.Contains(b, "consumer CONTAIN_EVENTS/") }, "/readyz")
	if !strings.Contains(body, "nats: ok") {
		t.Fatalf("/readyz does not name NATS:\n%s", body)
	}
	if !strings.Contains(body, "analyzer baselines: ok") {
		t.Fatalf("/readyz does not check the analyzer's baselines:\n%s", body)
	}
	srv.Shutdown()
	srv.WaitForShutdown()
	body = wait("not ready", func(c int, b string) bool { return c == http.StatusServiceUnavailable }, "/readyz")
	if !strings.Contains(body, "nats") {
		t.Fatalf("/readyz 503 does not name NATS:\n%s", body)
	}
	if code, _ := get("/healthz"); code != 200 {
		t.Fatalf("/healthz %d while NATS is down", code)
	}
	srv2, err := bus.StartEmbedded(bus.EmbeddedConfig{Port: int(natsPort), StoreDir: store})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv2.Shutdown(); srv2.WaitForShutdown() })
	wait("ready again", func(c int, _ string) bool { return c == 200 }, "/readyz")
}

type netAddrPort = netip.AddrPort

// TestSystemdNotifyAfterStages: under systemd (Type=notify) contain sends
// READY=1 once its stages are started, and /readyz, which said "stages
// starting" until then, no longer does.
func TestSystemdNotifyAfterStages(t *testing.T) {
	srv, err := bus.StartEmbedded(bus.EmbeddedConfig{Port: -1, StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Shutdown(); srv.WaitForShutdown() })
	sock := filepath.Join(t.TempDir(), "notify.sock")
	ln, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	t.Setenv("NOTIFY_SOCKET", sock)
	cfg := defaultConfig()
	cfg.Host = "h1"
	cfg.NATS.URL = srv.ClientURL()
	cfg.Auth.Enabled = false
	cfg.Metrics.Listen = fmt.Sprintf("127.0.0.1:%d", freePort(t))
	stop := sync.OnceFunc(startStages(t, &cfg, []string{stageAnalyzer}, testenv.Logger(t)))
	t.Cleanup(stop)
	buf := make([]byte, 512)
	ln.SetReadDeadline(time.Now().Add(20 * time.Second))
	n, err := ln.Read(buf)
	if err != nil || !strings.HasPrefix(string(buf[:n]), "READY=1\nSTATUS=running analyzer") {
		t.Fatalf("sd_notify: %q %v", buf[:n], err)
	}
	resp, err := http.Get("http://" + cfg.Metrics.Listen + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if strings.Contains(string(b), "starting") {
		t.Fatalf("/readyz after READY=1 still says starting:\n%s", b)
	}
	stop()
	ln.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := ln.Read(buf); err != nil || string(buf[:n]) != "STOPPING=1" {
		t.Errorf("on stop: %q %v", buf[:n], err)
	}
}

// TestReadyzEmbeddedJetStreamDiskFull: when the embedded JetStream's
// disk fills up, a stream's writes fail (ENOSPC) and nats-server keeps
// refusing them until restarted, though its API still answers: /readyz
// turns 503 naming the stream's write error, stays so once the disk has
// room again (the stream still cannot store), and is 200 after contain
// restarts on the freed disk.
func TestReadyzEmbeddedJetStreamDiskFull(t *testing.T) {
	testenv.RequireRoot(t) // the JetStream store's tmpfs
	storeDir := t.TempDir()
	if err := syscall.Mount("tmpfs", storeDir, "tmpfs", 0, "size=16m"); err != nil {
		t.Fatalf("tmpfs for the JetStream store: %v", err)
	}
	t.Cleanup(func() { _ = syscall.Unmount(storeDir, syscall.MNT_DETACH) })
	cfg := defaultConfig()
	cfg.Host = "h1"
	cfg.NATS.URL = ""
	cfg.NATS.Embedded = bus.EmbeddedConfig{Host: "127.0.0.1", Port: freePort(t), StoreDir: storeDir}
	// JetStream reserves each stream's max_bytes out of 75% of the disk.
	cfg.NATS.Streams.MaxBytes = 1 << 20
	cfg.Auth.Enabled = false
	cfg.NATS.Health.CheckInterval = 100 * time.Millisecond
	cfg.NATS.Health.JetstreamTimeout = 500 * time.Millisecond
	cfg.Metrics.Listen = fmt.Sprintf("127.0.0.1:%d", freePort(t))
	get := func() (int, string) {
		resp, err := http.Get("http://" + cfg.Metrics.Listen + "/readyz")
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	wait := func(what string, cond func(int, string) bool) string {
		t.Helper()
		var body string
		testenv.WaitForState(t, 20*time.Second, what, func() (bool, string) {
			code, b := get()
			body = b
			return cond(code, b), fmt.Sprintf("%d %q", code, b)
		})
		return body
	}
	stop := sync.OnceFunc(startRun(t, &cfg, []string{stageAnalyzer}, true, testenv.Logger(t)))
	t.Cleanup(stop)
	body := wait("ready", func(c int, _ string) bool { return c == 200 })
	if !strings.Contains(body, checkJetStreamStore+": ok") {
		t.Fatalf("/readyz does not check the embedded JetStream's streams:\n%s", body)
	}

	nc, js, err := bus.Connect(fmt.Sprintf("nats://127.0.0.1:%d", cfg.NATS.Embedded.Port), t.Name(), testenv.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	filler := filepath.Join(storeDir, "filler")
	fillDisk(t, filler)
	payload := make([]byte, 32<<10)
	// Writes reach the disk asynchronously: the flush fails, and the
	// next write returns the stream's kept error.
	body = wait("not ready (disk full)", func(c int, _ string) bool {
		pctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		defer cancel()
		_, _ = js.Publish(pctx, containv1.SubjectPrefix+".raw.h1", payload)
		return c == http.StatusServiceUnavailable
	})
	if !strings.Contains(body, checkJetStreamStore+": ") || !strings.Contains(body, "write error") || !strings.Contains(body, containv1.StreamRaw) {
		t.Fatalf("/readyz 503 does not name the stream's write error:\n%s", body)
	}
	t.Logf("disk full: %q", body)
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	// nats-server keeps the error until restarted: still not ready.
	time.Sleep(500 * time.Millisecond)
	if code, body := get(); code != http.StatusServiceUnavailable || !strings.Contains(body, "restart") {
		t.Fatalf("disk freed, stream still failed: /readyz %d %q", code, body)
	}
	stop()
	nc.Close()
	t.Cleanup(startRun(t, &cfg, []string{stageAnalyzer}, true, testenv.Logger(t)))
	wait("ready after restart", func(c int, _ string) bool { return c == 200 })
}

// fillDisk writes path until its file system is full.
func fillDisk(t *testing.T, path string) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	chunk := make([]byte, 1<<20)
	for {
		if _, err := f.Write(chunk); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatal(err)
			}
			if len(chunk) <= 4096 {
				return
			}
			chunk = chunk[:len(chunk)/16] // the last bytes too
		}
	}
}
