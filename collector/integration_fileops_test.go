package collector

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containsec/contain/internal/testenv"
	"github.com/containsec/contain/schemas/containv1"
)

// opsHelper does, inside a container, what busybox cannot: truncate(2),
// an open with O_TRUNC and no O_CREAT, an exec of a memfd, and packet and
// raw sockets.
const opsHelper = `package main

import (
	"os"
	"syscall"
	"unsafe"
)

func main() {
	switch os.Args[1] {
	case "truncate":
		if err := syscall.Truncate(os.Args[2], 1); err != nil {
			panic(err)
		}
		f, err := os.OpenFile(os.Args[2], os.O_WRONLY|os.O_TRUNC, 0)
		if err != nil {
			panic(err)
		}
		f.Close()
	case "memfd":
		bin, err := os.ReadFile("/bin/busybox")
		if err != nil {
			panic(err)
		}
		name := []byte("payload\x00")
		fd, _, errno := syscall.Syscall(319, uintptr(unsafe.Pointer(&name[0])), 0, 0) // memfd_create
		if errno != 0 {
			panic(errno)
		}
		if _, err := syscall.Write(int(fd), bin); err != nil {
			panic(err)
		}
		panic(syscall.Exec("/proc/self/fd/"+itoa(int(fd)), []string{"true"}, nil))
	case "sockets":
		// Refused without CAP_NET_RAW: reported with their result anyway.
		syscall.Socket(17, syscall.SOCK_RAW, 0x0300)                       // AF_PACKET, ETH_P_ALL
		syscall.Socket(syscall.AF_INET, syscall.SOCK_RAW|syscall.SOCK_CLOEXEC, 1) // ICMP
		if fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0); err == nil {
			syscall.Close(fd)
		}
	}
}

func itoa(n int) string {
	if n < 10 {
		return string(rune('0' + n))
	}
	return itoa(n/10) + string(rune('0'+n%10))
}
`

// fileOf returns ev's file body when ev is ctr's.
func fileOf(ev *containv1.Event, ctrID string) *containv1.File {
	if ev.Kind != containv1.Kind_KIND_FILE || ev.ContainerId != ctrID {
		return nil
	}
	return ev.GetFile()
}

// waitAnnounced waits for ctr's KIND_CONTAINER event: its sensitive files
// are registered by identity before it is published.
func waitAnnounced(t *testing.T, raw *rawEvents, ctr *testenv.Container) {
	t.Helper()
	raw.waitFor(t, 15*time.Second, "KIND_CONTAINER of "+ctr.ID, func(evs []*containv1.Event) bool {
		return slices.ContainsFunc(evs, func(ev *containv1.Event) bool {
			return ev.Kind == containv1.Kind_KIND_CONTAINER && ev.ContainerId == ctr.ID && ev.GetContainer().GetInitPid() != 0
		})
	})
}

type fileWant struct {
	what  string
	match func(f *containv1.File) bool
}

// waitFiles waits until every want matched one of ctr's file events.
func waitFiles(t *testing.T, raw *rawEvents, ctrID string, wants []fileWant) []*containv1.Event {
	t.Helper()
	var missing string
	t.Cleanup(func() {
		if t.Failed() && missing != "" {
			t.Logf("file event last missing: %s", missing)
		}
	})
	evs := raw.waitFor(t, 10*time.Second, "every file event", func(evs []*containv1.Event) bool {
		for _, w := range wants {
			if !slices.ContainsFunc(evs, func(ev *containv1.Event) bool {
				f := fileOf(ev, ctrID)
				return f != nil && w.match(f)
			}) {
				missing = w.what
				return false
			}
		}
		return true
	})
	missing = ""
	return evs
}

func TestIntegrationFileOpsNew(t *testing.T) {
	_, js, _ := startCollector(t, nil)
	raw := consumeRaw(t, js)
	ctr := testenv.RunContainer(t, "colfileops", testenv.ContainerSpec{})
	buildStatic(t, opsHelper, filepath.Join(ctr.Rootfs, "bin", "opshelper"))
	// mknod of a character device is refused (runc's default spec has no
	// CAP_MKNOD): reported with its result and mode anyway.
	script := `mknod /tmp/fifo p; mknod /dev/evil c 1 3; echo x > /tmp/t; ln /tmp/t /tmp/hard; ln -s /etc/passwd /tmp/soft
cd /tmp && ln -s ../etc/passwd relsoft && ln t relhard && mkdir /tmp/d && mkdir sub && /bin/opshelper truncate /tmp/t
truncate -s 0 /tmp/hard; exit 0`
	if out, err := ctr.Exec(15*time.Second, "/bin/sh", "-c", script); err != nil {
		t.Fatalf("runc exec: %v: %s", err, out)
	}
	const sIFMT, sIFIFO, sIFCHR, oTrunc, oCreat = 0o170000, 0o010000, 0o020000, 0o1000, 0o100
	wants := []fileWant{
		{"mknod fifo", func(f *containv1.File) bool {
			return f.Op == containv1.File_OP_MKNOD && f.Path == "/tmp/fifo" && f.Mode&sIFMT == sIFIFO && f.Result == 0
		}},
		{"mknod char device under /dev (refused)", func(f *containv1.File) bool {
			return f.Op == containv1.File_OP_MKNOD && f.Path == "/dev/evil" && f.Mode&sIFMT == sIFCHR && f.Result == -1
		}},
		{"link /tmp/t to /tmp/hard", func(f *containv1.File) bool {
			return f.Op == containv1.File_OP_LINK && f.Path == "/tmp/t" && f.NewPath == "/tmp/hard" && f.Result == 0
		}},
		{"symlink /tmp/soft to /etc/passwd", func(f *containv1.File) bool {
			return f.Op == containv1.File_OP_SYMLINK && f.Path == "/etc/passwd" && f.NewPath == "/tmp/soft" && f.Result == 0
		}},
		{"relative symlink: target as passed, link resolved from the cwd", func(f *containv1.File) bool {
			return f.Op == containv1.File_OP_SYMLINK && f.Path == "../etc/passwd" && f.NewPath == "/tmp/relsoft" &&
				!f.PathRelative && !f.NewPathUnresolved && f.Result == 0
		}},
		{"relative link", func(f *containv1.File) bool {
			return f.Op == containv1.File_OP_LINK && f.Path == "/tmp/t" && f.NewPath == "/tmp/relhard" && f.PathRelative && f.Result == 0
		}},
		{"mkdir /tmp/d", func(f *containv1.File) bool {
			return f.Op == containv1.File_OP_MKDIR && f.Path == "/tmp/d" && f.Mode&0o777 == 0o777 && f.Result == 0
		}},
		{"relative mkdir", func(f *containv1.File) bool {
			return f.Op == containv1.File_OP_MKDIR && f.Path == "/tmp/sub" && f.PathRelative && f.Result == 0
		}},
		{"ftruncate(2) by busybox truncate: the fd's file as path", func(f *containv1.File) bool {
			return f.Op == containv1.File_OP_TRUNCATE && f.Path == "/tmp/hard" && f.ResolvedPath == "/tmp/hard" && f.Flags == 0 && f.Ino != 0 && f.Result == 0
		}},
		{"truncate(2)", func(f *containv1.File) bool {
			return f.Op == containv1.File_OP_TRUNCATE && f.Path == "/tmp/t" && f.Flags == 0 && f.Result == 0
		}},
		{"open with O_TRUNC, no O_CREAT: OP_TRUNCATE with the open's flags and the opened file", func(f *containv1.File) bool {
			return f.Op == containv1.File_OP_TRUNCATE && f.Path == "/tmp/t" && f.Flags&oTrunc != 0 && f.Flags&oCreat == 0 &&
				f.Result >= 0 && f.ResolvedPath == "/tmp/t" && f.Ino != 0
		}},
		{"echo > /tmp/t: OP_CREATE with O_TRUNC and the opened file", func(f *containv1.File) bool {
			return f.Op == containv1.File_OP_CREATE && f.Path == "/tmp/t" && f.Flags&(oTrunc|oCreat) == oTrunc|oCreat &&
				f.ResolvedPath == "/tmp/t" && f.Ino != 0 && f.Dev != 0
		}},
	}
	waitFiles(t, raw, ctr.ID, wants)

	// The opened file's identity is the file's on the host.
	var st syscall.Stat_t
	if err := syscall.Stat(filepath.Join(ctr.Rootfs, "tmp", "t"), &st); err != nil {
		t.Fatal(err)
	}
	for _, ev := range raw.snapshot() {
		if f := fileOf(ev, ctr.ID); f != nil && f.Op == containv1.File_OP_CREATE && f.Path == "/tmp/t" {
			if f.Ino != st.Ino || f.Dev != st.Dev {
				t.Fatalf("identity of /tmp/t: ino %d dev %#x, stat says %d %#x", f.Ino, f.Dev, st.Ino, st.Dev)
			}
		}
	}
}

// /etc/shadow read through a hardlink, a symlink, a traversal and
// /proc/self/root is sensitive, with the path the kernel opened; so are
// keys under any .ssh and another process's environ; a benign file is not.
func TestIntegrationSensitiveByIdentity(t *testing.T) {
	c, js, _ := startCollector(t, nil)
	raw := consumeRaw(t, js)
	ctr := testenv.RunContainer(t, "colsens", testenv.ContainerSpec{})
	// A hardlink made before the start, under a name nothing matches.
	if err := os.Link(filepath.Join(ctr.Rootfs, "etc", "shadow"), filepath.Join(ctr.Rootfs, "data", "innocent")); err != nil {
		t.Fatal(err)
	}
	waitAnnounced(t, raw, ctr)
	var st syscall.Stat_t
	if err := syscall.Stat(filepath.Join(ctr.Rootfs, "etc", "shadow"), &st); err != nil {
		t.Fatal(err)
	}
	script := `ln /etc/shadow /tmp/copy; cat /tmp/copy >/dev/null; cat /data/innocent >/dev/null
ln -s /etc/shadow /tmp/sl; cat /tmp/sl >/dev/null
mkdir -p /data/a/b && cd /data/a/b && cat ../../../etc/shadow >/dev/null; cd /
cat /proc/self/root/etc/shadow >/dev/null
cat /etc/passwd >/dev/null; ln /etc/passwd /tmp/pw; cat /tmp/pw >/dev/null
mkdir -p /home/bob/.ssh && echo key > /home/bob/.ssh/id_rsa && cat /home/bob/.ssh/id_rsa >/dev/null
cat /proc/1/environ >/dev/null; cat /proc/self/environ >/dev/null; exit 0`
	if out, err := ctr.Exec(15*time.Second, "/bin/sh", "-c", script); err != nil {
		t.Fatalf("runc exec: %v: %s", err, out)
	}
	shadow := func(path, resolved string) func(f *containv1.File) bool {
		return func(f *containv1.File) bool {
			return f.Op == containv1.File_OP_OPEN_READ && f.Path == path && f.ResolvedPath == resolved && f.Sensitive &&
				f.Ino == st.Ino && f.Dev == st.Dev && f.Result >= 0
		}
	}
	wants := []fileWant{
		{"hardlink made in the container", shadow("/tmp/copy", "/tmp/copy")},
		{"hardlink made before the start", shadow("/data/innocent", "/data/innocent")},
		{"symlink", shadow("/tmp/sl", "/etc/shadow")},
		{"traversal from /data/a/b", shadow("/etc/shadow", "/etc/shadow")},
		{"/proc/self/root", shadow("/proc/self/root/etc/shadow", "/etc/shadow")},
		{"key written under a new user's .ssh", func(f *containv1.File) bool {
			return f.Op == containv1.File_OP_CREATE && f.Path == "/home/bob/.ssh/id_rsa" && f.Sensitive
		}},
		{"key read under a new user's .ssh", func(f *containv1.File) bool {
			return f.Op == containv1.File_OP_OPEN_READ && f.Path == "/home/bob/.ssh/id_rsa" && f.ResolvedPath == "/home/bob/.ssh/id_rsa" && f.Sensitive
		}},
		{"another process's environ", func(f *containv1.File) bool {
			return f.Op == containv1.File_OP_OPEN_READ && f.Path == "/proc/1/environ" && f.ResolvedPath == "/proc/1/environ" && f.Sensitive
		}},
	}
	evs := waitFiles(t, raw, ctr.ID, wants)
	for _, ev := range evs {
		f := fileOf(ev, ctr.ID)
		if f == nil {
			continue
		}
		if f.Op == containv1.File_OP_OPEN_READ && (strings.Contains(f.Path, "passwd") || f.Path == "/tmp/pw" || f.Path == "/proc/self/environ") {
			t.Fatalf("benign read reported: %v", f)
		}
		if f.Sensitive && f.Ino != st.Ino && !strings.Contains(f.Path, ".ssh") && !strings.HasSuffix(f.Path, "environ") {
			t.Fatalf("sensitive set on another file: %v", f)
		}
	}

	// The container's identities leave the kernel map when it goes.
	key := collectorInodeKey{Ino: st.Ino, Dev: kernelDev(st.Dev)}
	var v uint8
	m := c.coll.Maps["sensitive_inodes"]
	if err := m.Lookup(key, &v); err != nil {
		t.Fatalf("/etc/shadow's identity not in sensitive_inodes: %v", err)
	}
	ctr.Remove()
	deadline := time.Now().Add(10 * time.Second)
	for m.Lookup(key, &v) == nil {
		if time.Now().After(deadline) {
			t.Fatal("/etc/shadow's identity still in sensitive_inodes after its container was removed")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// overlayRootfs mounts an overlay whose lower layer is a busybox rootfs
// (the image) and returns the merged directory, unmounted at cleanup.
func overlayRootfs(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	lower := testenv.BusyboxRootfs(t, filepath.Join(dir, "image"))
	upper, work, merged := filepath.Join(dir, "upper"), filepath.Join(dir, "work"), filepath.Join(dir, "merged")
	for _, d := range []string{upper, work, merged} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if out, err := exec.Command("mount", "-t", "overlay", "overlay", "-o",
		"lowerdir="+lower+",upperdir="+upper+",workdir="+work, merged).CombinedOutput(); err != nil {
		testenv.Unavailable(t, "overlayfs: "+err.Error()+": "+string(out))
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", merged).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", merged, err, out)
		}
	})
	return merged
}

// A memfd binary, a deleted one, one written to a tmpfs /tmp and one
// written to the overlay's upper layer are flagged; the image's
// /bin/busybox is not.
func TestIntegrationExeFlags(t *testing.T) {
	_, js, _ := startCollector(t, nil)
	raw := consumeRaw(t, js)
	merged := overlayRootfs(t)
	buildStatic(t, opsHelper, filepath.Join(merged, "bin", "opshelper"))
	ctr := testenv.RunContainer(t, "colexeflags", testenv.ContainerSpec{Edit: func(cfg map[string]any) {
		cfg["root"].(map[string]any)["path"] = merged
		cfg["mounts"] = append(cfg["mounts"].([]any), map[string]any{
			"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": []any{"nosuid", "nodev", "mode=1777"},
		})
	}})
	script := `/bin/busybox true; cp /bin/busybox /tmp/drop && /tmp/drop true; cp /bin/busybox /bin/newbin && /bin/newbin true
cp /bin/busybox /data/gone && exec 3</data/gone && rm /data/gone && /proc/self/fd/3 true; /bin/opshelper memfd; exit 0`
	if out, err := ctr.Exec(15*time.Second, "/bin/sh", "-c", script); err != nil {
		t.Fatalf("runc exec: %v: %s", err, out)
	}
	type flags struct{ memfd, deleted, writable bool }
	want := map[string]flags{
		"/bin/busybox": {},
		"/tmp/drop":    {writable: true},
		"/bin/newbin":  {writable: true},
		// In the upper layer too.
		"/proc/self/fd/3": {deleted: true, writable: true},
	}
	got := map[string]flags{}
	var memfd *containv1.Exec
	raw.waitFor(t, 10*time.Second, "every exec", func(evs []*containv1.Event) bool {
		for _, ev := range evs {
			x := ev.GetExec()
			if x == nil || ev.ContainerId != ctr.ID {
				continue
			}
			if _, ok := want[x.Filename]; ok && len(x.Argv) == 2 && x.Argv[1] == "true" {
				got[x.Filename] = flags{x.ExeMemfd, x.ExeDeleted, x.ExeWritable}
			}
			if strings.HasPrefix(x.Filename, "/proc/self/fd/") && slices.Equal(x.Argv, []string{"true"}) {
				memfd = x
			}
		}
		return len(got) == len(want) && memfd != nil
	})
	for fn, w := range want {
		if got[fn] != w {
			t.Errorf("exec of %s: flags %+v, want %+v", fn, got[fn], w)
		}
	}
	if !memfd.ExeMemfd || memfd.ExeDeleted || memfd.ExeWritable {
		t.Errorf("memfd exec %s (exe %q): memfd %v deleted %v writable %v, want memfd only", memfd.Filename, memfd.Exe, memfd.ExeMemfd, memfd.ExeDeleted, memfd.ExeWritable)
	}
}

// socket() asking for a packet or raw socket arrives as a sensitive
// syscall with its arguments; a TCP socket does not.
func TestIntegrationPacketSockets(t *testing.T) {
	_, js, _ := startCollector(t, nil)
	raw := consumeRaw(t, js)
	ctr := testenv.RunContainer(t, "colsock", testenv.ContainerSpec{})
	buildStatic(t, opsHelper, filepath.Join(ctr.Rootfs, "bin", "opshelper"))
	if out, err := ctr.Exec(15*time.Second, "/bin/opshelper", "sockets"); err != nil {
		t.Fatalf("runc exec: %v: %s", err, out)
	}
	sensitive := func(ev *containv1.Event) *containv1.Syscall {
		s := ev.GetSyscall()
		if ev.ContainerId != ctr.ID || s == nil || s.Mode != containv1.Syscall_MODE_SENSITIVE || s.Name != "socket" {
			return nil
		}
		return s
	}
	evs := raw.waitFor(t, 10*time.Second, "packet and raw socket() calls", func(evs []*containv1.Event) bool {
		var packet, rawSock bool
		for _, ev := range evs {
			if s := sensitive(ev); s != nil {
				packet = packet || s.Args[0] == 17 && s.Args[1] == 3
				rawSock = rawSock || s.Args[0] == 2 && s.Args[1]&0xf == 3 && s.Args[2] == 1
			}
		}
		return packet && rawSock
	})
	for _, ev := range evs {
		if s := sensitive(ev); s != nil && s.Args[1]&0xf != 3 && s.Args[0] != 17 {
			t.Fatalf("a TCP socket() reported as sensitive: %v", s)
		}
	}
}
