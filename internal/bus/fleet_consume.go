package bus

import (
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/containsec/contain/schemas/containv1"
)

// Reading fleet batches (design 036) as their parts: a consumer splits a
// fleet message (FleetParts) and checks each part against the subject it
// would have had alone (FleetPartSubject of the part's host), so a part
// binds its events to its own host exactly as a message on that subject
// does. Messages (ConsumeMessages) does this per fetch: see fetchItem.

// CheckFleetPart is CheckHost for b, a part of a fleet batch that arrived
// on fleetSubject: it checks b against the subject the part would have
// had alone, and returns that subject. It is pure.
func CheckFleetPart(fleetSubject string, b *containv1.Batch) (string, error) {
	subject := containv1.FleetPartSubject(fleetSubject, b.GetHost())
	return subject, CheckHost(subject, b)
}

// FleetPartHost is the host field of part (an encoded batch) without
// decoding it: the last one, as decoding reads a repeated scalar field;
// "" when it has none or its top level does not parse. It names the
// subject a part is read on before it is checked (Messages.Subject).
func FleetPartHost(part []byte) string {
	host := ""
	for b := part; len(b) > 0; {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return ""
		}
		b = b[n:]
		if num == batchHost && typ == protowire.BytesType {
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return ""
			}
			host, b = string(v), b[n:]
			continue
		}
		n = protowire.ConsumeFieldValue(num, typ, b)
		if n < 0 {
			return ""
		}
		b = b[n:]
	}
	return host
}

// fetchItem is one item of a fetch holding a fleet message: a whole
// message (any message that is not a fleet batch on a fleet subject, and
// a fleet message FleetParts refuses), or one part of a fleet message.
type fetchItem struct {
	msg     int    // its message's index in Messages.msgs
	part    []byte // the part's bytes, aliasing the message's payload
	isPart  bool
	subject string // a part's subject (FleetPartSubject), once known
}

// isFleetMsg reports whether a message is read as a fleet batch: the
// fleet header on a fleet subject. A fleet batch on any other subject is
// read whole, and refused as malformed (schema_version 3 is newer than
// every decoder's): only the enricher publishes fleet subjects.
func isFleetMsg(subject string, data []byte) bool {
	return IsFleet(data) && containv1.IsFleetSubject(subject)
}

// splitFleet makes the items of f's messages when one of them is a fleet
// message (nil otherwise: item i is message i), and the state of each.
// A fleet message FleetParts refuses is one item, refused: counted,
// logged and terminated here, once per delivery.
func (f *Messages) splitFleet() {
	fleet := false
	for _, msg := range f.msgs {
		if isFleetMsg(msg.Subject(), msg.Data()) {
			fleet = true
			break
		}
	}
	if !fleet {
		f.state = make([]msgState, len(f.msgs))
		return
	}
	var parts [][]byte
	var refused []int // items of fleet messages FleetParts refuses
	for k, msg := range f.msgs {
		if !isFleetMsg(msg.Subject(), msg.Data()) {
			f.items = append(f.items, fetchItem{msg: k})
			continue
		}
		var err error
		if parts, err = FleetParts(msg.Data(), parts[:0]); err != nil {
			f.chk.malformed(msg.Subject(), len(msg.Data()), err)
			_ = msg.Term()
			refused = append(refused, len(f.items))
			f.items = append(f.items, fetchItem{msg: k})
			continue
		}
		for _, p := range parts {
			f.items = append(f.items, fetchItem{msg: k, part: p, isPart: true})
		}
	}
	f.state = make([]msgState, len(f.items))
	for _, i := range refused {
		f.state[i] = msgRefused
	}
}

// item is item i's bytes, the subject it is checked against (for a part
// whose host is not known yet: its fleet message's) and whether it is a
// part.
func (f *Messages) item(i int) (data []byte, subject string, isPart bool) {
	if f.items == nil {
		msg := f.msgs[i]
		return msg.Data(), msg.Subject(), false
	}
	it := &f.items[i]
	msg := f.msgs[it.msg]
	if !it.isPart {
		return msg.Data(), msg.Subject(), false
	}
	return it.part, msg.Subject(), true
}

// msgOf is the index of item i's message.
func (f *Messages) msgOf(i int) int {
	if f.items == nil {
		return i
	}
	return f.items[i].msg
}

// refuse marks item i refused; a whole message is terminated, a part is
// not (its message's other parts are still good).
func (f *Messages) refuse(i int, isPart bool) {
	f.state[i] = msgRefused
	if !isPart {
		_ = f.msgs[f.msgOf(i)].Term()
	}
}

// spans is the range [lo, hi) of each message's items: one item each
// without fleet messages. Items are in message order, and every message
// has at least one.
func (f *Messages) spans() [][2]int {
	out := make([][2]int, len(f.msgs))
	if f.items == nil {
		for k := range out {
			out[k] = [2]int{k, k + 1}
		}
		return out
	}
	for i, it := range f.items {
		if out[it.msg][1] == 0 {
			out[it.msg][0] = i
		}
		out[it.msg][1] = i + 1
	}
	return out
}

// wholeRefused reports whether the items [lo, hi) of one message say it
// was terminated: it is one whole item, refused. A fleet message some of
// whose parts were refused was not.
func (f *Messages) wholeRefused(lo, hi int) bool {
	return hi == lo+1 && f.state[lo] == msgRefused && (f.items == nil || !f.items[lo].isPart)
}

// allRefused reports whether every item of [lo, hi) was refused.
func (f *Messages) allRefused(lo, hi int) bool {
	for i := lo; i < hi; i++ {
		if f.state[i] != msgRefused {
			return false
		}
	}
	return true
}
