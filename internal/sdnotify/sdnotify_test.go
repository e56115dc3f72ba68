package sdnotify

import (
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Notify writes one datagram to a real unixgram socket, as systemd reads it.
func TestNotify(t *testing.T) {
	for _, abstract := range []bool{false, true} {
		path := filepath.Join(t.TempDir(), "notify.sock")
		name := path
		if abstract {
			name = "\x00contain-sdnotify-test-" + filepath.Base(filepath.Dir(path))
		}
		ln, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: name, Net: "unixgram"})
		if err != nil {
			t.Fatal(err)
		}
		env := name
		if abstract {
			env = "@" + name[1:]
		}
		t.Setenv("NOTIFY_SOCKET", env)
		sent, err := Notify(Ready, Status("5 stages running"))
		if err != nil || !sent {
			t.Fatalf("abstract=%v: %v %v", abstract, sent, err)
		}
		buf := make([]byte, 256)
		ln.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, err := ln.Read(buf)
		ln.Close()
		if err != nil || string(buf[:n]) != "READY=1\nSTATUS=5 stages running" {
			t.Fatalf("abstract=%v: read %q %v", abstract, buf[:n], err)
		}
	}
	t.Setenv("NOTIFY_SOCKET", "")
	if sent, err := Notify(Ready); sent || err != nil {
		t.Errorf("without NOTIFY_SOCKET: %v %v", sent, err)
	}
	t.Setenv("NOTIFY_SOCKET", "/nonexistent/notify.sock")
	if _, err := Notify(Ready); err == nil || !strings.Contains(err.Error(), "sdnotify") {
		t.Errorf("missing socket: %v", err)
	}
}
