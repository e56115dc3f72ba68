package collector

import (
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/containsec/contain/schemas/containv1"
)

// withOpened sets a file record's opened-file fields: identity, the
// walked path (leaf first) and its state, and the sensitive byte.
func withOpened(b []byte, ino uint64, kdev uint32, state uint8, leafFirst []byte, sensitive bool) []byte {
	le := binary.LittleEndian
	le.PutUint64(b[fileInoOff:], ino)
	le.PutUint32(b[fileDevOff:], kdev)
	le.PutUint16(b[fileResLenOff:], uint16(len(leafFirst)))
	if sensitive {
		b[fileSensOff] = 1
	}
	b[fileResStateOff] = state
	copy(b[fileResolvedOff:fileResolvedOff+pathMaxLen], leafFirst)
	return b
}

func withExeFlags(b []byte, flags uint32) []byte {
	binary.LittleEndian.PutUint32(b[execFlagsOff:], flags)
	return b
}

func TestDecodeFileOpened(t *testing.T) {
	// cat /tmp/sl (a symlink to /etc/shadow): the kernel opened /etc/shadow
	// on dev 8:1 (kernel encoding 8<<20|1).
	b := withOpened(fileRecord(7, 0, 0, 3, []byte("/tmp/sl"), nil), 1234, 8<<20|1, resolvedOK, []byte("shadow\x00etc\x00"), true)
	ev, err := decode(b, decodeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	f := ev.GetFile()
	if f.Op != containv1.File_OP_OPEN_READ || f.Path != "/tmp/sl" || f.ResolvedPath != "/etc/shadow" || !f.Sensitive ||
		f.Ino != 1234 || f.Dev != unix.Mkdev(8, 1) || f.NonUtf8 {
		t.Fatalf("opened file: %v", f)
	}
	// A cut walk: no resolved path; a failed open: no identity.
	ev, err = decode(withOpened(fileRecord(1, 1, 0, 3, []byte("/a"), nil), 7, 1, resolvedCut, []byte("x\x00"), false), decodeOptions{})
	if err != nil || ev.GetFile().ResolvedPath != "" || ev.GetFile().Ino != 7 {
		t.Fatalf("cut: %v %v", ev, err)
	}
	ev, err = decode(fileRecord(2, 0o101, 0, -2, []byte("/a"), nil), decodeOptions{})
	if f := ev.GetFile(); err != nil || f.ResolvedPath != "" || f.Ino != 0 || f.Dev != 0 || f.Sensitive {
		t.Fatalf("failed open: %v %v", ev, err)
	}
	// A hostile component in the walked path.
	ev, err = decode(withOpened(fileRecord(7, 0, 0, 3, []byte("/x"), nil), 1, 1, resolvedOK, []byte("a\xff\x00etc\x00"), true), decodeOptions{})
	if f := ev.GetFile(); err != nil || !f.NonUtf8 || f.ResolvedPath != `/etc/a\xff` {
		t.Fatalf("hostile resolved path: %v %v", ev, err)
	}
	// ftruncate: no path passed; the fd's file is the path.
	ev, err = decode(withOpened(fileRecord(11, 0, 0, 0, nil, nil), 9, 1, resolvedOK, []byte("t\x00tmp\x00"), false), decodeOptions{})
	if f := ev.GetFile(); err != nil || f.Op != containv1.File_OP_TRUNCATE || f.Path != "/tmp/t" || f.ResolvedPath != "/tmp/t" {
		t.Fatalf("ftruncate: %v %v", ev, err)
	}
	for _, op := range []containv1.File_Op{containv1.File_OP_MKNOD, containv1.File_OP_LINK, containv1.File_OP_SYMLINK, containv1.File_OP_TRUNCATE, containv1.File_OP_MKDIR} {
		ev, err := decode(fileRecord(uint8(op), 0, 0o20644, 0, []byte("/a"), []byte("/b")), decodeOptions{})
		if err != nil || ev.GetFile().Op != op || ev.GetFile().Mode != 0o20644 {
			t.Fatalf("op %v: %v %v", op, ev, err)
		}
	}
	for name, b := range map[string][]byte{
		"op past connect":    fileRecord(14, 0, 0, 0, nil, nil),
		"resolved state":     withOpened(fileRecord(7, 0, 0, 0, nil, nil), 1, 1, 3, nil, false),
		"resolved too long":  withOpened(fileRecord(7, 0, 0, 0, nil, nil), 1, 1, resolvedOK, make([]byte, pathMaxLen+1)[:pathMaxLen], false),
		"short with opened":  withOpened(fileRecord(7, 0, 0, 0, nil, nil), 1, 1, resolvedOK, nil, false)[:fileSize-1],
		"exe flags unknown":  withExeFlags(execRec{argc: 1}.bytes(), 16),
		"exe flags all bits": withExeFlags(execRec{argc: 1}.bytes(), 0xffffffff),
	} {
		if name == "resolved too long" {
			binary.LittleEndian.PutUint16(b[fileResLenOff:], pathMaxLen+1)
		}
		if _, err := decode(b, decodeOptions{}); !errors.Is(err, ErrMalformedRecord) {
			t.Errorf("%s: err = %v", name, err)
		}
	}
}

func TestDecodeExeFlags(t *testing.T) {
	for flags, want := range map[uint32][4]bool{
		0:                        {},
		exeMemfd:                 {true, false, false, false},
		exeDeleted | exeWritable: {false, true, true, false},
		exeStdioInet:             {false, false, false, true},
	} {
		ev, err := decode(withExeFlags(execRec{argc: 1, args: []byte("x\x00")}.bytes(), flags), decodeOptions{})
		if err != nil {
			t.Fatal(err)
		}
		x := ev.GetExec()
		if got := [4]bool{x.ExeMemfd, x.ExeDeleted, x.ExeWritable, x.StdioInet}; got != want {
			t.Errorf("flags %#x: %v, want %v", flags, got, want)
		}
	}
}

// A symlink in the container's root pointing at an absolute path resolves
// inside that root, never to the host's file; non-regular files, /proc and
// absent files are skipped; every passwd user's .ssh keys are found.
func TestResolveInRoot(t *testing.T) {
	root := t.TempDir()
	for _, d := range []string{"etc", "root/.ssh", "home/bob/.ssh", "dev", "outside"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	write := func(p, s string) {
		if err := os.WriteFile(filepath.Join(root, p), []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("etc/shadow.real", "x")
	write("home/bob/.ssh/id_rsa", "k")
	write("etc/passwd", "root:x:0:0::/root:/bin/sh\nbob:x:1:1::/home/bob:/bin/sh\nnobody:x:2:2::/:/bin/false\nbad\n")
	// /etc/shadow -> /etc/shadow.real (absolute: resolved in the root);
	// /etc/gshadow -> /etc/shadow.real/../../../../<host file>: ".." stops at the root.
	if err := os.Symlink("/etc/shadow.real", filepath.Join(root, "etc", "shadow")); err != nil {
		t.Fatal(err)
	}
	hostFile := filepath.Join(t.TempDir(), "hostsecret")
	if err := os.WriteFile(hostFile, []byte("h"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(hostFile, filepath.Join(root, "etc", "sudoers")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("../../../../../../.."+hostFile, filepath.Join(root, "etc", "gshadow")); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mkfifo(filepath.Join(root, "dev", "fifo"), 0o600); err != nil {
		t.Fatal(err)
	}
	ids, err := resolveInRoot(root, []string{"/etc/shadow", "/etc/sudoers", "/etc/gshadow", "/dev/fifo", "/proc/1/environ", "/etc/absent"})
	if err != nil {
		t.Fatal(err)
	}
	idOf := func(p string) fileID {
		var st unix.Stat_t
		if err := unix.Stat(p, &st); err != nil {
			t.Fatal(err)
		}
		return fileID{dev: kernelDev(st.Dev), ino: st.Ino}
	}
	want := []fileID{idOf(filepath.Join(root, "etc/shadow.real")), idOf(filepath.Join(root, "home/bob/.ssh/id_rsa"))}
	if len(ids) != len(want) || !slices.Contains(ids, want[0]) || !slices.Contains(ids, want[1]) {
		t.Fatalf("resolved %v, want %v", ids, want)
	}
	if slices.Contains(ids, idOf(hostFile)) {
		t.Fatal("a symlink in the root resolved to the host's file")
	}
}

func TestParsePasswdHomes(t *testing.T) {
	got := parsePasswdHomes([]byte("a:x:0:0::/root:/bin/sh\nb:x:1:1::/home/b/:/bin/sh\nc:x:2:2::/root:/x\nd:x:3:3::rel:/x\ne:x:4:4::/:/x\nshort:x\n"))
	if !slices.Equal(got, []string{"/root", "/home/b"}) {
		t.Fatalf("homes %v", got)
	}
}

func TestSensitiveNames(t *testing.T) {
	n := sensitiveNames([]string{"/etc/shadow", "/root/.ssh/id_rsa", "/proc/1/environ"})
	if n["shadow"] != nameByPath || n["id_rsa"] != nameByPath|nameSSH || n["environ"] != nameEnviron|nameByPath || n["config"] != nameSSH {
		t.Fatalf("names %v", n)
	}
}
