package forensics

import (
	"context"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

const tcpSample = `  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 12345 1 0000000000000000 100 0 0 10 0
   1: 0100007F:C350 0100007F:1F90 01 00000000:00000000 00:00000000 00000000     0        0 12346 1 0000000000000000 20 4 30 10 -1
`

const tcp6Sample = `  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000001000000:0016 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 777 1 0000000000000000 100 0 0 10 0
`

func TestParseNetTable(t *testing.T) {
	s, err := ParseNetTable("tcp", []byte(tcpSample))
	if err != nil {
		t.Fatal(err)
	}
	if len(s) != 2 || s[0].Local != "127.0.0.1:8080" || s[0].State != "LISTEN" || s[0].Inode != 12345 ||
		s[1].Remote != "127.0.0.1:8080" || s[1].State != "ESTABLISHED" {
		t.Fatalf("%+v", s)
	}
	s6, err := ParseNetTable("tcp6", []byte(tcp6Sample))
	if err != nil || len(s6) != 1 || s6[0].Local != "[::1]:22" {
		t.Fatalf("%+v %v", s6, err)
	}
}

func FuzzParseNetTable(f *testing.F) {
	f.Add("tcp", []byte(tcpSample))
	f.Add("tcp6", []byte(tcp6Sample))
	f.Add("udp", []byte("hdr\n 0: 00000000:0044 00000000:0000 07 0 0 0 0 0 0 99\n"))
	f.Add("tcp", []byte("hdr\n0: zz:1 0:0 0A a b c d e f\n"))
	f.Fuzz(func(t *testing.T, proto string, data []byte) {
		socks, _ := ParseNetTable(proto, data)
		for _, s := range socks {
			if !utf8.ValidString(s.State) || !utf8.ValidString(s.Local) {
				t.Fatalf("invalid utf-8 in %+v", s)
			}
		}
	})
}

func FuzzParseStat(f *testing.F) {
	f.Add([]byte("42 (sleep) S 1 42 42 0 -1"))
	f.Add([]byte("42 (a) b) (c) R 7 1"))
	f.Add([]byte("42 (\xff\xfe) S 1"))
	f.Add([]byte(")("))
	f.Fuzz(func(t *testing.T, data []byte) {
		comm, state, _ := ParseStat(data)
		if !utf8.ValidString(comm) || !utf8.ValidString(state) {
			t.Fatalf("invalid utf-8: %q %q", comm, state)
		}
		_ = SplitArgv(data, 64)
	})
}

func TestParseStatCommWithParens(t *testing.T) {
	comm, state, ppid := ParseStat([]byte("42 (a) b) R 7 1"))
	if comm != "a) b" || state != "R" || ppid != 7 {
		t.Fatalf("%q %q %d", comm, state, ppid)
	}
}

// TestTakeSelf snapshots this test process: it is real /proc, a real
// listening socket and a real changed file.
func TestTakeSelf(t *testing.T) {
	root := t.TempDir()
	since := time.Now().Add(-time.Second)
	_ = os.MkdirAll(filepath.Join(root, "proc"), 0o755)
	_ = os.WriteFile(filepath.Join(root, "proc", "ignored"), []byte("x"), 0o644)
	_ = os.WriteFile(filepath.Join(root, "new"), []byte("x"), 0o644)
	old := filepath.Join(root, "old")
	_ = os.WriteFile(old, []byte("x"), 0o644)
	past := time.Now().Add(-time.Hour)
	_ = os.Chtimes(old, past, past)

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	s := Take(context.Background(), Input{Pids: []int{os.Getpid()}, Rootfs: root, Since: since}, DefaultLimits())
	foundSock := false
	for _, sk := range s.Sockets {
		if sk.Local == ln.Addr().String() && sk.State == "LISTEN" && len(sk.Pids) == 1 && sk.Pids[0] == os.Getpid() {
			foundSock = true
		}
	}
	if !foundSock {
		t.Errorf("listening socket %s not in %+v", ln.Addr(), s.Sockets)
	}
	if len(s.Processes) != 1 || s.Processes[0].Pid != os.Getpid() || len(s.Processes[0].Argv) == 0 {
		t.Fatalf("processes %+v", s.Processes)
	}
	if !strings.Contains(s.Processes[0].Argv[0], "forensics.test") {
		t.Errorf("argv %q", s.Processes[0].Argv)
	}
	var paths []string
	for _, f := range s.ChangedFiles {
		paths = append(paths, f.Path)
	}
	// old's ctime is new (Chtimes changes ctime), so it is listed too: the
	// snapshot errs on the side of listing.
	if !strings.Contains(strings.Join(paths, ","), "/new") || strings.Contains(strings.Join(paths, ","), "/proc") {
		t.Errorf("changed files %v", paths)
	}
	if _, err := json.Marshal(s); err != nil {
		t.Fatal(err)
	}
	lim := DefaultLimits()
	lim.MaxFiles = 1
	s = Take(context.Background(), Input{Pids: []int{os.Getpid(), os.Getpid()}, Rootfs: root, Since: since}, lim)
	if len(s.ChangedFiles) != 1 || !strings.Contains(strings.Join(s.Truncated, ","), "files") {
		t.Errorf("limit not applied: %+v %v", s.ChangedFiles, s.Truncated)
	}
}
