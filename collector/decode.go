package collector

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/containsec/contain/schemas/containv1"
)

// Record layout of collector/bpf/common.h. decode_test.go checks these
// against the bpf2go-generated types.
const (
	recordExec    = 1
	recordSyscall = 2

	flagArgsTruncated     = 1 << 0
	flagFilenameTruncated = 1 << 1
	flagArgsFault         = 1 << 2

	hdrSize         = 64
	commLen         = 16
	filenameMaxLen  = 512
	argsMaxLen      = 4096
	execBodyOffset  = hdrSize
	execFilenameOff = hdrSize + 16
	execArgsOff     = execFilenameOff + filenameMaxLen
	execSize        = execArgsOff + argsMaxLen

	syscallSize = hdrSize + 8 + 6*8
	syscallMax  = 512
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

func decodeHeader(b []byte) header {
	le := binary.LittleEndian
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
		},
		commNonUTF8: !ok,
		cgroupID:    le.Uint64(b[32:]),
		ktime:       le.Uint64(b[40:]),
	}
}

func decodeExec(b []byte, o decodeOptions) (*containv1.Event, error) {
	if len(b) < execSize {
		return nil, fmt.Errorf("%w: exec record of %d bytes, want %d", ErrMalformedRecord, len(b), execSize)
	}
	le := binary.LittleEndian
	h := decodeHeader(b)
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
			NonUtf8:       nonUTF8,
		}},
	}, nil
}

func decodeSyscall(b []byte) (*containv1.Event, error) {
	if len(b) < syscallSize {
		return nil, fmt.Errorf("%w: syscall record of %d bytes, want %d", ErrMalformedRecord, len(b), syscallSize)
	}
	le := binary.LittleEndian
	h := decodeHeader(b)
	nr := le.Uint32(b[hdrSize:])
	mode := containv1.Syscall_Mode(le.Uint32(b[hdrSize+4:]))
	if nr >= syscallMax {
		return nil, fmt.Errorf("%w: syscall %d out of range", ErrMalformedRecord, nr)
	}
	s := &containv1.Syscall{Proc: h.proc, Mode: mode, Nr: nr, Name: syscallNames[nr]}
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

// syscallNumber returns the number of a syscall name on this architecture.
func syscallNumber(name string) (uint32, bool) {
	for nr, n := range syscallNames {
		if n == name {
			return nr, true
		}
	}
	return 0, false
}

// cstring is b up to its first NUL.
func cstring(b []byte) []byte {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		return b[:i]
	}
	return b
}
