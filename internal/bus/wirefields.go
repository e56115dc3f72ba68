package bus

import (
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/containsec/contain/schemas/containv1"
)

// Arena decodes batches into storage it reuses from one Reset to the next
// (design 031): the batch, its events, their bodies and processes are
// taken from chunks kept across calls, strings and bytes point into the
// payload (as DecodeAliased), so a fetch of the common event kinds costs
// no allocation once the chunks have grown to the fetch's size. A batch
// Decode returns is valid until the next Reset: a consumer must keep no
// event, body, process or slice of one past it (ConsumerConfig.ReuseEvents).
//
// Decode accepts exactly what DecodeAliased accepts and reads the same
// batch (FuzzArenaMatchesDecode): one walk of the wire bytes decodes the
// batch fields and the events of kinds exec, syscall, network, file and
// process (every field) and checks each field's wire type and every
// string's UTF-8 as it goes. An event it does not read that way (another
// body, an unknown field, a field with another wire type) is checked with
// the strict tables of ScanBatch (validMsg) and decoded alone with the
// generated code, as DecodeAliased decodes it; anything else (a malformed
// batch, an unknown batch field, a schema version this build does not
// read) goes to DecodeAliased whole, which refuses it or reads it.
type Arena struct {
	batches  chunks[containv1.Batch]
	events   chunks[containv1.Event]
	procs    chunks[containv1.Process]
	execs    chunks[containv1.Exec]
	syscalls chunks[containv1.Syscall]
	networks chunks[containv1.Network]
	files    chunks[containv1.File]
	lifes    chunks[containv1.ProcessLifecycle]
	execB    chunks[containv1.Event_Exec]
	syscallB chunks[containv1.Event_Syscall]
	networkB chunks[containv1.Event_Network]
	fileB    chunks[containv1.Event_File]
	lifeB    chunks[containv1.Event_Process]
	// containers: batches' container dictionaries, expanded into their
	// events as the batch is decoded (containv1.Batch.Expand).
	containers chunks[containv1.ContainerRef]
}

// chunkLen is how many values a chunk holds.
const chunkLen = 64

// chunks hands out values of T from chunks kept across resets: a pointer
// stays valid (the chunks are never moved) and its value is the last
// use's until the caller resets it.
type chunks[T any] struct {
	c [][]T
	n int
}

func (p *chunks[T]) next() *T {
	i := p.n / chunkLen
	if i == len(p.c) {
		p.c = append(p.c, make([]T, chunkLen))
	}
	v := &p.c[i][p.n%chunkLen]
	p.n++
	return v
}

// Reset makes the storage of every batch decoded since the last Reset
// available again: those batches must no longer be used.
func (a *Arena) Reset() {
	a.batches.n, a.events.n, a.procs.n = 0, 0, 0
	a.execs.n, a.syscalls.n, a.networks.n, a.files.n, a.lifes.n = 0, 0, 0, 0, 0
	a.execB.n, a.syscallB.n, a.networkB.n, a.fileB.n, a.lifeB.n = 0, 0, 0, 0, 0
	a.containers.n = 0
}

// Decode is DecodeAliased(data) into the arena's storage: the same
// batch, or the same error.
func (a *Arena) Decode(data []byte) (*containv1.Batch, error) {
	if b, ok := a.scan(data); ok {
		return b, nil
	}
	return DecodeAliased(data)
}

// scan decodes data in one walk. true only for a batch DecodeAliased
// accepts, then equal to it; false is not a refusal (Decode decides).
func (a *Arena) scan(data []byte) (*containv1.Batch, bool) {
	bt := a.batches.next()
	*bt = containv1.Batch{Events: bt.Events[:0]}
	evt := strictBatch().fields[batchEvents].msg
	b := data
	for len(b) > 0 {
		num, typ, n := consumeTag(b)
		if n < 0 {
			return nil, false
		}
		b = b[n:]
		switch num {
		case batchSchemaVersion, batchSeq:
			v, n := varintField(typ, b)
			if n < 0 {
				return nil, false
			}
			b = b[n:]
			if num == batchSeq {
				bt.Seq = v
			} else {
				bt.SchemaVersion = uint32(v)
			}
		case batchHost, batchStage, batchProducerID:
			s, n := consumeString(typ, b)
			if n < 0 {
				return nil, false
			}
			b = b[n:]
			switch num {
			case batchHost:
				bt.Host = s
			case batchStage:
				bt.Stage = s
			default:
				bt.ProducerId = s
			}
		case batchEvents:
			v, n := bytesField(typ, b)
			if n < 0 {
				return nil, false
			}
			b = b[n:]
			ev := a.events.next()
			if !a.event(v, ev) {
				// Not one the walk reads: decoded alone, as
				// unmarshalAliased does, once known to be valid.
				if !validMsg(evt, v, 1) {
					return nil, false
				}
				ev = &containv1.Event{}
				if ev.UnmarshalVTUnsafe(v) != nil {
					return nil, false
				}
			}
			bt.Events = append(bt.Events, ev)
		case batchContainers:
			// Read as ScanBatch reads it: an entry's unknown fields, which
			// the generated code would keep, go with the dictionary once
			// expanded.
			v, n := bytesField(typ, b)
			var wc WireContainer
			if n < 0 || !scanContainer(strictBatch().fields[batchContainers].msg, v, &wc) {
				return nil, false
			}
			b = b[n:]
			c := a.containers.next()
			*c = containv1.ContainerRef{ContainerId: wc.ContainerID, ContainerName: wc.ContainerName,
				ImageRef: wc.ImageRef, ImageDigest: wc.ImageDigest, ProfileRef: wc.ProfileRef}
			bt.Containers = append(bt.Containers, c)
		default:
			// An unknown batch field would be kept as such by the
			// generated code: left to it.
			return nil, false
		}
	}
	if bt.SchemaVersion == 0 || bt.SchemaVersion > containv1.ReadableSchemaVersion || bt.Expand() != nil {
		return nil, false
	}
	return bt, true
}

// Field numbers of containv1.Event beyond those ScanBatch reads.
const (
	eventMonoNs        = 7
	eventSchemaVersion = 10
	eventCgroupID      = 11
	eventProfileRef    = 12
	eventExec          = 20
	eventSyscall       = 21
	eventNetwork       = 22
	eventFile          = 23
	eventProcess       = 28
	eventContainerRef  = 30
)

// event decodes b into ev; false for anything but the known fields of an
// event of the kinds the arena reads, each with its wire type and valid.
func (a *Arena) event(b []byte, ev *containv1.Event) bool {
	*ev = containv1.Event{}
	for len(b) > 0 {
		num, typ, n := consumeTag(b)
		if n < 0 {
			return false
		}
		b = b[n:]
		switch num {
		case eventID:
			v, n := bytesField(typ, b)
			if n < 0 {
				return false
			}
			b, ev.Id = b[n:], v
		case eventHost, eventContainerID, eventContainerName, eventImageRef, eventImageDigest, eventProfileRef:
			s, n := consumeString(typ, b)
			if n < 0 {
				return false
			}
			b = b[n:]
			switch num {
			case eventHost:
				ev.Host = s
			case eventContainerID:
				ev.ContainerId = s
			case eventContainerName:
				ev.ContainerName = s
			case eventImageRef:
				ev.ImageRef = s
			case eventImageDigest:
				ev.ImageDigest = s
			default:
				ev.ProfileRef = s
			}
		case eventMonoNs, eventWallNs, eventKind, eventSchemaVersion, eventCgroupID, eventContainerRef:
			v, n := varintField(typ, b)
			if n < 0 {
				return false
			}
			b = b[n:]
			switch num {
			case eventMonoNs:
				ev.MonoNs = v
			case eventWallNs:
				ev.WallNs = int64(v)
			case eventKind:
				ev.Kind = containv1.Kind(int32(v))
			case eventSchemaVersion:
				ev.SchemaVersion = uint32(v)
			case eventContainerRef:
				ev.ContainerRef = uint32(v)
			default:
				ev.CgroupId = v
			}
		case eventExec, eventSyscall, eventNetwork, eventFile, eventProcess:
			v, n := bytesField(typ, b)
			if n < 0 || !a.body(num, v, ev) {
				return false
			}
			b = b[n:]
		default:
			return false
		}
	}
	return true
}

// body merges body field num's message v into ev's body, as decoding
// does: into the body already there when it is the same field, else into
// a new one.
func (a *Arena) body(num protowire.Number, v []byte, ev *containv1.Event) bool {
	switch num {
	case eventExec:
		w, ok := ev.Body.(*containv1.Event_Exec)
		if !ok {
			x := a.execs.next()
			*x = containv1.Exec{Argv: x.Argv[:0]}
			w = a.execB.next()
			w.Exec = x
			ev.Body = w
		}
		return a.exec(v, w.Exec)
	case eventSyscall:
		w, ok := ev.Body.(*containv1.Event_Syscall)
		if !ok {
			s := a.syscalls.next()
			*s = containv1.Syscall{Args: s.Args[:0], Sequence: s.Sequence[:0]}
			w = a.syscallB.next()
			w.Syscall = s
			ev.Body = w
		}
		return a.syscall(v, w.Syscall)
	case eventNetwork:
		w, ok := ev.Body.(*containv1.Event_Network)
		if !ok {
			x := a.networks.next()
			*x = containv1.Network{}
			w = a.networkB.next()
			w.Network = x
			ev.Body = w
		}
		return a.network(v, w.Network)
	case eventFile:
		w, ok := ev.Body.(*containv1.Event_File)
		if !ok {
			x := a.files.next()
			*x = containv1.File{}
			w = a.fileB.next()
			w.File = x
			ev.Body = w
		}
		return a.file(v, w.File)
	default:
		w, ok := ev.Body.(*containv1.Event_Process)
		if !ok {
			x := a.lifes.next()
			*x = containv1.ProcessLifecycle{}
			w = a.lifeB.next()
			w.Process = x
			ev.Body = w
		}
		return a.lifecycle(v, w.Process)
	}
}

// proc merges the Process message of field 1 (wire type typ, at the start
// of b) into *p (a new one when nil) and returns its length, or -1.
func (a *Arena) proc(typ protowire.Type, b []byte, p **containv1.Process) int {
	v, n := bytesField(typ, b)
	if n < 0 {
		return -1
	}
	if *p == nil {
		*p = a.procs.next()
		**p = containv1.Process{}
	}
	x := *p
	for len(v) > 0 {
		num, typ, m := consumeTag(v)
		if m < 0 {
			return -1
		}
		v = v[m:]
		if num == 8 {
			s, m := consumeString(typ, v)
			if m < 0 {
				return -1
			}
			v, x.Comm = v[m:], s
			continue
		}
		u, m := varintField(typ, v)
		if m < 0 {
			return -1
		}
		v = v[m:]
		switch num {
		case 1:
			x.Pid = uint32(u)
		case 2:
			x.Tgid = uint32(u)
		case 3:
			x.Ppid = uint32(u)
		case 4:
			x.NsPid = uint32(u)
		case 5:
			x.Uid = uint32(u)
		case 6:
			x.Gid = uint32(u)
		case 7:
			x.Euid = uint32(u)
		case 9:
			x.Origin = containv1.Origin(int32(u))
		case 10:
			x.SessionTgid = uint32(u)
		default:
			return -1
		}
	}
	return n
}

func (a *Arena) exec(b []byte, x *containv1.Exec) bool {
	for len(b) > 0 {
		num, typ, n := consumeTag(b)
		if n < 0 {
			return false
		}
		b = b[n:]
		switch num {
		case 1:
			n = a.proc(typ, b, &x.Proc)
		case 2, 3, 6, 7:
			var s string
			if s, n = consumeString(typ, b); n < 0 {
				return false
			}
			switch num {
			case 2:
				x.Filename = s
			case 3:
				x.Argv = append(x.Argv, s)
			case 6:
				x.Cwd = s
			default:
				x.Exe = s
			}
		default:
			var u uint64
			if u, n = varintField(typ, b); n < 0 {
				return false
			}
			switch num {
			case 4:
				x.ArgvTruncated = u != 0
			case 5:
				x.Argc = uint32(u)
			case 8:
				x.NonUtf8 = u != 0
			case 9:
				x.ExeMemfd = u != 0
			case 10:
				x.ExeDeleted = u != 0
			case 11:
				x.ExeWritable = u != 0
			case 12:
				x.StdioInet = u != 0
			default:
				return false
			}
		}
		if n < 0 {
			return false
		}
		b = b[n:]
	}
	return true
}

func (a *Arena) syscall(b []byte, s *containv1.Syscall) bool {
	for len(b) > 0 {
		num, typ, n := consumeTag(b)
		if n < 0 {
			return false
		}
		b = b[n:]
		switch {
		case num == 1:
			n = a.proc(typ, b, &s.Proc)
		case num == 4:
			if s.Name, n = consumeString(typ, b); n < 0 {
				return false
			}
		case (num == 5 || num == 8) && typ == protowire.BytesType:
			var v []byte
			if v, n = consumeBytes(b); n < 0 {
				return false
			}
			for len(v) > 0 {
				u, m := protowire.ConsumeVarint(v)
				if m < 0 {
					return false
				}
				v = v[m:]
				if num == 5 {
					s.Args = append(s.Args, u)
				} else {
					s.Sequence = append(s.Sequence, uint32(u))
				}
			}
		default:
			var u uint64
			if u, n = varintField(typ, b); n < 0 {
				return false
			}
			switch num {
			case 2:
				s.Mode = containv1.Syscall_Mode(int32(u))
			case 3:
				s.Nr = uint32(u)
			case 5:
				s.Args = append(s.Args, u)
			case 6:
				s.Ret = int64(u)
			case 7:
				s.Count = u
			case 8:
				s.Sequence = append(s.Sequence, uint32(u))
			default:
				return false
			}
		}
		if n < 0 {
			return false
		}
		b = b[n:]
	}
	return true
}

func (a *Arena) network(b []byte, x *containv1.Network) bool {
	for len(b) > 0 {
		num, typ, n := consumeTag(b)
		if n < 0 {
			return false
		}
		b = b[n:]
		switch num {
		case 1:
			n = a.proc(typ, b, &x.Proc)
		case 5, 7:
			var v []byte
			if v, n = bytesField(typ, b); n < 0 {
				return false
			}
			if num == 5 {
				x.LocalAddr = v
			} else {
				x.RemoteAddr = v
			}
		default:
			var u uint64
			if u, n = varintField(typ, b); n < 0 {
				return false
			}
			switch num {
			case 2:
				x.Op = containv1.Network_Op(int32(u))
			case 3:
				x.Protocol = containv1.Network_Protocol(int32(u))
			case 4:
				x.Family = uint32(u)
			case 6:
				x.LocalPort = uint32(u)
			case 8:
				x.RemotePort = uint32(u)
			case 9:
				x.Result = int32(u)
			default:
				return false
			}
		}
		if n < 0 {
			return false
		}
		b = b[n:]
	}
	return true
}

func (a *Arena) file(b []byte, f *containv1.File) bool {
	for len(b) > 0 {
		num, typ, n := consumeTag(b)
		if n < 0 {
			return false
		}
		b = b[n:]
		switch num {
		case 1:
			n = a.proc(typ, b, &f.Proc)
		case 3, 4, 14:
			var s string
			if s, n = consumeString(typ, b); n < 0 {
				return false
			}
			switch num {
			case 3:
				f.Path = s
			case 4:
				f.NewPath = s
			default:
				f.ResolvedPath = s
			}
		default:
			var u uint64
			if u, n = varintField(typ, b); n < 0 {
				return false
			}
			switch num {
			case 2:
				f.Op = containv1.File_Op(int32(u))
			case 5:
				f.Flags = uint32(u)
			case 6:
				f.Mode = uint32(u)
			case 7:
				f.Result = int32(u)
			case 8:
				f.NonUtf8 = u != 0
			case 9:
				f.Uid = uint32(u)
			case 10:
				f.Gid = uint32(u)
			case 11:
				f.PathUnresolved = u != 0
			case 12:
				f.NewPathUnresolved = u != 0
			case 13:
				f.PathRelative = u != 0
			case 15:
				f.Ino = u
			case 16:
				f.Dev = u
			case 17:
				f.Sensitive = u != 0
			default:
				return false
			}
		}
		if n < 0 {
			return false
		}
		b = b[n:]
	}
	return true
}

func (a *Arena) lifecycle(b []byte, p *containv1.ProcessLifecycle) bool {
	for len(b) > 0 {
		num, typ, n := consumeTag(b)
		if n < 0 {
			return false
		}
		b = b[n:]
		if num == 1 {
			n = a.proc(typ, b, &p.Proc)
		} else {
			var u uint64
			if u, n = varintField(typ, b); n < 0 {
				return false
			}
			switch num {
			case 2:
				p.Op = containv1.ProcessLifecycle_Op(int32(u))
			case 3:
				p.ChildTgid = uint32(u)
			case 4:
				p.ExitCode = int32(u)
			default:
				return false
			}
		}
		if n < 0 {
			return false
		}
		b = b[n:]
	}
	return true
}

// varintField reads a varint field's value; -1 for another wire type.
func varintField(typ protowire.Type, b []byte) (uint64, int) {
	if typ != protowire.VarintType {
		return 0, -1
	}
	if len(b) > 0 && b[0] < 0x80 {
		return uint64(b[0]), 1
	}
	return protowire.ConsumeVarint(b)
}

// bytesField reads a length-delimited field's value; -1 for another wire
// type.
func bytesField(typ protowire.Type, b []byte) ([]byte, int) {
	if typ != protowire.BytesType {
		return nil, -1
	}
	return consumeBytes(b)
}
