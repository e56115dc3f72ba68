package notify

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containsec/contain/internal/testenv"
	"github.com/containsec/contain/schemas/containv1"
)

// rfc5424 is a parsed RFC 5424 message.
type rfc5424 struct {
	pri                            int
	ts                             time.Time
	host, app, procid, msgid, sdID string
	params                         map[string]string
	msg                            string
}

// parseRFC5424 parses one message with one SD-ELEMENT (or "-").
func parseRFC5424(b []byte) (*rfc5424, error) {
	s := string(b)
	if !strings.HasPrefix(s, "<") {
		return nil, fmt.Errorf("no PRI")
	}
	end := strings.IndexByte(s, '>')
	if end < 2 || end > 4 {
		return nil, fmt.Errorf("bad PRI")
	}
	pri, err := strconv.Atoi(s[1:end])
	if err != nil || pri > 191 {
		return nil, fmt.Errorf("bad PRI %q", s[1:end])
	}
	f := strings.SplitN(s[end+1:], " ", 7)
	if len(f) != 7 || f[0] != "1" {
		return nil, fmt.Errorf("bad header")
	}
	ts, err := time.Parse(time.RFC3339Nano, f[1])
	if err != nil {
		return nil, fmt.Errorf("timestamp: %w", err)
	}
	for _, h := range f[2:6] {
		if h == "" || strings.ContainsFunc(h, func(r rune) bool { return r <= 32 || r >= 127 }) {
			return nil, fmt.Errorf("bad header field %q", h)
		}
	}
	m := &rfc5424{pri: pri, ts: ts, host: f[2], app: f[3], procid: f[4], msgid: f[5], params: map[string]string{}}
	rest := f[6]
	if strings.HasPrefix(rest, "- ") || rest == "-" {
		m.msg = strings.TrimPrefix(strings.TrimPrefix(rest, "-"), " ")
		return m, nil
	}
	if !strings.HasPrefix(rest, "[") {
		return nil, fmt.Errorf("no structured data")
	}
	i := 1
	for i < len(rest) && rest[i] != ' ' && rest[i] != ']' {
		i++
	}
	m.sdID = rest[1:i]
	for i < len(rest) && rest[i] == ' ' {
		i++
		eq := strings.IndexByte(rest[i:], '=')
		if eq < 1 || i+eq+1 >= len(rest) || rest[i+eq+1] != '"' {
			return nil, fmt.Errorf("bad SD-PARAM at %d", i)
		}
		name := rest[i : i+eq]
		i += eq + 2
		var v strings.Builder
		for ; i < len(rest) && rest[i] != '"'; i++ {
			if rest[i] == '\\' && i+1 < len(rest) && strings.IndexByte(`"\]`, rest[i+1]) >= 0 {
				i++
			} else if rest[i] == ']' {
				return nil, fmt.Errorf("unescaped ] in %s", name)
			}
			v.WriteByte(rest[i])
		}
		if i >= len(rest) {
			return nil, fmt.Errorf("unterminated SD-PARAM %s", name)
		}
		m.params[name] = v.String()
		i++
	}
	if i >= len(rest) || rest[i] != ']' {
		return nil, fmt.Errorf("unterminated SD-ELEMENT")
	}
	m.msg = strings.TrimPrefix(rest[i+1:], " ")
	return m, nil
}

// syslogSink collects messages from one listener.
type syslogSink struct {
	mu   sync.Mutex
	msgs [][]byte
}

func (s *syslogSink) add(b []byte) {
	s.mu.Lock()
	s.msgs = append(s.msgs, append([]byte(nil), b...))
	s.mu.Unlock()
}

func (s *syslogSink) all() [][]byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([][]byte(nil), s.msgs...)
}

func (s *syslogSink) datagrams(t *testing.T, c net.PacketConn) {
	t.Cleanup(func() { c.Close() })
	go func() {
		buf := make([]byte, 64<<10)
		for {
			n, _, err := c.ReadFrom(buf)
			if err != nil {
				return
			}
			s.add(buf[:n])
		}
	}()
}

// stream reads octet-counted frames (RFC 6587 3.4.1).
func (s *syslogSink) stream(t *testing.T, ln net.Listener) {
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				r := bufio.NewReader(c)
				for {
					l, err := r.ReadString(' ')
					if err != nil {
						return
					}
					n, err := strconv.Atoi(strings.TrimSpace(l))
					if err != nil || n <= 0 || n > 1<<20 {
						t.Errorf("bad octet count %q", l)
						return
					}
					b := make([]byte, n)
					if _, err := io.ReadFull(r, b); err != nil {
						return
					}
					s.add(b)
				}
			}()
		}
	}()
}

// TestSyslogOutputs: an alert and a quarantine reach real udp, tcp, unix
// and unixgram listeners as RFC 5424 messages carrying the evidence in
// structured data.
func TestSyslogOutputs(t *testing.T) {
	dir := t.TempDir()
	sinks := map[string]*syslogSink{}
	var outs []OutputConfig
	udp, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sinks["udp"] = &syslogSink{}
	sinks["udp"].datagrams(t, udp)
	outs = append(outs, OutputConfig{Name: "udp", Type: TypeSyslog, URL: "udp://" + udp.LocalAddr().String()})
	tcp, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sinks["tcp"] = &syslogSink{}
	sinks["tcp"].stream(t, tcp)
	outs = append(outs, OutputConfig{Name: "tcp", Type: TypeSyslog, URL: "tcp://" + tcp.Addr().String(), Facility: 4})
	unix, err := net.Listen("unix", filepath.Join(dir, "stream.sock"))
	if err != nil {
		t.Fatal(err)
	}
	sinks["unix"] = &syslogSink{}
	sinks["unix"].stream(t, unix)
	outs = append(outs, OutputConfig{Name: "unix", Type: TypeSyslog, URL: "unix://" + filepath.Join(dir, "stream.sock")})
	gram, err := net.ListenPacket("unixgram", filepath.Join(dir, "log"))
	if err != nil {
		t.Fatal(err)
	}
	sinks["unixgram"] = &syslogSink{}
	sinks["unixgram"].datagrams(t, gram)
	outs = append(outs, OutputConfig{Name: "unixgram", Type: TypeSyslog, URL: "unixgram://" + filepath.Join(dir, "log")})

	js := startBus(t)
	nf, _ := runNotifier(t, js, Config{Alerts: true, Outputs: outs})
	alert := alertEvent(0.95)
	alert.ContainerName = `we"ird]name\`
	publish(t, js, containv1.AlertsSubject(testHost), alert)
	// The alerts consumer keeps the alert for the quarantine's evidence;
	// the actions consumer runs apart from it.
	testenv.WaitFor(t, 10*time.Second, "the alert kept for its action", func() bool { return nf.kept(alert) })
	publish(t, js, containv1.ActionsSubject(testHost), actionEvent(alert, containv1.Action_TYPE_PAUSE, containv1.Action_RESULT_OK, snapshotDetail))
	for name, s := range sinks {
		testenv.WaitFor(t, 10*time.Second, name+" messages", func() bool { return len(s.all()) >= 2 })
		msgs := s.all()
		if len(msgs) != 2 {
			t.Errorf("%s: %d messages, want 2", name, len(msgs))
		}
		byKind := map[string]*rfc5424{}
		for _, b := range msgs {
			m, err := parseRFC5424(b)
			if err != nil {
				t.Fatalf("%s: not RFC 5424: %v\n%s", name, err, b)
			}
			byKind[m.msgid] = m
		}
		facility := 10
		if name == "tcp" {
			facility = 4
		}
		a, q := byKind[KindAlert], byKind[KindQuarantine]
		switch {
		case a == nil || q == nil:
			t.Fatalf("%s: kinds %v", name, byKind)
		case a.pri != facility*8+2 || a.host != testHost || a.app != "contain" || a.sdID != StructuredDataID:
			t.Errorf("%s: alert header: %+v", name, a)
		case a.params["container_name"] != `we"ird]name\` || a.params["mitre"] != "T1059,T1105" || a.params["comm"] != "wget" || a.params["score"] != "0.950" || a.params["pod"] != "web-7d4b9c8f6d-x2x9q" || a.params["namespace"] != "shop":
			t.Errorf("%s: alert structured data: %v", name, a.params)
		case !strings.Contains(a.msg, "exec.unseen"):
			t.Errorf("%s: alert msg %q", name, a.msg)
		case q.params["release_command"] != "contain release "+testContainer+" --reason 'REASON'" || q.params["snapshot"] != "2 processes, 1 sockets, 1 changed files" || q.params["reasons"] != "exec.unseen,net.download":
			t.Errorf("%s: quarantine structured data: %v", name, q.params)
		case time.Since(a.ts) > time.Minute:
			t.Errorf("%s: timestamp %v", name, a.ts)
		}
		// The listener has a message before its sender's write returns:
		// the counter follows the write.
		testenv.WaitFor(t, 5*time.Second, name+" deliveries counted", func() bool { d, _, _ := nf.count(name); return d >= 2 })
		if d, f, dr := nf.count(name); d != 2 || f != 0 || dr != 0 {
			t.Errorf("%s: delivered %v failed %v dropped %v", name, d, f, dr)
		}
	}
}

// FuzzFormatRFC5424: whatever a container names itself, the message
// parses and the structured data round-trips.
func FuzzFormatRFC5424(f *testing.F) {
	f.Add("web", "exec.unseen", "wget", `a"b]c\d`)
	f.Add("", "", "", "")
	f.Fuzz(func(t *testing.T, name, rule, comm, summary string) {
		n := &Notification{ID: "id", Kind: KindAlert, Time: time.Unix(1700000000, 0), Host: "h", Priority: "Critical", Rule: rule,
			Summary: summary, Container: Container{ID: "c", Name: name}, Process: &Process{Comm: comm}}
		m, err := parseRFC5424(FormatRFC5424(10, "contain", "h", n))
		if err != nil {
			t.Fatalf("%v", err)
		}
		if m.params["container_name"] != name || m.params["rule"] != rule || m.params["comm"] != comm {
			t.Fatalf("round trip: %v", m.params)
		}
	})
}
