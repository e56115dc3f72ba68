package bus

import (
	"encoding/binary"
	"sync"
	"unicode/utf8"
	"unsafe"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/containsec/contain/schemas/containv1"
)

// WireBatch is a raw batch read on the wire without decoding its events
// (ScanBatch): the batch's own fields, and for each event its encoded
// bytes and the few envelope fields a relaying stage reads. Strings point
// into the scanned payload (as with DecodeAliased).
type WireBatch struct {
	SchemaVersion uint32
	Host          string
	Stage         string
	ProducerID    string
	Seq           uint64
	Events        []WireEvent
	// Containers is the batch's container dictionary (schema_version 2),
	// in order: WireEvent.ContainerRef is 1 + an index into it.
	Containers []WireContainer
}

// WireContainer is one entry of a batch's container dictionary
// (containv1.ContainerRef).
type WireContainer struct {
	ContainerID, ContainerName, ImageRef, ImageDigest, ProfileRef string
}

// WireEvent is one event of a WireBatch. Each string is the field's last
// occurrence, as decoding gives it.
type WireEvent struct {
	// Raw is the event message's bytes, without its tag and length.
	Raw           []byte
	Host          string
	ContainerID   string
	ContainerName string
	ImageRef      string
	ImageDigest   string
	ProfileRef    string
	Kind          containv1.Kind
	// ContainerRef is the event's container_ref as on the wire (Raw
	// still holds it); ScanBatch has already filled ContainerID,
	// ContainerName, ImageRef, ImageDigest and ProfileRef from its
	// dictionary entry where the event leaves them empty (as decoding
	// does); a reader of Raw fills the same from Containers.
	ContainerRef uint32
	// ContainerFields is the byte range of Raw that holds its container
	// fields (container_id, container_name, image_ref, image_digest,
	// profile_ref, container_ref), all of them, when they are adjacent
	// (the generated code writes them so); empty when there are none.
	// FieldsSpread: they are not adjacent, and the range means nothing.
	ContainerFields [2]int32
	FieldsSpread    bool
	// ID and WallNs are the event's id and wall time (ID points into the
	// payload); Body is the field number of the oneof's member that
	// decoding gives (the last one on the wire), 0 for none.
	ID     []byte
	WallNs int64
	Body   protowire.Number
}

// Field numbers of containv1.Batch and containv1.Event that ScanBatch reads.
const (
	batchSchemaVersion = 1
	batchHost          = 2
	batchStage         = 3
	batchSeq           = 4
	batchProducerID    = 5
	batchEvents        = 6
	batchContainers    = 7
	batchParts         = 8

	eventHost          = 2
	eventContainerID   = 3
	eventContainerName = 4
	eventImageRef      = 5
	eventImageDigest   = 6
	eventWallNs        = 8
	eventKind          = 9
	eventID            = 1
	eventBodyFirst     = 20 // oneof body: 20 (exec) .. 29 (commit)
	eventBodyLast      = 29
)

// maxScanDepth is the deepest nesting ScanBatch follows; deeper input is
// left to Decode (which refuses more than 100, checkUTF8).
const maxScanDepth = 64

// ScanBatch reads data as a batch without decoding its events, into wb
// (whose Events it reuses). It returns true only for a batch that Decode
// accepts: every field well-formed, each known field with its schema's
// wire type, every string UTF-8, nesting within maxScanDepth, the schema
// version one this build reads; then decoding wb.Events[i].Raw gives the
// batch's event i. false is not a refusal: the caller decodes (Decode),
// which refuses or reads what ScanBatch left to it (a known field with
// another wire type, a group, deep nesting). It is pure and safe on any
// input (FuzzScanBatch).
func ScanBatch(data []byte, wb *WireBatch) bool {
	*wb = WireBatch{Events: wb.Events[:0], Containers: wb.Containers[:0]}
	t := strictBatch()
	b := data
	for len(b) > 0 {
		num, typ, n := consumeTag(b)
		if n < 0 {
			return false
		}
		b = b[n:]
		switch num {
		case batchSchemaVersion, batchSeq:
			if typ != protowire.VarintType {
				return false
			}
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return false
			}
			b = b[n:]
			if num == batchSeq {
				wb.Seq = v
			} else {
				wb.SchemaVersion = uint32(v)
			}
		case batchHost, batchStage, batchProducerID:
			s, n := consumeString(typ, b)
			if n < 0 {
				return false
			}
			b = b[n:]
			switch num {
			case batchHost:
				wb.Host = s
			case batchStage:
				wb.Stage = s
			default:
				wb.ProducerID = s
			}
		case batchEvents:
			if typ != protowire.BytesType {
				return false
			}
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return false
			}
			b = b[n:]
			wb.Events = append(wb.Events, WireEvent{})
			if !scanEvent(t.fields[batchEvents].msg, v, &wb.Events[len(wb.Events)-1]) {
				return false
			}
		case batchContainers:
			if typ != protowire.BytesType {
				return false
			}
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return false
			}
			b = b[n:]
			wb.Containers = append(wb.Containers, WireContainer{})
			if !scanContainer(t.fields[batchContainers].msg, v, &wb.Containers[len(wb.Containers)-1]) {
				return false
			}
		case batchParts:
			// A fleet batch is split before it is scanned (FleetParts);
			// parts anywhere else are malformed, which Decode says.
			return false
		default:
			n := validField(t, num, typ, b, 0)
			if n < 0 {
				return false
			}
			b = b[n:]
		}
	}
	return wb.SchemaVersion != 0 && wb.SchemaVersion <= containv1.ReadableSchemaVersion && wb.expand()
}

// expand fills the events' container fields from the dictionary as
// containv1.Batch.Expand does; false for a reference past it.
func (wb *WireBatch) expand() bool {
	for i := range wb.Events {
		ev := &wb.Events[i]
		if ev.ContainerRef == 0 {
			continue
		}
		if uint64(ev.ContainerRef) > uint64(len(wb.Containers)) {
			return false
		}
		c := &wb.Containers[ev.ContainerRef-1]
		c.fill(ev)
	}
	return true
}

// fill sets what ev leaves empty of its container fields from c.
func (c *WireContainer) fill(ev *WireEvent) {
	containv1.FillContainer(&ev.ContainerID, &ev.ContainerName, &ev.ImageRef, &ev.ImageDigest, &ev.ProfileRef,
		c.ContainerID, c.ContainerName, c.ImageRef, c.ImageDigest, c.ProfileRef)
}

// Field numbers of containv1.ContainerRef.
const (
	refContainerID   = 1
	refContainerName = 2
	refImageRef      = 3
	refImageDigest   = 4
	refProfileRef    = 5
)

// scanContainer reads one dictionary entry (a message of table t) into c.
func scanContainer(t *strictTable, b []byte, c *WireContainer) bool {
	for len(b) > 0 {
		num, typ, n := consumeTag(b)
		if n < 0 {
			return false
		}
		b = b[n:]
		var dst *string
		switch num {
		case refContainerID:
			dst = &c.ContainerID
		case refContainerName:
			dst = &c.ContainerName
		case refImageRef:
			dst = &c.ImageRef
		case refImageDigest:
			dst = &c.ImageDigest
		case refProfileRef:
			dst = &c.ProfileRef
		default:
			n := validField(t, num, typ, b, 1)
			if n < 0 {
				return false
			}
			b = b[n:]
			continue
		}
		s, n := consumeString(typ, b)
		if n < 0 {
			return false
		}
		b = b[n:]
		*dst = s
	}
	return true
}

// scanEvent reads one event (a message of table t) into ev.
func scanEvent(t *strictTable, b []byte, ev *WireEvent) bool {
	ev.Raw = b
	for len(b) > 0 {
		at := int32(len(ev.Raw) - len(b))
		num, typ, n := consumeTag(b)
		if n < 0 {
			return false
		}
		b = b[n:]
		switch num {
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
				ev.ContainerID = s
			case eventContainerName:
				ev.ContainerName = s
			case eventImageRef:
				ev.ImageRef = s
			case eventImageDigest:
				ev.ImageDigest = s
			default:
				ev.ProfileRef = s
			}
		case eventKind, eventWallNs, eventContainerRef:
			if typ != protowire.VarintType {
				return false
			}
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return false
			}
			b = b[n:]
			switch num {
			case eventKind:
				ev.Kind = containv1.Kind(int32(v))
			case eventWallNs:
				ev.WallNs = int64(v)
			default:
				ev.ContainerRef = uint32(v)
			}
		case eventID:
			if typ != protowire.BytesType {
				return false
			}
			v, n := consumeBytes(b)
			if n < 0 {
				return false
			}
			b = b[n:]
			ev.ID = v
		default:
			n := validField(t, num, typ, b, 1)
			if n < 0 {
				return false
			}
			b = b[n:]
			if num >= eventBodyFirst && num <= eventBodyLast {
				ev.Body = num
			}
		}
		switch num {
		case eventContainerID, eventContainerName, eventImageRef, eventImageDigest, eventProfileRef, eventContainerRef:
			ev.noteContainerField(at, int32(len(ev.Raw)-len(b)))
		}
	}
	return true
}

// noteContainerField extends ContainerFields by the container field at
// Raw[at:end].
func (ev *WireEvent) noteContainerField(at, end int32) {
	switch f := &ev.ContainerFields; {
	case f[0] == f[1]:
		f[0], f[1] = at, end
	case f[1] == at:
		f[1] = end
	default:
		ev.FieldsSpread = true
	}
}

// consumeTag is protowire.ConsumeTag, the one-byte case inline, refusing
// numbers above protowire.MaxValidNumber.
func consumeTag(b []byte) (protowire.Number, protowire.Type, int) {
	c := b[0]
	if c < 0x80 && c >= 8 {
		return protowire.Number(c >> 3), protowire.Type(c & 7), 1
	}
	if c >= 0x80 && len(b) > 1 && b[1] < 0x80 && b[1] != 0 { // numbers 16..2047 (the bodies)
		return protowire.Number(uint64(c&0x7f)|uint64(b[1])<<7) >> 3, protowire.Type(c & 7), 2
	}
	num, typ, n := protowire.ConsumeTag(b)
	if n < 0 || num > protowire.MaxValidNumber {
		return 0, 0, -1
	}
	return num, typ, n
}

// varintLen is the length of the varint at the start of b, or -1; one
// byte inline.
func varintLen(b []byte) int {
	if len(b) > 0 && b[0] < 0x80 {
		return 1
	}
	_, n := protowire.ConsumeVarint(b)
	return n
}

// consumeBytes is protowire.ConsumeBytes, a one-byte length inline.
func consumeBytes(b []byte) ([]byte, int) {
	if len(b) > 0 && b[0] < 0x80 && int(b[0]) < len(b) {
		return b[1 : 1+b[0]], 1 + int(b[0])
	}
	return protowire.ConsumeBytes(b)
}

// consumeString reads a UTF-8 string field's value as a string pointing
// into b.
func consumeString(typ protowire.Type, b []byte) (string, int) {
	if typ != protowire.BytesType {
		return "", -1
	}
	v, n := consumeBytes(b)
	if n < 0 || !validUTF8(v) {
		return "", -1
	}
	if len(v) == 0 {
		return "", n
	}
	return unsafe.String(&v[0], len(v)), n
}

// validUTF8 is utf8.Valid, ASCII checked 16 then 8 bytes at a time
// inline (the strings of events are ASCII but for file paths and argv now
// and then); the last bytes of a string of 8 or more by one load of its
// last 8, not a loop whose length varies from string to string.
func validUTF8(v []byte) bool {
	const hi = 0x8080808080808080
	n := len(v)
	if n < 8 {
		for i := range n {
			if v[i] >= 0x80 {
				return utf8.Valid(v)
			}
		}
		return true
	}
	i := 0
	for ; i+16 <= n; i += 16 {
		if (binary.LittleEndian.Uint64(v[i:])|binary.LittleEndian.Uint64(v[i+8:]))&hi != 0 {
			return utf8.Valid(v)
		}
	}
	if i+8 <= n && binary.LittleEndian.Uint64(v[i:])&hi != 0 {
		return utf8.Valid(v)
	}
	if binary.LittleEndian.Uint64(v[n-8:])&hi != 0 {
		return utf8.Valid(v)
	}
	return true
}

// Kinds of strictField.
const (
	wireUnknown uint8 = iota // not in the schema: any well-formed value but a group
	wireVarint
	wireFixed32
	wireFixed64
	wireString
	wireBytes
	wireMessage
	wireRefuse // a kind ScanBatch leaves to Decode (groups)
)

// strictField is what a field number of a message must hold.
type strictField struct {
	kind   uint8
	packed bool // a repeated scalar: a packed (length-delimited) run too
	msg    *strictTable
}

// strictTable is a message's fields by number.
type strictTable struct {
	fields []strictField
}

var (
	strictOnce     sync.Once
	strictBatchTab *strictTable
)

// strictBatch is the strict table of containv1.Batch, built once.
func strictBatch() *strictTable {
	strictOnce.Do(func() {
		strictBatchTab = buildStrict((&containv1.Batch{}).ProtoReflect().Descriptor(), map[protoreflect.FullName]*strictTable{})
	})
	return strictBatchTab
}

func buildStrict(md protoreflect.MessageDescriptor, seen map[protoreflect.FullName]*strictTable) *strictTable {
	if t, ok := seen[md.FullName()]; ok {
		return t
	}
	t := &strictTable{}
	seen[md.FullName()] = t
	fds := md.Fields()
	for i := range fds.Len() {
		fd := fds.Get(i)
		var f strictField
		switch fd.Kind() {
		case protoreflect.BoolKind, protoreflect.EnumKind, protoreflect.Int32Kind, protoreflect.Sint32Kind,
			protoreflect.Uint32Kind, protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Uint64Kind:
			f.kind = wireVarint
		case protoreflect.Sfixed32Kind, protoreflect.Fixed32Kind, protoreflect.FloatKind:
			f.kind = wireFixed32
		case protoreflect.Sfixed64Kind, protoreflect.Fixed64Kind, protoreflect.DoubleKind:
			f.kind = wireFixed64
		case protoreflect.StringKind:
			f.kind = wireString
		case protoreflect.BytesKind:
			f.kind = wireBytes
		case protoreflect.MessageKind:
			f.kind, f.msg = wireMessage, buildStrict(fd.Message(), seen)
		default:
			f.kind = wireRefuse
		}
		f.packed = fd.IsList() && f.kind >= wireVarint && f.kind <= wireFixed64
		n := int(fd.Number())
		for len(t.fields) <= n {
			t.fields = append(t.fields, strictField{})
		}
		t.fields[n] = f
	}
	return t
}

// validMsg reports whether b is a message of table t that decoding
// accepts, with every field as strict as ScanBatch's. The common fields (a
// one-byte tag; a varint; a string, bytes or message with a one-byte
// length) are read inline; anything else goes through validField.
func validMsg(t *strictTable, b []byte, depth int) bool {
	if depth > maxScanDepth {
		return false
	}
	for len(b) > 0 {
		c := b[0]
		if c >= 0x80 || c < 8 {
			num, typ, n := consumeTag(b)
			if n < 0 {
				return false
			}
			b = b[n:]
			if n = validField(t, num, typ, b, depth); n < 0 {
				return false
			}
			b = b[n:]
			continue
		}
		num, typ := int(c>>3), protowire.Type(c&7)
		b = b[1:]
		kind := wireUnknown
		if num < len(t.fields) {
			kind = t.fields[num].kind
		}
		switch {
		case typ == protowire.VarintType && kind == wireVarint:
			i := 0
			for i < len(b) && i < 9 && b[i] >= 0x80 {
				i++
			}
			if i == len(b) || i == 9 {
				n := varintLen(b)
				if n < 0 {
					return false
				}
				i = n - 1
			}
			b = b[i+1:]
		case typ == protowire.BytesType && kind >= wireString && kind <= wireMessage && len(b) > 0 && b[0] < 0x80 && int(b[0]) < len(b):
			v := b[1 : 1+b[0]]
			b = b[1+b[0]:]
			switch {
			case kind == wireString && !validUTF8(v):
				return false
			case kind == wireMessage && !validMsg(t.fields[num].msg, v, depth+1):
				return false
			}
		default:
			n := validField(t, protowire.Number(num), typ, b, depth)
			if n < 0 {
				return false
			}
			b = b[n:]
		}
	}
	return true
}

// validField checks the value of field num (of wire type typ) of a
// message of table t at the start of b and returns its length, or -1.
func validField(t *strictTable, num protowire.Number, typ protowire.Type, b []byte, depth int) int {
	var f strictField
	if int(num) < len(t.fields) {
		f = t.fields[num]
	}
	switch f.kind {
	case wireUnknown:
		if typ == protowire.StartGroupType || typ == protowire.EndGroupType {
			return -1
		}
		return protowire.ConsumeFieldValue(num, typ, b)
	case wireVarint, wireFixed32, wireFixed64:
		want := [...]protowire.Type{wireVarint: protowire.VarintType, wireFixed32: protowire.Fixed32Type, wireFixed64: protowire.Fixed64Type}[f.kind]
		if typ == want {
			if typ == protowire.VarintType {
				return varintLen(b)
			}
			return protowire.ConsumeFieldValue(num, typ, b)
		}
		if typ != protowire.BytesType || !f.packed {
			return -1
		}
		v, n := protowire.ConsumeBytes(b)
		if n < 0 || !validPacked(f.kind, v) {
			return -1
		}
		return n
	case wireString, wireBytes, wireMessage:
		if typ != protowire.BytesType {
			return -1
		}
		v, n := consumeBytes(b)
		if n < 0 {
			return -1
		}
		switch {
		case f.kind == wireString && !validUTF8(v):
			return -1
		case f.kind == wireMessage && !validMsg(f.msg, v, depth+1):
			return -1
		}
		return n
	}
	return -1
}

// validPacked reports whether v is a packed run of kind's values.
func validPacked(kind uint8, v []byte) bool {
	switch kind {
	case wireFixed32:
		return len(v)%4 == 0
	case wireFixed64:
		return len(v)%8 == 0
	}
	for len(v) > 0 {
		_, n := protowire.ConsumeVarint(v)
		if n < 0 {
			return false
		}
		v = v[n:]
	}
	return true
}

// BoundTo reports whether wb passes CheckHost on subject. false is not a
// refusal: the caller decodes the message, and CheckHost refuses it.
func (wb *WireBatch) BoundTo(subject string) bool {
	kind, host, ok := SubjectHost(subject)
	if !ok {
		return false
	}
	// good is a host whose token was found to be the subject's: events
	// name their batch's host, mostly, so each is compared with it and
	// its token is made only when it names another.
	good := ""
	if kind != "alerts" {
		if containv1.SubjectToken(wb.Host) != host {
			return false
		}
		good = wb.Host
	}
	for i := range wb.Events {
		h := wb.Events[i].Host
		if h == "" || h == good {
			continue
		}
		if containv1.SubjectToken(h) != host {
			return false
		}
		good = h
	}
	return true
}
