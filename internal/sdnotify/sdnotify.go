// Package sdnotify tells systemd about a service's state (sd_notify(3))
// over the datagram socket named by $NOTIFY_SOCKET, without libsystemd: a
// unit of Type=notify is started once READY=1 arrives.
package sdnotify

import (
	"fmt"
	"net"
	"os"
	"strings"
)

// Messages of sd_notify(3).
const (
	Ready    = "READY=1"
	Stopping = "STOPPING=1"
)

// Status is a one-line status shown by systemctl status.
func Status(s string) string { return "STATUS=" + strings.ReplaceAll(s, "\n", " ") }

// Notify sends the state lines to $NOTIFY_SOCKET. It returns false, nil
// when the variable is unset (not started by systemd, or not Type=notify).
// An abstract socket is written with a leading '@'.
func Notify(state ...string) (bool, error) {
	path := os.Getenv("NOTIFY_SOCKET")
	if path == "" {
		return false, nil
	}
	addr := &net.UnixAddr{Name: path, Net: "unixgram"}
	if path[0] == '@' {
		addr.Name = "\x00" + path[1:]
	}
	conn, err := net.DialUnix("unixgram", nil, addr)
	if err != nil {
		return false, fmt.Errorf("sdnotify: %w", err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte(strings.Join(state, "\n"))); err != nil {
		return false, fmt.Errorf("sdnotify: %w", err)
	}
	return true, nil
}
