package collector

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net/netip"
	"strings"
	"testing"
	"unsafe"

	"google.golang.org/protobuf/proto"

	"github.com/containsec/contain/internal/syscalls"
	"github.com/containsec/contain/schemas/containv1"
)

// The decoder's offsets must match the C layout bpf2go saw in the object.
func TestRecordLayoutMatchesBTF(t *testing.T) {
	var e collectorExecEvent
	var h collectorRecordHdr
	for _, c := range []struct {
		name      string
		got, want uintptr
	}{
		{"sizeof(record_hdr)", unsafe.Sizeof(h), hdrSize},
		{"hdr.cgroup_id", unsafe.Offsetof(h.CgroupId), 32},
		{"hdr.ktime_ns", unsafe.Offsetof(h.KtimeNs), 40},
		{"hdr.comm", unsafe.Offsetof(h.Comm), 48},
		{"hdr.origin", unsafe.Offsetof(h.Origin), hdrOriginOff},
		{"hdr.session_tgid", unsafe.Offsetof(h.SessionTgid), hdrSessionOff},
		{"sizeof(task_origin)", unsafe.Sizeof(collectorTaskOrigin{}), 8},
		{"exec.argc", unsafe.Offsetof(e.Argc), execBodyOffset},
		{"exec.filename", unsafe.Offsetof(e.Filename), execFilenameOff},
		{"exec.args", unsafe.Offsetof(e.Args), execArgsOff},
		{"sizeof(exec_event)", unsafe.Sizeof(e), execSize},
		{"sizeof(syscall_event)", unsafe.Sizeof(collectorSyscallEvent{}), syscallSize},
		{"syscall.args", unsafe.Offsetof(collectorSyscallEvent{}.Args), hdrSize + 8},
		{"syscall.ret", unsafe.Offsetof(collectorSyscallEvent{}.Ret), hdrSize + 56},
		{"exec.exe_len", unsafe.Offsetof(e.ExeLen), execExeLenOff},
		{"exec.exe", unsafe.Offsetof(e.Exe), execExeOff},
		{"exec.cwd", unsafe.Offsetof(e.Cwd), execCwdOff},
		{"sizeof(net_event)", unsafe.Sizeof(collectorNetEvent{}), netSize},
		{"net.local_addr", unsafe.Offsetof(collectorNetEvent{}.LocalAddr), netLocalAddrOf},
		{"net.remote_addr", unsafe.Offsetof(collectorNetEvent{}.RemoteAddr), netRemoteAddrO},
		{"net.local_port", unsafe.Offsetof(collectorNetEvent{}.LocalPort), hdrSize + 8},
		{"net.result", unsafe.Offsetof(collectorNetEvent{}.Result), hdrSize + 4},
		{"sizeof(file_event)", unsafe.Sizeof(collectorFileEvent{}), fileSize},
		{"file.flags", unsafe.Offsetof(collectorFileEvent{}.Flags), hdrSize + 4},
		{"file.result", unsafe.Offsetof(collectorFileEvent{}.Result), hdrSize + 12},
		{"file.path", unsafe.Offsetof(collectorFileEvent{}.Path), filePathOff},
		{"file.new_path", unsafe.Offsetof(collectorFileEvent{}.NewPath), fileNewPathOff},
		{"file.dir", unsafe.Offsetof(collectorFileEvent{}.Dir), fileDirOff},
		{"file.dir_len", unsafe.Offsetof(collectorFileEvent{}.DirLen), fileDirLenOff},
		{"file.uid", unsafe.Offsetof(collectorFileEvent{}.Uid), fileUIDOff},
		{"file.gid", unsafe.Offsetof(collectorFileEvent{}.Gid), fileUIDOff + 4},
		{"file.dir_state", unsafe.Offsetof(collectorFileEvent{}.DirState), hdrSize + 1},
		{"file.new_dir_state", unsafe.Offsetof(collectorFileEvent{}.NewDirState), hdrSize + 2},
		{"exec.exe_flags", unsafe.Offsetof(e.ExeFlags), execFlagsOff},
		{"file.ino", unsafe.Offsetof(collectorFileEvent{}.Ino), fileInoOff},
		{"file.dev", unsafe.Offsetof(collectorFileEvent{}.Dev), fileDevOff},
		{"file.resolved_len", unsafe.Offsetof(collectorFileEvent{}.ResolvedLen), fileResLenOff},
		{"file.sensitive", unsafe.Offsetof(collectorFileEvent{}.Sensitive), fileSensOff},
		{"file.resolved_state", unsafe.Offsetof(collectorFileEvent{}.ResolvedState), fileResStateOff},
		{"file.resolved", unsafe.Offsetof(collectorFileEvent{}.Resolved), fileResolvedOff},
		{"sizeof(lifecycle_event)", unsafe.Sizeof(collectorLifecycleEvent{}), procSize},
		{"lifecycle.exit_code", unsafe.Offsetof(collectorLifecycleEvent{}.ExitCode), hdrSize + 8},
	} {
		if c.got != c.want {
			t.Errorf("%s: C layout %d, decoder %d", c.name, c.got, c.want)
		}
	}
}

type execRec struct {
	flags              uint8
	pid, tgid, ppid    uint32
	nsPid              uint32
	uid, gid, euid     uint32
	cgroup, ktime      uint64
	comm               []byte
	argc               uint32
	filename           []byte
	args               []byte // as the kernel copies it
	argsLen, argsFull  uint32
	overrideArgsLength bool
}

func (r execRec) bytes() []byte {
	b := make([]byte, execSize)
	le := binary.LittleEndian
	b[0], b[1] = recordExec, r.flags
	for i, v := range []uint32{r.pid, r.tgid, r.ppid, r.nsPid, r.uid, r.gid, r.euid} {
		le.PutUint32(b[4+4*i:], v)
	}
	le.PutUint64(b[32:], r.cgroup)
	le.PutUint64(b[40:], r.ktime)
	copy(b[48:48+commLen], r.comm)
	args := r.args
	if len(args) > argsMaxLen {
		args = args[:argsMaxLen]
	}
	argsLen, full := uint32(len(args)), uint32(len(r.args))
	if r.overrideArgsLength {
		argsLen, full = r.argsLen, r.argsFull
	}
	le.PutUint32(b[execBodyOffset:], r.argc)
	le.PutUint32(b[execBodyOffset+4:], argsLen)
	le.PutUint32(b[execBodyOffset+8:], full)
	le.PutUint32(b[execBodyOffset+12:], uint32(len(r.filename)+1))
	copy(b[execFilenameOff:execFilenameOff+filenameMaxLen], r.filename)
	copy(b[execArgsOff:], args)
	return b
}

func TestDecodeExec(t *testing.T) {
	rec := execRec{
		pid: 11, tgid: 11, ppid: 7, nsPid: 3, uid: 1000, gid: 1001, euid: 0,
		cgroup: 4242, ktime: 123456789, comm: []byte("sh"), argc: 4,
		filename: []byte("/bin/sh"), args: []byte("/bin/sh\x00-c\x00\x00echo hi\x00"),
	}
	ev, err := decode(rec.bytes(), decodeOptions{maxArgs: 16})
	if err != nil {
		t.Fatal(err)
	}
	if ev.Kind != containv1.Kind_KIND_EXEC || ev.MonoNs != 123456789 || ev.CgroupId != 4242 {
		t.Fatalf("envelope: %+v", ev)
	}
	x := ev.GetExec()
	p := x.GetProc()
	if p.Pid != 11 || p.Tgid != 11 || p.Ppid != 7 || p.NsPid != 3 || p.Uid != 1000 || p.Gid != 1001 || p.Euid != 0 || p.Comm != "sh" {
		t.Fatalf("proc: %+v", p)
	}
	want := []string{"/bin/sh", "-c", "", "echo hi"}
	if x.Filename != "/bin/sh" || strings.Join(x.Argv, "|") != strings.Join(want, "|") || x.Argc != 4 || x.ArgvTruncated || x.NonUtf8 {
		t.Fatalf("exec: %+v", x)
	}
}

func TestDecodeHostileExec(t *testing.T) {
	// 1 MB of argv: the kernel copies 4096 bytes and flags it.
	huge := bytes.Repeat([]byte("A"), 1<<20)
	ev, err := decode(execRec{argc: 1, flags: flagArgsTruncated, args: huge, filename: []byte("/x")}.bytes(), decodeOptions{maxArgs: 1024})
	if err != nil {
		t.Fatal(err)
	}
	if x := ev.GetExec(); !x.ArgvTruncated || len(x.Argv) != 1 || len(x.Argv[0]) != argsMaxLen {
		t.Fatalf("1MB argv: truncated=%v n=%d len0=%d", x.ArgvTruncated, len(x.Argv), len(x.Argv[0]))
	}

	// 10k entries: bounded to maxArgs and flagged.
	many := bytes.Repeat([]byte("a\x00"), 10000)
	ev, err = decode(execRec{argc: 10000, flags: flagArgsTruncated, args: many}.bytes(), decodeOptions{maxArgs: 100})
	if err != nil {
		t.Fatal(err)
	}
	if x := ev.GetExec(); !x.ArgvTruncated || len(x.Argv) != 100 || x.Argc != 10000 {
		t.Fatalf("10k argv: truncated=%v n=%d argc=%d", x.ArgvTruncated, len(x.Argv), x.Argc)
	}

	// Non-UTF-8 filename, comm and argument.
	ev, err = decode(execRec{argc: 1, comm: []byte("c\xff"), filename: []byte("/tmp/\xfe\xff"), args: []byte("\xc3\x28\x00")}.bytes(), decodeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	x := ev.GetExec()
	if !x.NonUtf8 || x.Filename != `/tmp/\xfe\xff` || x.Argv[0] != `\xc3(` || x.Proc.Comm != `c\xff` {
		t.Fatalf("non-utf8: %+v", x)
	}

	// Kernel says more args exist than were copied.
	ev, _ = decode(execRec{argc: 1, args: []byte("x\x00"), argsLen: 2, argsFull: 9000, overrideArgsLength: true}.bytes(), decodeOptions{})
	if !ev.GetExec().ArgvTruncated {
		t.Fatal("args_full_len > args_len not flagged")
	}
}

func TestDecodeMalformed(t *testing.T) {
	for name, b := range map[string][]byte{
		"empty":        nil,
		"short header": make([]byte, 10),
		"unknown type": append([]byte{99}, make([]byte, 100)...),
		"short exec":   append([]byte{recordExec}, make([]byte, 100)...),
		"args_len too big": func() []byte {
			return execRec{argsLen: argsMaxLen + 1, overrideArgsLength: true}.bytes()
		}(),
	} {
		if _, err := decode(b, decodeOptions{}); !errors.Is(err, ErrMalformedRecord) {
			t.Errorf("%s: err = %v, want ErrMalformedRecord", name, err)
		}
	}
}

func syscallRecord(nr, mode uint32, args ...uint64) []byte {
	b := make([]byte, syscallSize)
	b[0] = recordSyscall
	binary.LittleEndian.PutUint64(b[32:], 77)
	binary.LittleEndian.PutUint32(b[hdrSize:], nr)
	binary.LittleEndian.PutUint32(b[hdrSize+4:], mode)
	for i, a := range args {
		binary.LittleEndian.PutUint64(b[hdrSize+8+8*i:], a)
	}
	return b
}

func TestDecodeSyscall(t *testing.T) {
	chroot := nrOf(t, "chroot")
	ev, err := decode(syscallRecord(chroot, 2, 0x7fff0000, 0, 0, 0, 0, 9), decodeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	s := ev.GetSyscall()
	if ev.Kind != containv1.Kind_KIND_SYSCALL || ev.CgroupId != 77 || s.Nr != chroot || s.Name != "chroot" ||
		s.Mode != containv1.Syscall_MODE_SENSITIVE || len(s.Args) != 6 || s.Args[0] != 0x7fff0000 || s.Args[5] != 9 {
		t.Fatalf("sensitive: %v", ev)
	}
	ev, err = decode(syscallRecord(nrOf(t, "execve"), 1), decodeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if s := ev.GetSyscall(); s.Mode != containv1.Syscall_MODE_FIRST || s.Name != "execve" || len(s.Args) != 0 {
		t.Fatalf("first: %v", ev)
	}
	for name, b := range map[string][]byte{
		"nr out of range": syscallRecord(512, 1),
		"bad mode":        syscallRecord(1, 3),
		"short":           syscallRecord(1, 1)[:syscallSize-1],
	} {
		if _, err := decode(b, decodeOptions{}); !errors.Is(err, ErrMalformedRecord) {
			t.Errorf("%s: err = %v", name, err)
		}
	}
}

func netRecord(op, proto uint8, family uint16, result int32, lport, rport uint16, laddr, raddr []byte) []byte {
	b := make([]byte, netSize)
	le := binary.LittleEndian
	b[0] = recordNet
	le.PutUint64(b[32:], 77)
	b[hdrSize], b[hdrSize+1] = op, proto
	le.PutUint16(b[hdrSize+2:], family)
	le.PutUint32(b[hdrSize+4:], uint32(result))
	le.PutUint16(b[hdrSize+8:], lport)
	le.PutUint16(b[hdrSize+10:], rport)
	copy(b[netLocalAddrOf:netLocalAddrOf+16], laddr)
	copy(b[netRemoteAddrO:netRemoteAddrO+16], raddr)
	return b
}

func fileRecord(op uint8, flags, mode uint32, result int32, path, newPath []byte) []byte {
	b := make([]byte, fileSize)
	le := binary.LittleEndian
	b[0] = recordFile
	b[hdrSize] = op
	le.PutUint32(b[hdrSize+4:], flags)
	le.PutUint32(b[hdrSize+8:], mode)
	le.PutUint32(b[hdrSize+12:], uint32(result))
	copy(b[filePathOff:filePathOff+pathMaxLen], path)
	copy(b[fileNewPathOff:fileNewPathOff+pathMaxLen], newPath)
	return b
}

// withDir sets a file record's base directory (leafFirst as the kernel
// writes it: components leaf first, NUL-terminated) and dir states.
func withDir(b []byte, state, newState uint8, leafFirst []byte) []byte {
	b[hdrSize+1], b[hdrSize+2] = state, newState
	binary.LittleEndian.PutUint32(b[fileDirLenOff:], uint32(len(leafFirst)))
	copy(b[fileDirOff:fileDirOff+pathMaxLen], leafFirst)
	return b
}

func TestDecodeFileRelative(t *testing.T) {
	le := binary.LittleEndian
	// chown("f", 1, 2) in /tmp/work.
	b := withDir(fileRecord(6, 0, 0, -1, []byte("f"), nil), dirResolved, dirAbsolute, []byte("work\x00tmp\x00"))
	le.PutUint32(b[fileUIDOff:], 1)
	le.PutUint32(b[fileUIDOff+4:], 2)
	ev, err := decode(b, decodeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if f := ev.GetFile(); f.Path != "/tmp/work/f" || !f.PathRelative || f.PathUnresolved || f.Uid != 1 || f.Gid != 2 {
		t.Fatalf("relative chown: %v", f)
	}
	for _, tc := range []struct {
		name              string
		path, newPath     string
		state, newState   uint8
		dir               string
		wantPath, wantNew string
		unres, newUnres   bool
	}{
		{"dotdot cannot climb above the root", "../../../etc/shadow", "", dirResolved, 0, "tmp\x00", "/etc/shadow", "", false, false},
		{"cwd is the root", "x", "", dirResolved, 0, "", "/x", "", false, false},
		{"AT_EMPTY_PATH names the dirfd itself", "", "", dirResolved, 0, "f\x00tmp\x00", "/tmp/f", "", false, false},
		{"rename within the cwd", "a", "b", dirResolved, dirResolved, "d\x00", "/d/a", "/d/b", false, false},
		{"new path under another dirfd", "a", "b", dirResolved, dirUnresolved, "d\x00", "/d/a", "b", false, true},
		{"absolute new path", "a", "/x/b", dirResolved, dirAbsolute, "d\x00", "/d/a", "/x/b", false, false},
		{"unresolved", "a/b", "", dirUnresolved, 0, "", "a/b", "", true, false},
		{"absolute", "/etc/passwd", "", dirAbsolute, 0, "junk\x00", "/etc/passwd", "", false, false},
	} {
		ev, err := decode(withDir(fileRecord(3, 0, 0, 0, []byte(tc.path), []byte(tc.newPath)), tc.state, tc.newState, []byte(tc.dir)), decodeOptions{})
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		f := ev.GetFile()
		if f.Path != tc.wantPath || f.NewPath != tc.wantNew || f.PathUnresolved != tc.unres || f.NewPathUnresolved != tc.newUnres ||
			f.PathRelative != (tc.state != dirAbsolute) {
			t.Errorf("%s: %v", tc.name, f)
		}
	}
	// A non-UTF-8 directory is escaped and flagged.
	ev, err = decode(withDir(fileRecord(1, 1, 0, 0, []byte("x"), nil), dirResolved, 0, []byte("\xff\x00")), decodeOptions{})
	if f := ev.GetFile(); err != nil || f.Path != `/\xff/x` || !f.NonUtf8 {
		t.Fatalf("non-UTF-8 dir: %v, %v", f, err)
	}
	for name, b := range map[string][]byte{
		"bad dir state":     withDir(fileRecord(1, 0, 0, 0, []byte("x"), nil), 3, 0, nil),
		"bad new dir state": withDir(fileRecord(1, 0, 0, 0, []byte("x"), nil), 0, 7, nil),
		"dir_len too large": func() []byte {
			b := withDir(fileRecord(1, 0, 0, 0, []byte("x"), nil), dirResolved, 0, nil)
			le.PutUint32(b[fileDirLenOff:], pathMaxLen+1)
			return b
		}(),
	} {
		if _, err := decode(b, decodeOptions{}); !errors.Is(err, ErrMalformedRecord) {
			t.Errorf("%s: err = %v", name, err)
		}
	}
}

func procRecord(op, child uint32, code int32) []byte {
	b := make([]byte, procSize)
	le := binary.LittleEndian
	b[0] = recordProc
	le.PutUint32(b[hdrSize:], op)
	le.PutUint32(b[hdrSize+4:], child)
	le.PutUint32(b[hdrSize+8:], uint32(code))
	return b
}

func TestDecodeNetwork(t *testing.T) {
	ev, err := decode(netRecord(1, 6, 2, -111, 40000, 80, []byte{127, 0, 0, 1}, []byte{10, 0, 0, 9}), decodeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	n := ev.GetNetwork()
	if ev.Kind != containv1.Kind_KIND_NETWORK || ev.CgroupId != 77 || n.Op != containv1.Network_OP_CONNECT ||
		n.Protocol != containv1.Network_PROTOCOL_TCP || n.Family != 2 || n.Result != -111 || n.LocalPort != 40000 || n.RemotePort != 80 ||
		netip.AddrFrom16([16]byte(n.RemoteAddr)) != netip.MustParseAddr("::ffff:10.0.0.9") ||
		netip.AddrFrom16([16]byte(n.LocalAddr)) != netip.MustParseAddr("::ffff:127.0.0.1") {
		t.Fatalf("connect: %v", n)
	}
	v6 := netip.MustParseAddr("2001:db8::1").As16()
	ev, err = decode(netRecord(2, 17, 10, 5, 53, 999, v6[:], v6[:]), decodeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if n := ev.GetNetwork(); n.Protocol != containv1.Network_PROTOCOL_UDP || n.Op != containv1.Network_OP_ACCEPT || [16]byte(n.RemoteAddr) != v6 {
		t.Fatalf("v6: %v", n)
	}
	for name, b := range map[string][]byte{
		"bad op":     netRecord(9, 6, 2, 0, 0, 0, nil, nil),
		"bad family": netRecord(1, 6, 1, 0, 0, 0, nil, nil),
		"short":      netRecord(1, 6, 2, 0, 0, 0, nil, nil)[:netSize-1],
	} {
		if _, err := decode(b, decodeOptions{}); !errors.Is(err, ErrMalformedRecord) {
			t.Errorf("%s: err = %v", name, err)
		}
	}
}

func TestDecodeFile(t *testing.T) {
	ev, err := decode(fileRecord(3, 0, 0, 0, []byte("/etc/evil"), []byte("/etc/evil2")), decodeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if f := ev.GetFile(); ev.Kind != containv1.Kind_KIND_FILE || f.Op != containv1.File_OP_RENAME || f.Path != "/etc/evil" || f.NewPath != "/etc/evil2" || f.NonUtf8 {
		t.Fatalf("rename: %v", f)
	}
	// A hostile path: non-UTF-8 and filling the whole field without a NUL.
	long := bytes.Repeat([]byte{'a', 0xff}, pathMaxLen/2)
	ev, err = decode(fileRecord(1, 0o1101, 0o644, -13, long, nil), decodeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	f := ev.GetFile()
	if !f.NonUtf8 || !strings.HasPrefix(f.Path, `a\xffa`) || f.Result != -13 || f.Flags != 0o1101 || f.Mode != 0o644 {
		t.Fatalf("hostile path: %v", f)
	}
	for name, b := range map[string][]byte{
		"bad op": fileRecord(0, 0, 0, 0, nil, nil),
		"short":  fileRecord(1, 0, 0, 0, nil, nil)[:fileSize-1],
	} {
		if _, err := decode(b, decodeOptions{}); !errors.Is(err, ErrMalformedRecord) {
			t.Errorf("%s: err = %v", name, err)
		}
	}
}

func TestDecodeProcessAndPaths(t *testing.T) {
	ev, err := decode(procRecord(2, 0, 3<<8), decodeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if p := ev.GetProcess(); ev.Kind != containv1.Kind_KIND_PROCESS || p.Op != containv1.ProcessLifecycle_OP_EXIT || p.ExitCode != 768 {
		t.Fatalf("exit: %v", p)
	}
	if _, err := decode(procRecord(3, 0, 0), decodeOptions{}); !errors.Is(err, ErrMalformedRecord) {
		t.Fatalf("bad op: %v", err)
	}
	for _, c := range []struct {
		in   string
		want string
	}{
		{"busybox\x00bin\x00", "/bin/busybox"},
		{"", "/"},
		{"tmp\x00", "/tmp"},
	} {
		b := make([]byte, pathMaxLen)
		copy(b, c.in)
		if got, _ := leafFirstPath(b, uint32(len(c.in))); got != c.want {
			t.Errorf("leafFirstPath(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

func TestLeafFirstKey(t *testing.T) {
	for p, want := range map[string]string{
		"/etc/shadow":                 "shadow\x00etc\x00",
		"/proc/1/environ":             "environ\x001\x00proc\x00",
		"/etc//x/":                    "x\x00etc\x00",
		"/":                           "",
		"/" + strings.Repeat("a", 63): "",
	} {
		key, ok := leafFirstKey(p)
		got := strings.TrimRight(string(key[:]), "\x00")
		if want == "" {
			if ok {
				t.Errorf("%q: key %q, want none", p, got)
			}
			continue
		}
		if !ok || got+"\x00" != want {
			t.Errorf("%q: key %q (%v), want %q", p, got, ok, want)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	if err := DefaultConfig().Validate(); err != nil {
		t.Fatalf("default config: %v", err)
	}
	for key, edit := range map[string]func(*Config){
		"collector.host":               func(c *Config) { c.Host = "" },
		"collector.queue_len":          func(c *Config) { c.QueueLen = 0 },
		"collector.ring_buffer_bytes":  func(c *Config) { c.RingBufferBytes = 3 << 20 },
		"collector.sensitive_syscalls": func(c *Config) { c.SensitiveSyscalls = []string{"nope"} },
		"collector.count_interval":     func(c *Config) { c.CountInterval = 0 },
		"collector.sensitive_files":    func(c *Config) { c.SensitiveFiles = []string{"etc/shadow"} },
		"collector.rate_burst":         func(c *Config) { c.RateBurst = 0 },
		"collector.rate_per_sec":       func(c *Config) { c.RatePerSec = -1 },
		"collector.poll_interval":      func(c *Config) { c.PollInterval = 0 },
		"collector.wakeup_kinds":       func(c *Config) { c.WakeupKinds = []string{"exec", "net"} },
	} {
		c := DefaultConfig()
		edit(&c)
		if err := c.Validate(); err == nil || !strings.HasPrefix(err.Error(), key+":") {
			t.Errorf("%s: err = %v", key, err)
		}
	}
}

func FuzzDecode(f *testing.F) {
	f.Add(syscallRecord(161, 2, 1, 2, 3, 4, 5, 6))
	f.Add(syscallRecord(0, 1))
	f.Add(execRec{argc: 2, comm: []byte("sh"), filename: []byte("/bin/sh"), args: []byte("sh\x00-c\x00")}.bytes())
	f.Add(execRec{argc: 1, flags: 0xff, args: bytes.Repeat([]byte{0xff}, 5000)}.bytes())
	f.Add([]byte{recordExec})
	f.Add(make([]byte, hdrSize))
	f.Add(netRecord(1, 6, 2, -111, 40000, 80, []byte{127, 0, 0, 1}, []byte{10, 0, 0, 1}))
	f.Add(netRecord(2, 17, 10, 0, 1, 2, bytes.Repeat([]byte{0xfe}, 16), bytes.Repeat([]byte{1}, 16)))
	f.Add(fileRecord(3, 0, 0, 0, []byte("/etc/a\xff"), []byte("/etc/b")))
	f.Add(fileRecord(7, 0, 0, 3, bytes.Repeat([]byte{0xc3}, 300), nil))
	f.Add(withDir(fileRecord(3, 0, 0, 0, []byte("../a"), []byte("b")), dirResolved, dirResolved, []byte("x\x00y\x00")))
	f.Add(withDir(fileRecord(6, 0, 0, 0, []byte("a"), nil), dirUnresolved, 0, nil))
	f.Add(procRecord(1, 42, 0))
	f.Add(procRecord(2, 0, 768))
	f.Add(withOrigin(procRecord(1, 42, 0), 3, 4242))
	f.Add(withOrigin(syscallRecord(165, 2, 1), 2, 0))
	f.Add(withOrigin(execRec{argc: 1, filename: []byte("/bin/sh")}.bytes(), 1, 0))
	f.Add(withOpened(fileRecord(7, 0, 0, 3, []byte("/tmp/sl"), nil), 1234, 8<<20|1, resolvedOK, []byte("shadow\x00etc\x00"), true))
	f.Add(withOpened(fileRecord(11, 0o1001, 0, 3, []byte("t"), nil), 1, 1, resolvedCut, []byte("\xff\x00"), false))
	f.Add(fileRecord(10, 0, 0, 0, []byte("../etc/passwd"), []byte("/tmp/l")))
	f.Add(fileRecord(8, 0, 0o20600, -1, []byte("/dev/evil"), nil))
	f.Add(withExeFlags(execRec{argc: 1, args: []byte("true\x00")}.bytes(), exeMemfd))
	f.Fuzz(func(t *testing.T, b []byte) {
		ev, err := decode(b, decodeOptions{maxArgs: 64})
		if err != nil {
			return
		}
		if ev.GetExec() == nil {
			// Bounded by construction: fixed-size fields.
			if f := ev.GetFile(); f != nil && (len(f.Path) > 4*pathMaxLen || len(f.NewPath) > 4*pathMaxLen || len(f.ResolvedPath) > 4*pathMaxLen) {
				t.Fatalf("path of %d bytes", len(f.Path))
			}
			if n := ev.GetNetwork(); n != nil && (len(n.LocalAddr) != 16 || len(n.RemoteAddr) != 16) {
				t.Fatalf("addresses: %v", n)
			}
			if _, err := proto.Marshal(ev); err != nil {
				t.Fatal(err)
			}
			return
		}
		x := ev.GetExec()
		if x == nil {
			t.Fatal("nil body without error")
		}
		if len(x.Argv) > 64 {
			t.Fatalf("%d args, bound 64", len(x.Argv))
		}
		total := 0
		for _, a := range x.Argv {
			total += len(a)
		}
		// \xNN escapes expand a byte to at most 4.
		if total > 4*argsMaxLen {
			t.Fatalf("argv of %d bytes", total)
		}
		// Must be marshalable: protobuf rejects invalid UTF-8 strings.
		if _, err := proto.Marshal(ev); err != nil {
			t.Fatal(err)
		}
	})
}

func TestDefaultConfigHoldsForMetadata(t *testing.T) {
	c := DefaultConfig()
	if c.MetadataWait <= 0 || c.MaxHeldEvents <= 0 || c.CountInterval <= 0 || !c.Syscalls || len(c.SensitiveSyscalls) == 0 {
		t.Fatalf("defaults: %+v", c)
	}
}

// withOrigin sets a record header's origin and session_tgid.
func withOrigin(b []byte, origin uint8, session uint32) []byte {
	b[hdrOriginOff] = origin
	binary.LittleEndian.PutUint32(b[hdrSessionOff:], session)
	return b
}

func TestDecodeOrigin(t *testing.T) {
	for _, c := range []struct {
		rec     []byte
		origin  containv1.Origin
		session uint32
	}{
		{withOrigin(execRec{argc: 1, filename: []byte("/bin/sh")}.bytes(), 1, 0), containv1.Origin_ORIGIN_CONTAINER, 0},
		{withOrigin(syscallRecord(165, 2, 1), 2, 0), containv1.Origin_ORIGIN_RUNTIME, 0},
		{withOrigin(procRecord(1, 42, 0), 3, 4242), containv1.Origin_ORIGIN_EXEC_SESSION, 4242},
		{withOrigin(fileRecord(1, 1, 0, 0, []byte("/x"), nil), 0, 0), containv1.Origin_ORIGIN_UNSPECIFIED, 0},
		{withOrigin(netRecord(1, 6, 2, 0, 1, 2, []byte{1, 2, 3, 4}, []byte{1, 2, 3, 4}), 1, 7), containv1.Origin_ORIGIN_CONTAINER, 7},
	} {
		ev, err := decode(c.rec, decodeOptions{})
		if err != nil {
			t.Fatal(err)
		}
		var p *containv1.Process
		switch b := ev.GetBody().(type) {
		case *containv1.Event_Exec:
			p = b.Exec.Proc
		case *containv1.Event_Syscall:
			p = b.Syscall.Proc
		case *containv1.Event_Process:
			p = b.Process.Proc
		case *containv1.Event_File:
			p = b.File.Proc
		case *containv1.Event_Network:
			p = b.Network.Proc
		}
		if p.GetOrigin() != c.origin || p.GetSessionTgid() != c.session {
			t.Errorf("%s: origin %v session %d, want %v %d", ev.Kind, p.GetOrigin(), p.GetSessionTgid(), c.origin, c.session)
		}
	}
	if _, err := decode(withOrigin(procRecord(1, 42, 0), 4, 0), decodeOptions{}); !errors.Is(err, ErrMalformedRecord) || !strings.Contains(err.Error(), "origin 4") {
		t.Errorf("origin 4: %v, want a malformed record naming the origin", err)
	}
}

// nrOf is name's syscall number on this architecture (internal/syscalls).
func nrOf(t testing.TB, name string) uint32 {
	t.Helper()
	nr, ok := syscalls.Number(name)
	if !ok {
		t.Fatalf("no syscall %q on this architecture", name)
	}
	return nr
}
