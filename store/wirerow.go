package store

import (
	"unsafe"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/containsec/contain/internal/bus"
	"github.com/containsec/contain/schemas/containv1"
)

// Rows straight from the wire (design 021, "Store on the wire"). A batch
// that bus.ScanBatch accepts (every field well-formed, with its schema's
// wire type, every string UTF-8: what Decode accepts) is not decoded: each
// event's bytes are read field by field into flatEvent, the values the
// events table's columns take, strings and bytes pointing into the
// message's payload as with bus.DecodeAliased. readWire leaves to the
// decoder (returns false) what it does not read: the bodies of the other
// tables (alert, action), container and commit bodies, and a oneof whose
// member changes within the event (the decoder then replaces the body).
// On what it reads it gives what the decoded event gives (flatOf;
// FuzzWireRows).

// Field numbers of containv1.Event and its bodies that readWire reads.
const (
	evID            = 1
	evHost          = 2
	evContainerID   = 3
	evContainerName = 4
	evImageRef      = 5
	evImageDigest   = 6
	evMonoNs        = 7
	evWallNs        = 8
	evKind          = 9
	evSchemaVersion = 10
	evCgroupID      = 11
	evProfileRef    = 12
	evExec          = 20
	evSyscall       = 21
	evNetwork       = 22
	evFile          = 23
	evAlert         = 24
	evAction        = 25
	evLoss          = 26
	evProcess       = 28

	bodyProc = 1 // Process proc = 1 in every body that has one
)

// flatEvent is what the events table reads of an event: the envelope and
// the body's fields, one body at a time (the others zero).
type flatEvent struct {
	body                                                 protowire.Number // the oneof's field number; 0: none
	kind                                                 containv1.Kind   // as sent (kindOf derives it from body)
	host, containerID, containerName, imageRef, imageDig string
	profileRef                                           string
	monoNs, cgroupID                                     uint64
	schemaVersion                                        uint32

	pid, tgid, ppid, nsPid, uid, gid, euid uint32
	comm                                   string

	nonUTF8 bool // exec's or file's

	execFilename, execCwd, execExe string
	execArgv                       []string
	execArgc                       uint32
	execArgvTruncated              bool

	procOp        int32
	procChildTgid uint32
	procExitCode  int32

	sysMode  int32
	sysNr    uint32
	sysName  string
	sysArgs  []uint64
	sysRet   int64
	sysCount uint64
	sysSeq   []uint32

	netOp, netProto        int32
	netFamily              uint32
	localAddr, remoteAddr  []byte
	localPort, remotePort  uint32
	netResult              int32
	fileOp                 int32
	filePath, fileNewPath  string
	fileFlags, fileMode    uint32
	fileResult             int32
	fileUID, fileGID       uint32
	filePathRelative       bool
	filePathUnresolved     bool
	fileNewPathUnresolved  bool
	lossSource, lossReason string
	lossCount              uint64
}

// rowKind is the event's kind, from the body when the envelope omits it
// (kindOf's rule).
func (f *flatEvent) rowKind() containv1.Kind {
	if f.kind != containv1.Kind_KIND_UNSPECIFIED {
		return f.kind
	}
	switch f.body {
	case evExec:
		return containv1.Kind_KIND_EXEC
	case evSyscall:
		return containv1.Kind_KIND_SYSCALL
	case evNetwork:
		return containv1.Kind_KIND_NETWORK
	case evFile:
		return containv1.Kind_KIND_FILE
	case evLoss:
		return containv1.Kind_KIND_LOSS
	case evProcess:
		return containv1.Kind_KIND_PROCESS
	}
	return containv1.Kind_KIND_UNSPECIFIED
}

// flatOf is flatEvent of a decoded event; it reads every body (the
// container body's columns read the event itself).
func flatOf(ev *containv1.Event, f *flatEvent) {
	*f = flatEvent{
		kind: ev.GetKind(), host: ev.GetHost(), containerID: ev.GetContainerId(), containerName: ev.GetContainerName(),
		imageRef: ev.GetImageRef(), imageDig: ev.GetImageDigest(), profileRef: ev.GetProfileRef(),
		monoNs: ev.GetMonoNs(), cgroupID: ev.GetCgroupId(), schemaVersion: ev.GetSchemaVersion(),
	}
	var p *containv1.Process
	switch b := ev.GetBody().(type) {
	case *containv1.Event_Exec:
		e := b.Exec
		f.body, p = evExec, e.GetProc()
		f.execFilename, f.execArgv, f.execArgc, f.execArgvTruncated = e.GetFilename(), e.GetArgv(), e.GetArgc(), e.GetArgvTruncated()
		f.execCwd, f.execExe, f.nonUTF8 = e.GetCwd(), e.GetExe(), e.GetNonUtf8()
	case *containv1.Event_Syscall:
		s := b.Syscall
		f.body, p = evSyscall, s.GetProc()
		f.sysMode, f.sysNr, f.sysName, f.sysArgs = int32(s.GetMode()), s.GetNr(), s.GetName(), s.GetArgs()
		f.sysRet, f.sysCount, f.sysSeq = s.GetRet(), s.GetCount(), s.GetSequence()
	case *containv1.Event_Network:
		n := b.Network
		f.body, p = evNetwork, n.GetProc()
		f.netOp, f.netProto, f.netFamily = int32(n.GetOp()), int32(n.GetProtocol()), n.GetFamily()
		f.localAddr, f.localPort, f.remoteAddr, f.remotePort = n.GetLocalAddr(), n.GetLocalPort(), n.GetRemoteAddr(), n.GetRemotePort()
		f.netResult = n.GetResult()
	case *containv1.Event_File:
		x := b.File
		f.body, p = evFile, x.GetProc()
		f.fileOp, f.filePath, f.fileNewPath, f.fileFlags, f.fileMode = int32(x.GetOp()), x.GetPath(), x.GetNewPath(), x.GetFlags(), x.GetMode()
		f.fileResult, f.fileUID, f.fileGID, f.nonUTF8 = x.GetResult(), x.GetUid(), x.GetGid(), x.GetNonUtf8()
		f.filePathRelative, f.filePathUnresolved, f.fileNewPathUnresolved = x.GetPathRelative(), x.GetPathUnresolved(), x.GetNewPathUnresolved()
	case *containv1.Event_Process:
		x := b.Process
		f.body, p = evProcess, x.GetProc()
		f.procOp, f.procChildTgid, f.procExitCode = int32(x.GetOp()), x.GetChildTgid(), x.GetExitCode()
	case *containv1.Event_Loss:
		f.body = evLoss
		f.lossSource, f.lossReason, f.lossCount = b.Loss.GetSource(), b.Loss.GetReason(), b.Loss.GetCount()
	case *containv1.Event_Alert:
		f.body = 24
	case *containv1.Event_Action:
		f.body = 25
	case *containv1.Event_Container:
		f.body = 27
	case *containv1.Event_Commit:
		f.body = 29
	}
	if p != nil {
		f.pid, f.tgid, f.ppid, f.nsPid = p.GetPid(), p.GetTgid(), p.GetPpid(), p.GetNsPid()
		f.uid, f.gid, f.euid, f.comm = p.GetUid(), p.GetGid(), p.GetEuid(), p.GetComm()
	}
}

// arena holds the repeated values of the rows read from the wire, reused
// from fetch to fetch (a row's slices are views of it).
type arena struct {
	strs []string
	u64s []uint64
	u32s []uint32
}

func (a *arena) reset() {
	clear(a.strs) // drop the payload the strings point into
	a.strs, a.u64s, a.u32s = a.strs[:0], a.u64s[:0], a.u32s[:0]
}

// str is a string field's value (ScanBatch checked it is UTF-8).
func str(typ protowire.Type, v []byte) (string, bool) {
	if typ != protowire.BytesType {
		return "", false
	}
	return aliasString(v), true
}

// readWire reads the event message b into f; rawID and wallNs are its id
// and wall time. false: the event is left to the decoder (see above).
func readWire(b []byte, f *flatEvent, a *arena) (rawID []byte, wallNs int64, ok bool) {
	*f = flatEvent{}
	for len(b) > 0 {
		num, typ, v, x, n := bus.ConsumeField(b)
		if n < 0 {
			return nil, 0, false
		}
		b = b[n:]
		ok := true
		switch num {
		case evID:
			rawID, ok = v, typ == protowire.BytesType
		case evHost:
			f.host, ok = str(typ, v)
		case evContainerID:
			f.containerID, ok = str(typ, v)
		case evContainerName:
			f.containerName, ok = str(typ, v)
		case evImageRef:
			f.imageRef, ok = str(typ, v)
		case evImageDigest:
			f.imageDig, ok = str(typ, v)
		case evProfileRef:
			f.profileRef, ok = str(typ, v)
		case evMonoNs:
			f.monoNs, ok = x, typ == protowire.VarintType
		case evWallNs:
			wallNs, ok = int64(x), typ == protowire.VarintType
		case evKind:
			f.kind, ok = containv1.Kind(int32(x)), typ == protowire.VarintType
		case evSchemaVersion:
			f.schemaVersion, ok = uint32(x), typ == protowire.VarintType
		case evCgroupID:
			f.cgroupID, ok = x, typ == protowire.VarintType
		case evExec, evSyscall, evNetwork, evFile, evLoss, evProcess:
			if typ != protowire.BytesType || (f.body != 0 && f.body != num) {
				return nil, 0, false // another member replaces the body: the decoder's
			}
			f.body = num
			ok = readBody(num, v, f, a)
		default:
			if num >= evExec && num <= 29 {
				return nil, 0, false // alert, action, container, commit
			}
		}
		if !ok {
			return nil, 0, false
		}
	}
	return rawID, wallNs, true
}

// expand sets what f leaves empty of its container fields from its
// batch's dictionary entry c (nil: none), as containv1.Event.ExpandFrom.
func (f *flatEvent) expand(c *bus.WireContainer) {
	if c == nil {
		return
	}
	containv1.FillContainer(&f.containerID, &f.containerName, &f.imageRef, &f.imageDig, &f.profileRef,
		c.ContainerID, c.ContainerName, c.ImageRef, c.ImageDigest, c.ProfileRef)
}

// readBody reads (merges) one occurrence of body member body.
func readBody(body protowire.Number, b []byte, f *flatEvent, a *arena) bool {
	for len(b) > 0 {
		num, typ, v, x, n := bus.ConsumeField(b)
		if n < 0 {
			return false
		}
		b = b[n:]
		isV, isB := typ == protowire.VarintType, typ == protowire.BytesType
		ok := true
		if num == bodyProc && body != evLoss {
			if ok = isB && readProc(v, f); !ok {
				return false
			}
			continue
		}
		switch body {
		case evExec:
			switch num {
			case 2:
				f.execFilename, ok = str(typ, v)
			case 3:
				var s string
				if s, ok = str(typ, v); ok {
					f.execArgv = appendView(&a.strs, f.execArgv, s)
				}
			case 4:
				f.execArgvTruncated, ok = x != 0, isV
			case 5:
				f.execArgc, ok = uint32(x), isV
			case 6:
				f.execCwd, ok = str(typ, v)
			case 7:
				f.execExe, ok = str(typ, v)
			case 8:
				f.nonUTF8, ok = x != 0, isV
			}
		case evSyscall:
			switch num {
			case 2:
				f.sysMode, ok = int32(x), isV
			case 3:
				f.sysNr, ok = uint32(x), isV
			case 4:
				f.sysName, ok = str(typ, v)
			case 5:
				f.sysArgs, ok = appendU64(a, f.sysArgs, typ, v, x)
			case 6:
				f.sysRet, ok = int64(x), isV
			case 7:
				f.sysCount, ok = x, isV
			case 8:
				f.sysSeq, ok = appendU32(a, f.sysSeq, typ, v, x)
			}
		case evNetwork:
			switch num {
			case 2:
				f.netOp, ok = int32(x), isV
			case 3:
				f.netProto, ok = int32(x), isV
			case 4:
				f.netFamily, ok = uint32(x), isV
			case 5:
				f.localAddr, ok = v, isB
			case 6:
				f.localPort, ok = uint32(x), isV
			case 7:
				f.remoteAddr, ok = v, isB
			case 8:
				f.remotePort, ok = uint32(x), isV
			case 9:
				f.netResult, ok = int32(x), isV
			}
		case evFile:
			switch num {
			case 2:
				f.fileOp, ok = int32(x), isV
			case 3:
				f.filePath, ok = str(typ, v)
			case 4:
				f.fileNewPath, ok = str(typ, v)
			case 5:
				f.fileFlags, ok = uint32(x), isV
			case 6:
				f.fileMode, ok = uint32(x), isV
			case 7:
				f.fileResult, ok = int32(x), isV
			case 8:
				f.nonUTF8, ok = x != 0, isV
			case 9:
				f.fileUID, ok = uint32(x), isV
			case 10:
				f.fileGID, ok = uint32(x), isV
			case 11:
				f.filePathUnresolved, ok = x != 0, isV
			case 12:
				f.fileNewPathUnresolved, ok = x != 0, isV
			case 13:
				f.filePathRelative, ok = x != 0, isV
			}
		case evProcess:
			switch num {
			case 2:
				f.procOp, ok = int32(x), isV
			case 3:
				f.procChildTgid, ok = uint32(x), isV
			case 4:
				f.procExitCode, ok = int32(x), isV
			}
		case evLoss:
			switch num {
			case 1:
				f.lossSource, ok = str(typ, v)
			case 2:
				f.lossReason, ok = str(typ, v)
			case 3:
				f.lossCount, ok = x, isV
			}
		}
		if !ok {
			return false
		}
	}
	return true
}

// readProc reads (merges) one occurrence of a body's Process.
func readProc(b []byte, f *flatEvent) bool {
	for len(b) > 0 {
		num, typ, v, x, n := bus.ConsumeField(b)
		if n < 0 {
			return false
		}
		b = b[n:]
		isV := typ == protowire.VarintType
		ok := true
		switch num {
		case 1:
			f.pid, ok = uint32(x), isV
		case 2:
			f.tgid, ok = uint32(x), isV
		case 3:
			f.ppid, ok = uint32(x), isV
		case 4:
			f.nsPid, ok = uint32(x), isV
		case 5:
			f.uid, ok = uint32(x), isV
		case 6:
			f.gid, ok = uint32(x), isV
		case 7:
			f.euid, ok = uint32(x), isV
		case 8:
			f.comm, ok = str(typ, v)
		}
		if !ok {
			return false
		}
	}
	return true
}

// appendView appends v to view, a slice of *buf: in place when view ends
// *buf (the usual case: a repeated field's values in a row), else after
// copying view to *buf's end. The result's capacity ends at its length,
// so a later append to *buf never writes into it.
func appendView[T any](buf *[]T, view []T, v T) []T {
	if n := len(*buf); len(view) > 0 && (n < len(view) || &(*buf)[n-1] != &view[len(view)-1]) {
		*buf = append(*buf, view...)
	}
	start := len(*buf) - len(view)
	*buf = append(*buf, v)
	return (*buf)[start:len(*buf):len(*buf)]
}

// appendU64 appends a repeated uint64 field's value(s), packed or not.
func appendU64(a *arena, view []uint64, typ protowire.Type, v []byte, x uint64) ([]uint64, bool) {
	switch typ {
	case protowire.VarintType:
		return appendView(&a.u64s, view, x), true
	case protowire.BytesType:
		for b := v; len(b) > 0; {
			x, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return nil, false
			}
			b = b[n:]
			view = appendView(&a.u64s, view, x)
		}
		return view, true
	}
	return nil, false
}

// appendU32 appends a repeated uint32 field's value(s), packed or not.
func appendU32(a *arena, view []uint32, typ protowire.Type, v []byte, x uint64) ([]uint32, bool) {
	switch typ {
	case protowire.VarintType:
		return appendView(&a.u32s, view, uint32(x)), true
	case protowire.BytesType:
		for b := v; len(b) > 0; {
			x, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return nil, false
			}
			b = b[n:]
			view = appendView(&a.u32s, view, uint32(x))
		}
		return view, true
	}
	return nil, false
}

// aliasString is b as a string sharing its bytes.
func aliasString(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	return unsafe.String(&b[0], len(b))
}
