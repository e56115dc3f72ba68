package bus

import (
	"errors"
	"fmt"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/containsec/contain/schemas/containv1"
)

// Fleet batches (containv1.SchemaVersionFleet, design 036): one message
// holding the enricher's output batches of many hosts, each a part read
// as if it had arrived alone on its host's subject. The consumers split
// a fleet message (FleetParts) before decoding anything, and bind each
// part to the subject it would have had (containv1.FleetPartSubject), so
// CheckHost holds the part's events to the part's host as before. What a
// fleet batch adds is trust in its publisher: only the enricher may
// publish contain.v1.events.> (internal/auth).

// fleetHeader is how every fleet batch starts: schema_version (field 1,
// varint) = SchemaVersionFleet. The enricher writes it first; a batch
// that says version 3 elsewhere is refused by every decoder as newer than
// the versions it reads, never read as a batch without events.
var fleetHeader = [2]byte{byte(batchSchemaVersion<<3 | protowire.VarintType), containv1.SchemaVersionFleet}

// IsFleet reports whether data is a fleet batch (to be split by
// FleetParts). It reads two bytes.
func IsFleet(data []byte) bool {
	return len(data) >= 2 && data[0] == fleetHeader[0] && data[1] == fleetHeader[1]
}

// ErrFleet wraps what makes a fleet batch malformed.
var ErrFleet = errors.New("malformed fleet batch")

// FleetParts appends the parts of the fleet batch data (IsFleet) to parts,
// each aliasing data. A fleet batch holds its header fields (schema
// version, host, stage, seq, producer id) and at least one part; events,
// containers, unknown fields, a part that is itself a fleet batch, or
// bytes that do not parse make it malformed (ErrFleet, naming the field).
// A part is not decoded here: each is refused or read on its own. It is
// pure and safe on any input (FuzzFleetParts).
func FleetParts(data []byte, parts [][]byte) ([][]byte, error) {
	if !IsFleet(data) {
		return parts, fmt.Errorf("%w: does not start with schema_version %d", ErrFleet, containv1.SchemaVersionFleet)
	}
	first := len(parts)
	b := data[len(fleetHeader):]
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return parts[:first], fmt.Errorf("%w: bad tag at byte %d", ErrFleet, len(data)-len(b))
		}
		b = b[n:]
		switch {
		case num == batchParts && typ == protowire.BytesType:
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return parts[:first], fmt.Errorf("%w: parts: truncated", ErrFleet)
			}
			if IsFleet(v) {
				return parts[:first], fmt.Errorf("%w: parts[%d] is itself a fleet batch", ErrFleet, len(parts)-first)
			}
			parts = append(parts, v[:len(v):len(v)])
			b = b[n:]
		case (num == batchSeq) && typ == protowire.VarintType:
			_, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return parts[:first], fmt.Errorf("%w: seq: truncated", ErrFleet)
			}
			b = b[n:]
		case (num == batchHost || num == batchStage || num == batchProducerID) && typ == protowire.BytesType:
			_, n := consumeString(typ, b)
			if n < 0 {
				return parts[:first], fmt.Errorf("%w: %s: not a UTF-8 string", ErrFleet, batchFieldName(num))
			}
			b = b[n:]
		default:
			return parts[:first], fmt.Errorf("%w: %s (wire type %d) has no place in a fleet batch", ErrFleet, batchFieldName(num), typ)
		}
	}
	if len(parts) == first {
		return parts, fmt.Errorf("%w: no parts", ErrFleet)
	}
	return parts, nil
}

// batchFieldName names a Batch field for an error: its name in the
// schema, or its number when it has none.
func batchFieldName(num protowire.Number) string {
	switch num {
	case batchSchemaVersion:
		return "schema_version"
	case batchHost:
		return "host"
	case batchStage:
		return "stage"
	case batchSeq:
		return "seq"
	case batchProducerID:
		return "producer_id"
	case batchEvents:
		return "events"
	case batchContainers:
		return "containers"
	case batchParts:
		return "parts"
	}
	return fmt.Sprintf("field %d", num)
}

// AppendFleetHeader appends a fleet batch's own fields: its version, the
// stage, producer id and seq that make its message id (FleetMsgID).
func AppendFleetHeader(buf []byte, stage, producer string, seq uint64) []byte {
	buf = append(buf, fleetHeader[:]...)
	buf = appendString(buf, batchStage, stage)
	if seq != 0 {
		buf = protowire.AppendTag(buf, batchSeq, protowire.VarintType)
		buf = protowire.AppendVarint(buf, seq)
	}
	return appendString(buf, batchProducerID, producer)
}

// FleetHeaderSize is AppendFleetHeader's size.
func FleetHeaderSize(stage, producer string, seq uint64) int {
	n := len(fleetHeader) + stringSize(stage) + stringSize(producer)
	if seq != 0 {
		n += 1 + protowire.SizeVarint(seq)
	}
	return n
}

// AppendFleetPart appends part (a whole encoded batch) as a fleet batch's
// part.
func AppendFleetPart(buf, part []byte) []byte {
	buf = protowire.AppendTag(buf, batchParts, protowire.BytesType)
	return protowire.AppendBytes(buf, part)
}

// FleetPartSize is AppendFleetPart's size.
func FleetPartSize(part []byte) int { return 1 + protowire.SizeBytes(len(part)) }

func appendString(buf []byte, num protowire.Number, s string) []byte {
	if s == "" {
		return buf
	}
	buf = protowire.AppendTag(buf, num, protowire.BytesType)
	return protowire.AppendString(buf, s)
}

func stringSize(s string) int {
	if s == "" {
		return 0
	}
	return 1 + protowire.SizeBytes(len(s))
}

// DecodeParts decodes data as Decode does, and a fleet batch as each of
// its parts, for readers that take batches as they come (tools, the load
// test's taps). With a malformed part it returns the parts that decode
// and an error naming the others; a malformed fleet batch gives none.
// The consumers (Consume, ConsumeMessages) split fleet batches themselves,
// binding each part to its host's subject.
func DecodeParts(data []byte) ([]*containv1.Batch, error) {
	if !IsFleet(data) {
		b, err := Decode(data)
		if err != nil {
			return nil, err
		}
		return []*containv1.Batch{b}, nil
	}
	parts, err := FleetParts(data, nil)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	out := make([]*containv1.Batch, 0, len(parts))
	var errs []error
	for i, p := range parts {
		b, err := Decode(p)
		if err != nil {
			errs = append(errs, fmt.Errorf("parts[%d]: %w", i, err))
			continue
		}
		out = append(out, b)
	}
	return out, errors.Join(errs...)
}
