package collector

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/containsec/contain/internal/testenv"
	"github.com/containsec/contain/schemas/containv1"
)

// netOf returns ev's network body when ev is ctr's and matches op.
func netOf(ev *containv1.Event, ctrID string, op containv1.Network_Op) *containv1.Network {
	if ev.Kind != containv1.Kind_KIND_NETWORK || ev.ContainerId != ctrID || ev.GetNetwork().GetOp() != op {
		return nil
	}
	return ev.GetNetwork()
}

func addrOf(b []byte) netip.Addr {
	a, _ := netip.AddrFromSlice(b)
	return a.Unmap()
}

// tcpListener accepts and closes connections until the test ends.
func tcpListener(t *testing.T, network, addr string) int {
	t.Helper()
	ln, err := net.Listen(network, addr)
	if err != nil {
		testenv.Unavailable(t, "listening on "+addr+": "+err.Error())
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	return ln.Addr().(*net.TCPAddr).Port
}

// freePort returns a TCP port nobody listens on (now).
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func TestIntegrationNetwork(t *testing.T) {
	_, js, _ := startCollector(t, nil)
	raw := consumeRaw(t, js)
	ctr := testenv.RunContainer(t, "colnet", testenv.ContainerSpec{HostNetwork: true})

	p4 := tcpListener(t, "tcp4", "127.0.0.1:0")
	p6 := tcpListener(t, "tcp6", "[::1]:0")
	closed := freePort(t)
	udp, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer udp.Close()
	pu := udp.LocalAddr().(*net.UDPAddr).Port
	lport := freePort(t)

	script := fmt.Sprintf(`nc 127.0.0.1 %d </dev/null; nc ::1 %d </dev/null; nc 127.0.0.1 %d </dev/null;
nslookup contain.test 127.0.0.1:%d >/dev/null 2>&1 </dev/null &
nc -l -p %d </dev/null >/dev/null 2>&1 &
exit 0`, p4, p6, closed, pu, lport)
	if out, err := ctr.Exec(15*time.Second, "/bin/sh", "-c", script); err != nil {
		t.Fatalf("runc exec: %v: %s", err, out)
	}
	// Connect to the container's listener once it listens.
	var client net.Conn
	raw.waitFor(t, 10*time.Second, "nc -l to listen", func(evs []*containv1.Event) bool {
		return slices.ContainsFunc(evs, func(ev *containv1.Event) bool { return netOf(ev, ctr.ID, containv1.Network_OP_LISTEN) != nil })
	})
	client, err = net.Dial("tcp4", "127.0.0.1:"+strconv.Itoa(lport))
	if err != nil {
		t.Fatal(err)
	}
	clientPort := client.LocalAddr().(*net.TCPAddr).Port
	client.Close()

	lo4, lo6 := netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("::1")
	type want struct {
		what  string
		match func(n *containv1.Network) bool
	}
	wants := []want{
		{"tcp4 connect to the host listener, ok", func(n *containv1.Network) bool {
			return n.Op == containv1.Network_OP_CONNECT && n.Protocol == containv1.Network_PROTOCOL_TCP && n.Family == 2 &&
				addrOf(n.RemoteAddr) == lo4 && n.RemotePort == uint32(p4) && n.Result == 0 && n.LocalPort != 0 && addrOf(n.LocalAddr) == lo4
		}},
		{"tcp6 connect to [::1], ok", func(n *containv1.Network) bool {
			return n.Op == containv1.Network_OP_CONNECT && n.Protocol == containv1.Network_PROTOCOL_TCP && n.Family == 10 &&
				addrOf(n.RemoteAddr) == lo6 && n.RemotePort == uint32(p6) && n.Result == 0 && n.LocalPort != 0
		}},
		{"tcp4 connect refused", func(n *containv1.Network) bool {
			return n.Op == containv1.Network_OP_CONNECT && n.Protocol == containv1.Network_PROTOCOL_TCP &&
				n.RemotePort == uint32(closed) && n.Result == -111 // ECONNREFUSED
		}},
		{"udp connect (nslookup)", func(n *containv1.Network) bool {
			return n.Op == containv1.Network_OP_CONNECT && n.Protocol == containv1.Network_PROTOCOL_UDP &&
				addrOf(n.RemoteAddr) == lo4 && n.RemotePort == uint32(pu) && n.Result == 0
		}},
		{"bind of nc -l", func(n *containv1.Network) bool {
			return n.Op == containv1.Network_OP_BIND && n.Protocol == containv1.Network_PROTOCOL_TCP && n.LocalPort == uint32(lport) && n.Result == 0
		}},
		{"listen of nc -l", func(n *containv1.Network) bool {
			return n.Op == containv1.Network_OP_LISTEN && n.Protocol == containv1.Network_PROTOCOL_TCP && n.LocalPort == uint32(lport) && n.Result == 0
		}},
		{"accept of the test's connection", func(n *containv1.Network) bool {
			return n.Op == containv1.Network_OP_ACCEPT && n.Protocol == containv1.Network_PROTOCOL_TCP && n.LocalPort == uint32(lport) &&
				n.RemotePort == uint32(clientPort) && addrOf(n.RemoteAddr) == lo4 && n.Result >= 0
		}},
	}
	raw.waitFor(t, 10*time.Second, "every network event", func(evs []*containv1.Event) bool {
		for _, w := range wants {
			if !slices.ContainsFunc(evs, func(ev *containv1.Event) bool {
				return ev.Kind == containv1.Kind_KIND_NETWORK && ev.ContainerId == ctr.ID && w.match(ev.GetNetwork())
			}) {
				return false
			}
		}
		return true
	})
	for _, ev := range raw.snapshot() {
		if n := ev.GetNetwork(); n != nil && ev.ContainerId == ctr.ID {
			if n.Proc.GetTgid() == 0 || len(n.LocalAddr) != 16 || len(n.RemoteAddr) != 16 {
				t.Fatalf("network event: %v", n)
			}
		}
	}
}

func TestIntegrationFiles(t *testing.T) {
	_, js, _ := startCollector(t, nil)
	raw := consumeRaw(t, js)
	ctr := testenv.RunContainer(t, "colfile", testenv.ContainerSpec{})
	// The second line uses relative paths from the cwd (/tmp), with "..";
	// the third, /bin/viafd, relative paths under a directory fd (os.Root:
	// openat, fchownat, renameat, unlinkat on a dirfd of /data) while its
	// cwd is /.
	buildStatic(t, viaDirfd, filepath.Join(ctr.Rootfs, "bin", "viafd"))
	script := `echo x > /etc/evil; mv /etc/evil /etc/evil2; rm /etc/evil2; touch /tmp/f; chmod 600 /tmp/f; chown 1:2 /tmp/f; cat /etc/shadow >/dev/null; cat /etc/passwd >/dev/null
cd /tmp && echo y > rel && chown 3:4 rel; mv rel ../etc/rel2 && rm ../etc/rel2
cd / && /bin/viafd; cd /etc && cat shadow >/dev/null && cat passwd >/dev/null; exit 0`
	if out, err := ctr.Exec(15*time.Second, "/bin/sh", "-c", script); err != nil {
		t.Fatalf("runc exec: %v: %s", err, out)
	}
	type want struct {
		what  string
		match func(f *containv1.File) bool
	}
	const oCreat, oTrunc, oWronly = 0o100, 0o1000, 0o1
	wants := []want{
		{"create /etc/evil", func(f *containv1.File) bool {
			return f.Op == containv1.File_OP_CREATE && f.Path == "/etc/evil" && f.Flags&(oCreat|oTrunc|oWronly) == oCreat|oTrunc|oWronly && f.Result >= 0
		}},
		{"rename /etc/evil to /etc/evil2", func(f *containv1.File) bool {
			return f.Op == containv1.File_OP_RENAME && f.Path == "/etc/evil" && f.NewPath == "/etc/evil2" && f.Result == 0
		}},
		{"unlink /etc/evil2", func(f *containv1.File) bool {
			return f.Op == containv1.File_OP_UNLINK && f.Path == "/etc/evil2" && f.Result == 0
		}},
		{"chmod 600 /tmp/f", func(f *containv1.File) bool {
			return f.Op == containv1.File_OP_CHMOD && f.Path == "/tmp/f" && f.Mode&0o7777 == 0o600 && f.Result == 0
		}},
		{"chown 1:2 /tmp/f refused (runc's default spec has no CAP_CHOWN)", func(f *containv1.File) bool {
			return f.Op == containv1.File_OP_CHOWN && f.Path == "/tmp/f" && f.Result == -1 && // EPERM
				f.Uid == 1 && f.Gid == 2 && !f.PathRelative
		}},
		{"create of relative rel in /tmp", func(f *containv1.File) bool {
			return f.Op == containv1.File_OP_CREATE && f.Path == "/tmp/rel" && f.PathRelative && !f.PathUnresolved
		}},
		{"chown 3:4 of relative rel", func(f *containv1.File) bool {
			return f.Op == containv1.File_OP_CHOWN && f.Path == "/tmp/rel" && f.Uid == 3 && f.Gid == 4 && f.PathRelative
		}},
		{"rename rel to ../etc/rel2 from /tmp", func(f *containv1.File) bool {
			return f.Op == containv1.File_OP_RENAME && f.Path == "/tmp/rel" && f.NewPath == "/etc/rel2" && f.Result == 0 &&
				!f.PathUnresolved && !f.NewPathUnresolved
		}},
		{"unlink ../etc/rel2 from /tmp", func(f *containv1.File) bool {
			return f.Op == containv1.File_OP_UNLINK && f.Path == "/etc/rel2" && f.Result == 0 && f.PathRelative
		}},
		{"create of fd-relative viafd under /data", func(f *containv1.File) bool {
			return f.Op == containv1.File_OP_CREATE && f.Path == "/data/viafd" && f.PathRelative && !f.PathUnresolved && f.Result >= 0
		}},
		{"chown 5:6 of fd-relative viafd", func(f *containv1.File) bool {
			return f.Op == containv1.File_OP_CHOWN && f.Path == "/data/viafd" && f.Uid == 5 && f.Gid == 6
		}},
		{"rename of fd-relative viafd to viafd2", func(f *containv1.File) bool {
			return f.Op == containv1.File_OP_RENAME && f.Path == "/data/viafd" && f.NewPath == "/data/viafd2" && f.Result == 0
		}},
		{"unlink of fd-relative viafd2", func(f *containv1.File) bool {
			return f.Op == containv1.File_OP_UNLINK && f.Path == "/data/viafd2" && f.Result == 0
		}},
		{"read of /etc/shadow", func(f *containv1.File) bool {
			return f.Op == containv1.File_OP_OPEN_READ && f.Path == "/etc/shadow" && f.Result >= 0 && !f.PathRelative
		}},
		{"read of shadow from /etc (relative)", func(f *containv1.File) bool {
			return f.Op == containv1.File_OP_OPEN_READ && f.Path == "/etc/shadow" && f.Result >= 0 && f.PathRelative
		}},
	}
	evs := raw.waitFor(t, 10*time.Second, "every file event", func(evs []*containv1.Event) bool {
		for _, w := range wants {
			if !slices.ContainsFunc(evs, func(ev *containv1.Event) bool {
				return ev.Kind == containv1.Kind_KIND_FILE && ev.ContainerId == ctr.ID && w.match(ev.GetFile())
			}) {
				return false
			}
		}
		return true
	})
	for _, ev := range evs {
		f := ev.GetFile()
		if f == nil || ev.ContainerId != ctr.ID {
			continue
		}
		if f.Op == containv1.File_OP_OPEN_READ && f.Path != "/etc/shadow" {
			t.Fatalf("read of a non-sensitive file reported: %v", f)
		}
		if f.Proc.GetTgid() == 0 || f.NonUtf8 {
			t.Fatalf("file event: %v", f)
		}
	}
}

// viaDirfd works in /data through a directory fd (os.Root uses the *at
// syscalls on it).
const viaDirfd = `package main

import "os"

func main() {
	r, err := os.OpenRoot("/data")
	if err != nil {
		panic(err)
	}
	f, err := r.Create("viafd")
	if err != nil {
		panic(err)
	}
	f.Close()
	_ = r.Chown("viafd", 5, 6) // EPERM without CAP_CHOWN: reported anyway
	if err := r.Rename("viafd", "viafd2"); err != nil {
		panic(err)
	}
	if err := r.Remove("viafd2"); err != nil {
		panic(err)
	}
}
`

// buildStatic compiles a one-file Go program to a static binary at dst.
func buildStatic(t testing.TB, src, dst string) {
	t.Helper()
	goBin := testenv.RequireCommand(t, "go")
	p := filepath.Join(t.TempDir(), "main.go")
	if err := os.WriteFile(p, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	build := exec.Command(goBin, "build", "-o", dst, p)
	build.Env = append(os.Environ(), "CGO_ENABLED=0", "GO111MODULE=off")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building %s: %v: %s", dst, err, out)
	}
}

// Fork, exec and exit of one process rebuild its place in the tree; a
// busybox applet re-executed through /proc/self/exe reports the real
// binary as exe, keeps argv[0], and has its cwd.
func TestIntegrationProcessTree(t *testing.T) {
	_, js, _ := startCollector(t, nil)
	raw := consumeRaw(t, js)
	ctr := testenv.RunContainer(t, "colproc", testenv.ContainerSpec{})
	if out, err := ctr.Exec(15*time.Second, "/bin/sh", "-c", "cd /tmp; sleep 0 & wait; exit 3"); err == nil || !strings.Contains(err.Error(), "exit status 3") {
		t.Fatalf("runc exec: %v: %s", err, out)
	}
	var shTgid, sleepTgid uint32
	raw.waitFor(t, 10*time.Second, "fork, exec and exit of sleep and the exit of sh", func(evs []*containv1.Event) bool {
		var sleepExec, sleepExit, shExit bool
		for _, ev := range evs {
			if ev.ContainerId != ctr.ID {
				continue
			}
			if x := ev.GetExec(); x != nil && slices.Equal(x.Argv, []string{"sleep", "0"}) {
				sleepTgid = x.Proc.Tgid
				shTgid = x.Proc.Ppid
				sleepExec = x.Exe == "/bin/busybox" && x.Cwd == "/tmp" && x.Filename == "/proc/self/exe"
				if !sleepExec {
					t.Logf("sleep exec: %v", x)
				}
			}
			if p := ev.GetProcess(); p != nil && p.Op == containv1.ProcessLifecycle_OP_EXIT {
				sleepExit = sleepExit || p.Proc.Tgid == sleepTgid && p.ExitCode == 0
				shExit = shExit || p.Proc.Tgid == shTgid && p.ExitCode == 3<<8
			}
		}
		return sleepExec && sleepExit && shExit
	})
	evs := raw.snapshot()
	if !slices.ContainsFunc(evs, func(ev *containv1.Event) bool {
		p := ev.GetProcess()
		return ev.ContainerId == ctr.ID && p != nil && p.Op == containv1.ProcessLifecycle_OP_FORK && p.Proc.Tgid == shTgid && p.ChildTgid == sleepTgid
	}) {
		t.Fatalf("no fork event from sh (%d) to sleep (%d)", shTgid, sleepTgid)
	}
	// exit_group never reaches sys_exit; it is counted at the exit.
	if !slices.ContainsFunc(evs, func(ev *containv1.Event) bool {
		s := ev.GetSyscall()
		return ev.ContainerId == ctr.ID && s != nil && s.Mode == containv1.Syscall_MODE_FIRST && s.Name == "exit_group"
	}) {
		t.Fatal("no first use of exit_group")
	}
}
