package notify

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

// StructuredDataID is the SD-ID of contain's RFC 5424 structured data
// (32473 is the documentation enterprise number of RFC 5612).
const StructuredDataID = "contain@32473"

// syslogOutput writes RFC 5424 messages: one datagram each over udp and
// unixgram, octet-counted (RFC 6587 3.4.1) over tcp and unix streams.
type syslogOutput struct {
	network, addr string
	stream        bool
	facility      int
	app           string
	hostname      string

	mu   sync.Mutex
	conn net.Conn
}

func newSyslog(cfg OutputConfig) (*syslogOutput, error) {
	u, err := url.Parse(cfg.URL)
	if err != nil {
		return nil, fmt.Errorf("syslog url: %w", err)
	}
	s := &syslogOutput{network: u.Scheme, addr: u.Host, facility: cfg.Facility, app: cfg.AppName}
	if u.Scheme == "unix" || u.Scheme == "unixgram" {
		s.addr = u.Path
	}
	s.stream = u.Scheme == "tcp" || u.Scheme == "unix"
	s.hostname, _ = os.Hostname()
	return s, nil
}

func (s *syslogOutput) Send(ctx context.Context, n *Notification) error {
	msg := FormatRFC5424(s.facility, s.app, firstNonEmpty(n.Host, s.hostname), n)
	if s.stream {
		msg = []byte(strconv.Itoa(len(msg)) + " " + string(msg))
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conn == nil {
		var d net.Dialer
		c, err := d.DialContext(ctx, s.network, s.addr)
		if err != nil {
			return fmt.Errorf("syslog dial: %w", err)
		}
		s.conn = c
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = s.conn.SetWriteDeadline(dl)
	}
	if _, err := s.conn.Write(msg); err != nil {
		_ = s.conn.Close()
		s.conn = nil
		return fmt.Errorf("syslog write: %w", err)
	}
	return nil
}

func (s *syslogOutput) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conn != nil {
		err := s.conn.Close()
		s.conn = nil
		return err
	}
	return nil
}

// severity maps a Falco priority to a syslog severity.
func severity(p string) int {
	for i, q := range []string{"Emergency", "Alert", "Critical", "Error", "Warning", "Notice", "Informational", "Debug"} {
		if p == q {
			return i
		}
	}
	return 5
}

// FormatRFC5424 renders n as one RFC 5424 message:
// <PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID [contain@32473 ...] MSG.
func FormatRFC5424(facility int, app, hostname string, n *Notification) []byte {
	pri := facility*8 + severity(n.Priority)
	ts := n.Time
	if ts.IsZero() || ts.Unix() <= 0 {
		ts = time.Now()
	}
	var b strings.Builder
	fmt.Fprintf(&b, "<%d>1 %s %s %s %d %s ", pri, ts.UTC().Format("2006-01-02T15:04:05.000000Z07:00"),
		header(hostname, 255), header(app, 48), os.Getpid(), header(n.Kind, 32))
	b.WriteString("[" + StructuredDataID)
	param := func(k, v string) {
		if v != "" {
			b.WriteString(" " + k + `="` + sdEscape(v) + `"`)
		}
	}
	param("id", n.ID)
	param("rule", n.Rule)
	param("priority", n.Priority)
	param("score", strconv.FormatFloat(n.Score, 'f', 3, 64))
	param("container_id", n.Container.ID)
	param("container_name", n.Container.Name)
	param("image", n.Container.ImageRef)
	param("pod", n.Container.Pod)
	param("namespace", n.Container.Namespace)
	param("alert_id", n.AlertID)
	param("reasons", reasonCodes(n.Reasons))
	param("mitre", strings.Join(n.Mitre, ","))
	if p := n.Process; p != nil {
		param("pid", strconv.Itoa(int(p.PID)))
		param("comm", p.Comm)
		param("exe", p.Exe)
	}
	if a := n.Action; a != nil {
		param("actor", a.Actor)
		param("method", a.Method)
	}
	if s := n.Snapshot; s != nil {
		param("snapshot", fmt.Sprintf("%d processes, %d sockets, %d changed files", s.Processes, s.Sockets, s.ChangedFiles))
	}
	param("release_command", n.ReleaseCommand)
	b.WriteString("] ")
	b.WriteString(strings.ReplaceAll(n.Summary, "\n", " "))
	return []byte(b.String())
}

// header makes s a valid RFC 5424 header field: printable US-ASCII without
// spaces, at most n characters; "-" when empty.
func header(s string, n int) string {
	s = strings.Map(func(r rune) rune {
		if r <= 32 || r >= 127 {
			return '_'
		}
		return r
	}, s)
	if len(s) > n {
		s = s[:n]
	}
	return orDash(s)
}

// sdEscape escapes '"', '\' and ']' in a PARAM-VALUE.
func sdEscape(s string) string {
	return strings.NewReplacer(`\`, `\\`, `"`, `\"`, `]`, `\]`).Replace(s)
}
