package collector

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"path"

	"golang.org/x/sys/unix"

	"github.com/containsec/contain/internal/syscalls"
	"github.com/containsec/contain/schemas/containv1"
)

// Record layout of collector/bpf/common.h. decode_test.go checks these
// against the bpf2go-generated types.
const (
	recordExec    = 1
	recordSyscall = 2
	recordNet     = 3
	recordFile    = 4
	recordProc    = 5

	flagArgsTruncated     = 1 << 0
	flagFilenameTruncated = 1 << 1
	flagArgsFault         = 1 << 2
	flagPathTruncated     = 1 << 3

	hdrSize         = 72
	hdrOriginOff    = 2
	hdrSessionOff   = 64
	commLen         = 16
	filenameMaxLen  = 512
	argsMaxLen      = 4096
	execBodyOffset  = hdrSize
	execFilenameOff = hdrSize + 16
	execArgsOff     = execFilenameOff + filenameMaxLen
	execExeLenOff   = execArgsOff + argsMaxLen
	execExeOff      = execExeLenOff + 8
	execCwdOff      = execExeOff + pathMaxLen
	execFlagsOff    = execCwdOff + pathMaxLen
	execSize        = execFlagsOff + 8
	pathMaxLen      = 256

	syscallSize = hdrSize + 8 + 6*8 + 8
	syscallMax  = syscalls.Max

	netSize        = hdrSize + 48
	netLocalAddrOf = hdrSize + 16
	netRemoteAddrO = hdrSize + 32

	fileDirLenOff   = hdrSize + 20
	fileUIDOff      = hdrSize + 24
	filePathOff     = hdrSize + 32
	fileNewPathOff  = filePathOff + pathMaxLen
	fileDirOff      = fileNewPathOff + pathMaxLen
	fileInoOff      = fileDirOff + pathMaxLen
	fileDevOff      = fileInoOff + 8
	fileResLenOff   = fileDevOff + 4
	fileSensOff     = fileResLenOff + 2
	fileResStateOff = fileSensOff + 1
	fileResolvedOff = fileResStateOff + 1
	fileSize        = fileResolvedOff + pathMaxLen

	procSize = hdrSize + 16

	recordSeq = 6
	seqSize   = 32 // struct seq_event
)

// ErrMalformedRecord wraps every decoding failure.
var ErrMalformedRecord = errors.New("malformed record")

// decodeOptions bound what a record may expand to.
type decodeOptions struct {
	maxArgs int
}

// decode turns one ring-buffer record into an event. It is pure and safe on
// any input: hostile strings are bounded and made valid UTF-8, with the
// event's flags saying so. It fills kind, mono_ns, cgroup_id and the body;
// the caller sets id, wall time, host and container fields.
func decode(b []byte, o decodeOptions) (*containv1.Event, error) {
	if len(b) < hdrSize {
		return nil, fmt.Errorf("%w: %d bytes, shorter than a header", ErrMalformedRecord, len(b))
	}
	switch b[0] {
	case recordExec:
		return decodeExec(b, o)
	case recordSyscall:
		return decodeSyscall(b)
	case recordNet:
		return decodeNet(b)
	case recordFile:
		return decodeFile(b)
	case recordProc:
		return decodeProc(b)
	default:
		return nil, fmt.Errorf("%w: unknown type %d", ErrMalformedRecord, b[0])
	}
}

type header struct {
	typ, flags  uint8
	proc        *containv1.Process
	commNonUTF8 bool
	cgroupID    uint64
	ktime       uint64
}

// decodeOrigin checks a record's origin byte (common.h ORIGIN_*).
func decodeOrigin(o uint8) (containv1.Origin, error) {
	if o > uint8(containv1.Origin_ORIGIN_EXEC_SESSION) {
		return 0, fmt.Errorf("%w: origin %d", ErrMalformedRecord, o)
	}
	return containv1.Origin(o), nil
}

func decodeHeader(b []byte) (header, error) {
	le := binary.LittleEndian
	origin, err := decodeOrigin(b[hdrOriginOff])
	if err != nil {
		return header{}, err
	}
	comm, ok, _ := containv1.SafeString(cstring(b[48:48+commLen]), commLen)
	return header{
		typ:   b[0],
		flags: b[1],
		proc: &containv1.Process{
			Pid:   le.Uint32(b[4:]),
			Tgid:  le.Uint32(b[8:]),
			Ppid:  le.Uint32(b[12:]),
			NsPid: le.Uint32(b[16:]),
			Uid:   le.Uint32(b[20:]),
			Gid:   le.Uint32(b[24:]),
			Euid:  le.Uint32(b[28:]),
			Comm:  comm,

			Origin:      origin,
			SessionTgid: le.Uint32(b[hdrSessionOff:]),
		},
		commNonUTF8: !ok,
		cgroupID:    le.Uint64(b[32:]),
		ktime:       le.Uint64(b[40:]),
	}, nil
}

func decodeExec(b []byte, o decodeOptions) (*containv1.Event, error) {
	if len(b) < execSize {
		return nil, fmt.Errorf("%w: exec record of %d bytes, want %d", ErrMalformedRecord, len(b), execSize)
	}
	le := binary.LittleEndian
	h, err := decodeHeader(b)
	if err != nil {
		return nil, err
	}
	argc := le.Uint32(b[execBodyOffset:])
	argsLen := le.Uint32(b[execBodyOffset+4:])
	fullLen := le.Uint32(b[execBodyOffset+8:])
	if argsLen > argsMaxLen {
		return nil, fmt.Errorf("%w: args_len %d > %d", ErrMalformedRecord, argsLen, argsMaxLen)
	}
	filename, fnOK, _ := containv1.SafeString(cstring(b[execFilenameOff:execFilenameOff+filenameMaxLen]), filenameMaxLen)

	maxArgs := o.maxArgs
	if maxArgs <= 0 {
		maxArgs = 1024
	}
	args := b[execArgsOff : execArgsOff+int(argsLen)]
	truncated := h.flags&(flagArgsTruncated|flagArgsFault) != 0 || fullLen > argsLen
	nonUTF8 := !fnOK || h.commNonUTF8
	var argv []string
	for len(args) > 0 {
		if len(argv) == maxArgs {
			truncated = true
			break
		}
		var arg []byte
		if i := bytes.IndexByte(args, 0); i >= 0 {
			arg, args = args[:i], args[i+1:]
		} else {
			arg, args = args, nil // cut by the kernel bound
		}
		s, ok, _ := containv1.SafeString(arg, 0)
		nonUTF8 = nonUTF8 || !ok
		argv = append(argv, s)
	}
	if uint32(len(argv)) < argc {
		truncated = true
	}
	exe, exeOK := leafFirstPath(b[execExeOff:execExeOff+pathMaxLen], le.Uint32(b[execExeLenOff:]))
	cwd, cwdOK := leafFirstPath(b[execCwdOff:execCwdOff+pathMaxLen], le.Uint32(b[execExeLenOff+4:]))
	nonUTF8 = nonUTF8 || !exeOK || !cwdOK
	exeFlags := le.Uint32(b[execFlagsOff:])
	if exeFlags&^(exeMemfd|exeDeleted|exeWritable|exeStdioInet) != 0 {
		return nil, fmt.Errorf("%w: exe flags %#x", ErrMalformedRecord, exeFlags)
	}
	return &containv1.Event{
		Kind:     containv1.Kind_KIND_EXEC,
		MonoNs:   h.ktime,
		CgroupId: h.cgroupID,
		Body: &containv1.Event_Exec{Exec: &containv1.Exec{
			Proc:          h.proc,
			Filename:      filename,
			Argv:          argv,
			ArgvTruncated: truncated,
			Argc:          argc,
			Exe:           exe,
			Cwd:           cwd,
			NonUtf8:       nonUTF8,
			ExeMemfd:      exeFlags&exeMemfd != 0,
			ExeDeleted:    exeFlags&exeDeleted != 0,
			ExeWritable:   exeFlags&exeWritable != 0,
			StdioInet:     exeFlags&exeStdioInet != 0,
		}},
	}, nil
}

func decodeSyscall(b []byte) (*containv1.Event, error) {
	if len(b) < syscallSize {
		return nil, fmt.Errorf("%w: syscall record of %d bytes, want %d", ErrMalformedRecord, len(b), syscallSize)
	}
	le := binary.LittleEndian
	h, err := decodeHeader(b)
	if err != nil {
		return nil, err
	}
	nr := le.Uint32(b[hdrSize:])
	mode := containv1.Syscall_Mode(le.Uint32(b[hdrSize+4:]))
	if nr >= syscallMax {
		return nil, fmt.Errorf("%w: syscall %d out of range", ErrMalformedRecord, nr)
	}
	s := &containv1.Syscall{Proc: h.proc, Mode: mode, Nr: nr, Name: syscalls.Name(nr), Ret: int64(le.Uint64(b[hdrSize+56:]))}
	switch mode {
	case containv1.Syscall_MODE_SENSITIVE:
		s.Args = make([]uint64, 6)
		for i := range s.Args {
			s.Args[i] = le.Uint64(b[hdrSize+8+8*i:])
		}
	case containv1.Syscall_MODE_FIRST:
	default:
		return nil, fmt.Errorf("%w: syscall mode %d", ErrMalformedRecord, mode)
	}
	return &containv1.Event{
		Kind:     containv1.Kind_KIND_SYSCALL,
		MonoNs:   h.ktime,
		CgroupId: h.cgroupID,
		Body:     &containv1.Event_Syscall{Syscall: s},
	}, nil
}

// cstring is b up to its first NUL.
func cstring(b []byte) []byte {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		return b[:i]
	}
	return b
}

// leafFirstPath turns the kernel's path components, leaf first and each
// NUL-terminated ("busybox\0bin\0"), into "/bin/busybox". n is the bytes
// the kernel wrote; zero is the root.
func leafFirstPath(b []byte, n uint32) (string, bool) {
	if n == 0 {
		return "/", true
	}
	if int(n) < len(b) {
		b = b[:n]
	}
	parts := bytes.Split(bytes.TrimSuffix(b, []byte{0}), []byte{0})
	var sb []byte
	for i := len(parts) - 1; i >= 0; i-- {
		sb = append(sb, '/')
		sb = append(sb, parts[i]...)
	}
	s, ok, _ := containv1.SafeString(sb, 0)
	return s, ok
}

// netProtocols maps IPPROTO_* to the schema's protocol.
var netProtocols = map[uint8]containv1.Network_Protocol{
	6:  containv1.Network_PROTOCOL_TCP,
	17: containv1.Network_PROTOCOL_UDP,
}

func decodeNet(b []byte) (*containv1.Event, error) {
	if len(b) < netSize {
		return nil, fmt.Errorf("%w: network record of %d bytes, want %d", ErrMalformedRecord, len(b), netSize)
	}
	le := binary.LittleEndian
	h, err := decodeHeader(b)
	if err != nil {
		return nil, err
	}
	op := containv1.Network_Op(b[hdrSize])
	if op < containv1.Network_OP_CONNECT || op > containv1.Network_OP_LISTEN {
		return nil, fmt.Errorf("%w: network op %d", ErrMalformedRecord, op)
	}
	family := uint32(le.Uint16(b[hdrSize+2:]))
	addr := func(off int) []byte {
		a := make([]byte, 16)
		switch family {
		case 2: // AF_INET: IPv4-mapped
			a[10], a[11] = 0xff, 0xff
			copy(a[12:], b[off:off+4])
		case 10:
			copy(a, b[off:off+16])
		}
		return a
	}
	if family != 2 && family != 10 {
		return nil, fmt.Errorf("%w: address family %d", ErrMalformedRecord, family)
	}
	return &containv1.Event{
		Kind:     containv1.Kind_KIND_NETWORK,
		MonoNs:   h.ktime,
		CgroupId: h.cgroupID,
		Body: &containv1.Event_Network{Network: &containv1.Network{
			Proc:       h.proc,
			Op:         op,
			Protocol:   netProtocols[b[hdrSize+1]],
			Family:     family,
			Result:     int32(le.Uint32(b[hdrSize+4:])),
			LocalPort:  uint32(le.Uint16(b[hdrSize+8:])),
			RemotePort: uint32(le.Uint16(b[hdrSize+10:])),
			LocalAddr:  addr(netLocalAddrOf),
			RemoteAddr: addr(netRemoteAddrO),
		}},
	}, nil
}

func decodeFile(b []byte) (*containv1.Event, error) {
	if len(b) < fileSize {
		return nil, fmt.Errorf("%w: file record of %d bytes, want %d", ErrMalformedRecord, len(b), fileSize)
	}
	le := binary.LittleEndian
	h, err := decodeHeader(b)
	if err != nil {
		return nil, err
	}
	op := containv1.File_Op(b[hdrSize])
	if op < containv1.File_OP_OPEN_WRITE || op > containv1.File_OP_CONNECT {
		return nil, fmt.Errorf("%w: file op %d", ErrMalformedRecord, op)
	}
	dirState, newDirState := b[hdrSize+1], b[hdrSize+2]
	if dirState > dirUnresolved || newDirState > dirUnresolved {
		return nil, fmt.Errorf("%w: file dir state %d/%d", ErrMalformedRecord, dirState, newDirState)
	}
	rawPath := cstring(b[filePathOff : filePathOff+pathMaxLen])
	rawNew := cstring(b[fileNewPathOff : fileNewPathOff+pathMaxLen])
	dirOK := true
	if dirState == dirResolved || newDirState == dirResolved {
		n := le.Uint32(b[fileDirLenOff:])
		if n > pathMaxLen {
			return nil, fmt.Errorf("%w: file dir of %d bytes", ErrMalformedRecord, n)
		}
		dir, ok := leafFirstPath(b[fileDirOff:fileDirOff+pathMaxLen], n)
		dirOK = ok
		if dirState == dirResolved {
			rawPath = joinDir(dir, rawPath)
		}
		if newDirState == dirResolved {
			rawNew = joinDir(dir, rawNew)
		}
	}
	path, pOK, _ := containv1.SafeString(rawPath, 0)
	newPath, nOK, _ := containv1.SafeString(rawNew, 0)
	var resolved string
	resOK := true
	switch b[fileResStateOff] {
	case resolvedNone, resolvedCut:
	case resolvedOK:
		n := uint32(le.Uint16(b[fileResLenOff:]))
		if n > pathMaxLen {
			return nil, fmt.Errorf("%w: file resolved path of %d bytes", ErrMalformedRecord, n)
		}
		resolved, resOK = leafFirstPath(b[fileResolvedOff:fileResolvedOff+pathMaxLen], n)
	default:
		return nil, fmt.Errorf("%w: file resolved state %d", ErrMalformedRecord, b[fileResStateOff])
	}
	if op == containv1.File_OP_TRUNCATE && len(rawPath) == 0 {
		path = resolved // ftruncate: the fd's file is the path
	}
	var dev uint64
	if kdev := le.Uint32(b[fileDevOff:]); kdev != 0 {
		dev = unix.Mkdev(kdev>>20, kdev&(1<<20-1)) // the kernel's MKDEV to stat's st_dev
	}
	return &containv1.Event{
		Kind:     containv1.Kind_KIND_FILE,
		MonoNs:   h.ktime,
		CgroupId: h.cgroupID,
		Body: &containv1.Event_File{File: &containv1.File{
			Proc:    h.proc,
			Op:      op,
			Path:    path,
			NewPath: newPath,
			Flags:   le.Uint32(b[hdrSize+4:]),
			Mode:    le.Uint32(b[hdrSize+8:]),
			Result:  int32(le.Uint32(b[hdrSize+12:])),
			NonUtf8: !pOK || !nOK || !dirOK || !resOK || h.commNonUTF8,
			Uid:     le.Uint32(b[fileUIDOff:]),
			Gid:     le.Uint32(b[fileUIDOff+4:]),

			PathRelative:      dirState != dirAbsolute,
			PathUnresolved:    dirState == dirUnresolved,
			NewPathUnresolved: newDirState == dirUnresolved,

			ResolvedPath: resolved,
			Ino:          le.Uint64(b[fileInoOff:]),
			Dev:          dev,
			Sensitive:    b[fileSensOff] != 0,
		}},
	}, nil
}

// file_event resolved states (common.h RESOLVED_*).
const (
	resolvedNone = 0
	resolvedOK   = 1
	resolvedCut  = 2
)

// exec_event exe flags (common.h EXE_*).
const (
	exeMemfd     = 1
	exeDeleted   = 2
	exeWritable  = 4
	exeStdioInet = 8
)

// file_event dir states (common.h DIR_*).
const (
	dirAbsolute   = 0
	dirResolved   = 1
	dirUnresolved = 2
)

// joinDir joins a relative path as passed to a syscall with the absolute
// directory it was resolved from, lexically (".." cannot climb above "/").
func joinDir(dir string, rel []byte) []byte {
	return []byte(path.Join(dir, string(rel)))
}

func decodeProc(b []byte) (*containv1.Event, error) {
	if len(b) < procSize {
		return nil, fmt.Errorf("%w: process record of %d bytes, want %d", ErrMalformedRecord, len(b), procSize)
	}
	le := binary.LittleEndian
	h, err := decodeHeader(b)
	if err != nil {
		return nil, err
	}
	op := containv1.ProcessLifecycle_Op(le.Uint32(b[hdrSize:]))
	if op != containv1.ProcessLifecycle_OP_FORK && op != containv1.ProcessLifecycle_OP_EXIT {
		return nil, fmt.Errorf("%w: process op %d", ErrMalformedRecord, op)
	}
	return &containv1.Event{
		Kind:     containv1.Kind_KIND_PROCESS,
		MonoNs:   h.ktime,
		CgroupId: h.cgroupID,
		Body: &containv1.Event_Process{Process: &containv1.ProcessLifecycle{
			Proc:      h.proc,
			Op:        op,
			ChildTgid: le.Uint32(b[hdrSize+4:]),
			ExitCode:  int32(le.Uint32(b[hdrSize+8:])),
		}},
	}, nil
}

// seqRecord is one sequence-mode record (struct seq_event): a syscall of
// a selected container's thread, read from the seq_events ring buffer.
type seqRecord struct {
	nr          uint32
	tid         uint32
	tgid        uint32
	cgroupID    uint64
	ktime       uint64
	origin      containv1.Origin
	sessionTgid uint32
}

func (r seqRecord) key() seqKey {
	return seqKey{cgid: r.cgroupID, tgid: r.tgid, origin: r.origin, sessionTgid: r.sessionTgid}
}

// decodeSeq decodes a seq_events record. It is pure and safe on any input.
func decodeSeq(b []byte) (seqRecord, error) {
	if len(b) < seqSize {
		return seqRecord{}, fmt.Errorf("%w: sequence record of %d bytes, want %d", ErrMalformedRecord, len(b), seqSize)
	}
	if b[0] != recordSeq {
		return seqRecord{}, fmt.Errorf("%w: type %d in the sequence ring", ErrMalformedRecord, b[0])
	}
	le := binary.LittleEndian
	origin, err := decodeOrigin(b[1])
	if err != nil {
		return seqRecord{}, err
	}
	r := seqRecord{
		nr:          uint32(le.Uint16(b[2:])),
		tid:         le.Uint32(b[4:]),
		tgid:        le.Uint32(b[8:]),
		cgroupID:    le.Uint64(b[16:]),
		ktime:       le.Uint64(b[24:]),
		origin:      origin,
		sessionTgid: le.Uint32(b[12:]),
	}
	if r.nr >= syscallMax {
		return seqRecord{}, fmt.Errorf("%w: syscall %d out of range", ErrMalformedRecord, r.nr)
	}
	return r, nil
}
