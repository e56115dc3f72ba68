package store

import (
	"slices"
	"time"
	"unicode/utf8"
	"unsafe"

	"github.com/google/uuid"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/containsec/contain/internal/bus"
	"github.com/containsec/contain/schemas/containv1"
)

// One walk per event (design 021, decision 21): collect's scan of a
// message (bus.Messages.WireWith) walks each event with wireWalker, which
// validates every field as bus.ScanBatch does and reads the events
// table's values into the event's wireRow in the same walk. A field it
// reads is checked where it is read (its wire type; a string's UTF-8; a
// body or process message field by field); every other field, and every
// field with a wire type other than the one it reads, goes to bus's own
// check (bus.WireTable.SkipField), so the walk accepts exactly what
// ScanBatch accepts (FuzzWireRows) and the fields are parsed once with
// bus's primitives.

// wireRow is an event of a scanned message, as collect read it for the
// writers: its bytes, row id and time, and with read its values (f); an
// event not read is decoded from raw by its writer.
type wireRow struct {
	raw  []byte
	id   uuid.UUID
	ts   time.Time
	tsNs uint32
	read bool
	f    flatEvent
}

// wireWalker is collect's bus.EventWalker: a wireRow per event walked,
// the rows' repeated values in arena. Both live until the fetch's
// writers are done (fetchBufs.release).
type wireWalker struct {
	rows  []wireRow
	arena arena
}

// WalkEvent reads the event message raw into ev and a new row.
func (w *wireWalker) WalkEvent(raw []byte, ev *bus.WireEvent) bool {
	n := len(w.rows)
	w.rows = slices.Grow(w.rows, 1)[:n+1]
	r := &w.rows[n]
	r.raw = raw
	ok, read := readEvent(raw, &r.f, ev, &w.arena)
	r.read = read
	return ok
}

// truncate drops the rows from n on (a message given up).
func (w *wireWalker) truncate(n int) {
	clear(w.rows[n:])
	w.rows = w.rows[:n]
}

// reset drops every row and the arena's values.
func (w *wireWalker) reset() {
	clear(w.rows)
	w.rows = w.rows[:0]
	w.arena.reset()
}

// The strict tables of the messages the walk reads.
var (
	eventTable = bus.EventTable()
	bodyTables = func() (t [evProcess + 1]bus.WireTable) {
		for _, n := range []protowire.Number{evExec, evSyscall, evNetwork, evFile, evLoss, evProcess} {
			t[n] = eventTable.Sub(n)
		}
		return t
	}()
	procTable = eventTable.Sub(evExec).Sub(bodyProc)
)

// Depths of the messages the walk reads (bus.WireTable.SkipField).
const (
	depthEvent = 1 + iota
	depthBody
	depthProc
)

// readEvent reads the event message b into f and ev (as bus.ScanBatch
// fills ev). ok: ScanBatch accepts the event; read: f holds its values,
// else it is left to the decoder (see wirerow.go).
func readEvent(b []byte, f *flatEvent, ev *bus.WireEvent, a *arena) (ok, read bool) {
	*f = flatEvent{}
	ev.Raw = b
	read = true
	for len(b) > 0 {
		num, typ, n := bus.ConsumeTag(b)
		if n < 0 {
			return false, false
		}
		b = b[n:]
		switch {
		case typ == protowire.VarintType && num >= evMonoNs && num <= evCgroupID:
			var x uint64
			if x, n = bus.ConsumeVarint(b); n < 0 {
				return false, false
			}
			switch num {
			case evMonoNs:
				f.monoNs = x
			case evWallNs:
				ev.WallNs = int64(x)
			case evKind:
				ev.Kind = containv1.Kind(int32(x))
				f.kind = ev.Kind
			case evSchemaVersion:
				f.schemaVersion = uint32(x)
			default:
				f.cgroupID = x
			}
		case typ == protowire.BytesType && num == evID:
			ev.ID, n = bus.ConsumeBytes(b)
		case typ == protowire.BytesType && (num >= evHost && num <= evImageDigest || num == evProfileRef):
			var s string
			if s, n = bus.ConsumeUTF8(b); n < 0 {
				return false, false
			}
			switch num {
			case evHost:
				ev.Host, f.host = s, s
			case evContainerID:
				ev.ContainerID, f.containerID = s, s
			case evContainerName:
				ev.ContainerName, f.containerName = s, s
			case evImageRef:
				ev.ImageRef, f.imageRef = s, s
			case evImageDigest:
				ev.ImageDigest, f.imageDig = s, s
			default:
				f.profileRef = s
			}
		case typ == protowire.BytesType && num >= evExec && num <= evProcess && num != evAlert && num != evAction && num != 27 &&
			read && (f.body == 0 || f.body == num):
			var v []byte
			if v, n = bus.ConsumeBytes(b); n < 0 {
				return false, false
			}
			f.body, ev.Body = num, num
			if !readBody(num, v, f, a) {
				return false, false
			}
		default:
			if n = eventTable.SkipField(num, typ, b, depthEvent); n >= 0 && num >= evExec && num <= 29 {
				// Alert, action, container, commit, or another member
				// replacing the body: the decoder's.
				ev.Body, read = num, false
			}
		}
		if n < 0 {
			return false, false
		}
		b = b[n:]
	}
	return true, read
}

// readBody reads (merges) one occurrence of body member body, checking
// every field.
func readBody(body protowire.Number, b []byte, f *flatEvent, a *arena) bool {
	for len(b) > 0 {
		num, typ, n := bus.ConsumeTag(b)
		if n < 0 {
			return false
		}
		b = b[n:]
		got := 0 // 1: read; -1: refused; 0: not a field read here
		switch typ {
		case protowire.VarintType:
			var x uint64
			if x, n = bus.ConsumeVarint(b); n >= 0 && bodyVarint(body, num, x, f, a) {
				got = 1
			}
		case protowire.BytesType:
			var v []byte
			if v, n = bus.ConsumeBytes(b); n >= 0 {
				got = bodyBytes(body, num, v, f, a)
			}
		}
		switch got {
		case -1:
			return false
		case 0:
			n = bodyTables[body].SkipField(num, typ, b, depthBody)
		}
		if n < 0 {
			return false
		}
		b = b[n:]
	}
	return true
}

// bodyVarint sets body field num from the varint x; false: not a varint
// field read here.
func bodyVarint(body, num protowire.Number, x uint64, f *flatEvent, a *arena) bool {
	u, i := uint32(x), int32(x)
	switch body {
	case evExec:
		switch num {
		case 4:
			f.execArgvTruncated = x != 0
		case 5:
			f.execArgc = u
		case 8:
			f.nonUTF8 = x != 0
		default:
			return false
		}
	case evSyscall:
		switch num {
		case 2:
			f.sysMode = i
		case 3:
			f.sysNr = u
		case 5:
			f.sysArgs = appendView(&a.u64s, f.sysArgs, x)
		case 6:
			f.sysRet = int64(x)
		case 7:
			f.sysCount = x
		case 8:
			f.sysSeq = appendView(&a.u32s, f.sysSeq, u)
		default:
			return false
		}
	case evNetwork:
		switch num {
		case 2:
			f.netOp = i
		case 3:
			f.netProto = i
		case 4:
			f.netFamily = u
		case 6:
			f.localPort = u
		case 8:
			f.remotePort = u
		case 9:
			f.netResult = i
		default:
			return false
		}
	case evFile:
		switch num {
		case 2:
			f.fileOp = i
		case 5:
			f.fileFlags = u
		case 6:
			f.fileMode = u
		case 7:
			f.fileResult = i
		case 8:
			f.nonUTF8 = x != 0
		case 9:
			f.fileUID = u
		case 10:
			f.fileGID = u
		case 11:
			f.filePathUnresolved = x != 0
		case 12:
			f.fileNewPathUnresolved = x != 0
		case 13:
			f.filePathRelative = x != 0
		default:
			return false
		}
	case evProcess:
		switch num {
		case 2:
			f.procOp = i
		case 3:
			f.procChildTgid = u
		case 4:
			f.procExitCode = i
		default:
			return false
		}
	case evLoss:
		if num != 3 {
			return false
		}
		f.lossCount = x
	}
	return true
}

// bodyBytes sets body field num from the length-delimited v: 1 read, -1
// refused (not UTF-8, a malformed process or packed run), 0 not a field
// read here.
func bodyBytes(body, num protowire.Number, v []byte, f *flatEvent, a *arena) int {
	if num == bodyProc && body != evLoss {
		return status(readProc(v, f))
	}
	var s *string
	switch body {
	case evExec:
		switch num {
		case 2:
			s = &f.execFilename
		case 3:
			if !utf8.Valid(v) {
				return -1
			}
			f.execArgv = appendView(&a.strs, f.execArgv, alias(v))
			return 1
		case 6:
			s = &f.execCwd
		case 7:
			s = &f.execExe
		}
	case evSyscall:
		switch num {
		case 4:
			s = &f.sysName
		case 5, 8:
			for len(v) > 0 {
				x, n := bus.ConsumeVarint(v)
				if n < 0 {
					return -1
				}
				v = v[n:]
				bodyVarint(body, num, x, f, a)
			}
			return 1
		}
	case evNetwork:
		switch num {
		case 5:
			f.localAddr = v
			return 1
		case 7:
			f.remoteAddr = v
			return 1
		}
	case evFile:
		switch num {
		case 3:
			s = &f.filePath
		case 4:
			s = &f.fileNewPath
		}
	case evLoss:
		switch num {
		case 1:
			s = &f.lossSource
		case 2:
			s = &f.lossReason
		}
	}
	if s == nil {
		return 0
	}
	if !utf8.Valid(v) {
		return -1
	}
	*s = alias(v)
	return 1
}

// readProc reads (merges) one occurrence of a body's Process.
func readProc(b []byte, f *flatEvent) bool {
	for len(b) > 0 {
		num, typ, n := bus.ConsumeTag(b)
		if n < 0 {
			return false
		}
		b = b[n:]
		switch {
		case typ == protowire.VarintType && num >= 1 && num <= 7:
			var x uint64
			if x, n = bus.ConsumeVarint(b); n < 0 {
				return false
			}
			u := uint32(x)
			switch num {
			case 1:
				f.pid = u
			case 2:
				f.tgid = u
			case 3:
				f.ppid = u
			case 4:
				f.nsPid = u
			case 5:
				f.uid = u
			case 6:
				f.gid = u
			default:
				f.euid = u
			}
		case typ == protowire.BytesType && num == 8:
			f.comm, n = bus.ConsumeUTF8(b)
		default:
			n = procTable.SkipField(num, typ, b, depthProc)
		}
		if n < 0 {
			return false
		}
		b = b[n:]
	}
	return true
}

// status is 1 for true, -1 for false.
func status(b bool) int {
	if b {
		return 1
	}
	return -1
}

// alias is b as a string sharing its bytes.
func alias(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	return unsafe.String(&b[0], len(b))
}
