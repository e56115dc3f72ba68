package store

import (
	"encoding/binary"
	"errors"

	"github.com/google/uuid"
	"google.golang.org/protobuf/encoding/protowire"
)

// The duplicate lookup needs every id of a fetch before its first row is
// written, while rows are built from one decoded message at a time
// (design 021): skimBatch reads, from an encoded containv1.Batch, just
// what the lookup needs of each event (row id, wall time, table and sort
// key prefix) without decoding it. A message skimBatch cannot read is
// decoded instead (existingRaw), so the two never need to agree on what
// is malformed; on what decodes they agree (FuzzSkimBatch).

// Field numbers of schemas/contain/v1/events.proto.
const (
	batchFieldStage      = 3
	batchFieldSeq        = 4
	batchFieldProducerID = 5
	batchFieldEvents     = 6

	eventFieldID          = 1
	eventFieldContainerID = 3
	eventFieldImageRef    = 5
	eventFieldWallNs      = 8
	eventFieldBodyFirst   = 20 // oneof body: 20 (exec) .. 29 (commit)
	eventFieldBodyLast    = 29
	eventFieldAlert       = 24
	eventFieldAction      = 25
)

// skimmed is what the lookup needs of one event; prefix aliases the
// message's bytes.
type skimmed struct {
	id     uuid.UUID
	wallNs int64
	table  lookup
	prefix []byte
}

var errSkimWireType = errors.New("skim: unexpected wire type")

// skimBatch calls fn for every event of the encoded batch b, in order,
// and returns how many there were. It reads the fields as proto3 decoding
// does (the last occurrence of a scalar wins, the last member of a oneof
// is the body); a field of an unexpected wire type is an error (the
// caller then decodes the message).
func skimBatch(b []byte, fn func(skimmed)) (int, error) {
	var stage, producer []byte
	var seq uint64
	// First the batch's own fields (a derived id needs them), wherever
	// they are.
	err := walkFields(b, func(num protowire.Number, typ protowire.Type, v []byte, x uint64) error {
		switch num {
		case batchFieldStage, batchFieldProducerID, batchFieldEvents:
			if typ != protowire.BytesType {
				return errSkimWireType
			}
			if num == batchFieldStage {
				stage = v
			} else if num == batchFieldProducerID {
				producer = v
			}
		case batchFieldSeq:
			if typ != protowire.VarintType {
				return errSkimWireType
			}
			seq = x
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	n := 0
	err = walkFields(b, func(num protowire.Number, typ protowire.Type, v []byte, _ uint64) error {
		if num != batchFieldEvents {
			return nil
		}
		e, err := skimEvent(v)
		if err != nil {
			return err
		}
		if len(e.rawID) == 16 {
			e.s.id = uuid.UUID(e.rawID)
		} else {
			e.s.id = derivedID(producer, stage, seq, n, e.rawID)
		}
		fn(e.s)
		n++
		return nil
	})
	return n, err
}

type skimmedEvent struct {
	s     skimmed
	rawID []byte
}

func skimEvent(b []byte) (skimmedEvent, error) {
	var e skimmedEvent
	var containerID, imageRef []byte
	body := protowire.Number(0)
	err := walkFields(b, func(num protowire.Number, typ protowire.Type, v []byte, x uint64) error {
		switch {
		case num == eventFieldID || num == eventFieldContainerID || num == eventFieldImageRef:
			if typ != protowire.BytesType {
				return errSkimWireType
			}
			switch num {
			case eventFieldID:
				e.rawID = v
			case eventFieldContainerID:
				containerID = v
			default:
				imageRef = v
			}
		case num == eventFieldWallNs:
			if typ != protowire.VarintType {
				return errSkimWireType
			}
			e.s.wallNs = int64(x)
		case num >= eventFieldBodyFirst && num <= eventFieldBodyLast:
			if typ != protowire.BytesType {
				return errSkimWireType
			}
			body = num
		}
		return nil
	})
	switch body {
	case eventFieldAlert:
		e.s.table, e.s.prefix = alertsLookup, imageRef
	case eventFieldAction:
		e.s.table, e.s.prefix = actionsLookup, containerID
	default:
		e.s.table, e.s.prefix = eventsLookup, containerID
	}
	return e, err
}

// walkFields calls fn for every field of the message b: v is a
// length-delimited value, x a varint's; other wire types are skipped. The
// common encodings (a one-byte tag, a length or a varint of one or two
// bytes) are read inline; anything else goes through protowire, which
// also gives the errors (inline, the skim took half the time).
func walkFields(b []byte, fn func(num protowire.Number, typ protowire.Type, v []byte, x uint64) error) error {
	for len(b) > 0 {
		var (
			num protowire.Number
			typ protowire.Type
			n   int
		)
		if c := b[0]; c < 0x80 && c >= 8 { // field numbers 1..15
			num, typ, b = protowire.Number(c>>3), protowire.Type(c&7), b[1:]
		} else {
			num, typ, n = protowire.ConsumeTag(b)
			if n < 0 {
				return protowire.ParseError(n)
			}
			b = b[n:]
		}
		var v []byte
		var x uint64
		switch {
		case typ == protowire.BytesType && len(b) > 0 && b[0] < 0x80 && int(b[0]) < len(b):
			v, b = b[1:1+b[0]], b[1+b[0]:]
		case typ == protowire.BytesType && len(b) > 1 && b[0] >= 0x80 && b[1] < 0x80 && int(b[0]&0x7f)|int(b[1])<<7 <= len(b)-2:
			m := int(b[0]&0x7f) | int(b[1])<<7
			v, b = b[2:2+m], b[2+m:]
		case typ == protowire.VarintType && len(b) > 0 && b[0] < 0x80:
			x, b = uint64(b[0]), b[1:]
		case typ == protowire.VarintType && len(b) > 1 && b[1] < 0x80:
			x, b = uint64(b[0]&0x7f)|uint64(b[1])<<7, b[2:]
		default:
			switch typ {
			case protowire.BytesType:
				v, n = protowire.ConsumeBytes(b)
			case protowire.VarintType:
				x, n = protowire.ConsumeVarint(b)
			default:
				n = protowire.ConsumeFieldValue(num, typ, b)
			}
			if n < 0 {
				return protowire.ParseError(n)
			}
			b = b[n:]
		}
		if err := fn(num, typ, v, x); err != nil {
			return err
		}
	}
	return nil
}

// derivedID is the row id of event i of a batch whose id is not 16 bytes
// (see eventID).
func derivedID(producer, stage []byte, seq uint64, i int, id []byte) uuid.UUID {
	key := make([]byte, 0, len(producer)+len(stage)+len(id)+17)
	key = append(key, producer...)
	key = append(key, 0)
	key = append(key, stage...)
	key = binary.BigEndian.AppendUint64(key, seq)
	key = binary.BigEndian.AppendUint64(key, uint64(i))
	key = append(key, id...)
	return uuid.NewSHA1(idNamespace, key)
}
