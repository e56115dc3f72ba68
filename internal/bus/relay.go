package bus

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/containsec/contain/internal/logfields"
)

// A relay (docs/design/035-relay.md) is how a consumer's handler that
// republishes what it consumes (the enricher) publishes: Messages.
// PublishAll. The stream acks (PubAcks) of every publish come to one
// inbox subscription the consumer keeps for its life, read by the
// handler's goroutine itself: no future, map entry, channels or reply
// token per publish and no hop through the client's asynchronous reply
// handler (jetstream's PublishMsgAsync), one timer for the consumer. A
// publish whose ack is an error, or does not come within the attempt
// timeout, is published again as Publish does (publishMsg), with its
// Nats-Msg-Id, so the stream stores it once.
//
// The acknowledgements of a fetch whose handler published through the
// relay are deferred (relay.defer): they are written, ahead of the
// publishes, into the same write as the next fetch's publishes, or
// before the consumer waits without a message (Messages.PublishAll,
// ConsumeMessages, longPull's idle callback), instead of one write of
// their own each. An acknowledgement is therefore sent at most a fetch's
// handling, or the consumer's FetchWait, later than its output was
// stored; a message not yet acknowledged when the process dies is
// redelivered and republished under the same Nats-Msg-Ids, as before.

// relayAckBuffer is the room of the PubAck channel: the publishes of a
// fetch and late acks of earlier ones.
const relayAckBuffer = 4096

// relay is one consumer's publisher; used by the consumer's goroutine
// only.
type relay struct {
	nc     *nats.Conn
	js     jetstream.JetStream
	prefix string // "<inbox>."
	sub    *nats.Subscription
	ch     chan *nats.Msg
	next   uint64 // id of the next publish
	timer  *time.Timer
	reply  []byte

	// acks is what deferred acknowledgements await a write; used
	// whether the fetch in hand published through the relay.
	acks []jetstream.Msg
	used bool
	st   *consumerState
	// room is the PubAck channel's capacity.
	room int
}

func newRelay(js jetstream.JetStream, st *consumerState, room int) (*relay, error) {
	nc := js.Conn()
	r := &relay{nc: nc, js: js, prefix: nc.NewInbox() + ".", ch: make(chan *nats.Msg, room), st: st, room: room,
		timer: time.NewTimer(time.Hour)}
	r.timer.Stop()
	sub, err := nc.ChanSubscribe(r.prefix+"*", r.ch)
	if err != nil {
		return nil, fmt.Errorf("relay: %w", err)
	}
	r.sub = sub
	return r, nil
}

// close ends the subscription after writing the deferred
// acknowledgements.
func (r *relay) close() {
	r.flushAcks()
	_ = r.sub.Unsubscribe()
}

// flushAcks writes the deferred acknowledgements (into the client's
// buffer: the flusher writes them, with what follows them at once).
func (r *relay) flushAcks() {
	if len(r.acks) == 0 {
		return
	}
	r.st.ack(r.acks)
	clear(r.acks)
	r.acks = r.acks[:0]
}

// publishAll publishes msgs in order, replies to the relay's inbox, and
// waits for every stream ack; what failed or was not acknowledged
// within attempt is published again (publishMsg). The deferred
// acknowledgements go first, into the same write.
func (r *relay) publishAll(ctx context.Context, msgs []*nats.Msg, stage string) error {
	r.used = true
	r.flushAcks()
	// At most half the channel's room in flight: more PubAcks than it
	// holds would be dropped by the client (a slow consumer), and their
	// messages published again one by one after the attempt timeout.
	for len(msgs) > 0 {
		n := min(len(msgs), max(r.room/2, 1))
		if err := r.publishChunk(ctx, msgs[:n], stage); err != nil {
			return err
		}
		msgs = msgs[n:]
	}
	return nil
}

// publishChunk publishes msgs and waits for their stream acks.
func (r *relay) publishChunk(ctx context.Context, msgs []*nats.Msg, stage string) error {
	rep := reporterFrom(ctx)
	attempt := 5 * time.Second
	if rep != nil && rep.AttemptTimeout > 0 {
		attempt = rep.AttemptTimeout
	}
	base := r.next
	r.next += uint64(len(msgs))
	acked := make([]bool, len(msgs))
	pending := make([]bool, len(msgs)) // published, awaiting a PubAck
	waiting := 0
	for i, msg := range msgs {
		r.reply = strconv.AppendUint(append(r.reply[:0], r.prefix...), base+uint64(i), 10)
		msg.Reply = string(r.reply)
		err := r.nc.PublishMsg(msg)
		msg.Reply = ""
		if err != nil {
			if kind, permanent := classify(err); permanent {
				rep.failed(stage, kind, msg.Subject, err)
				return fmt.Errorf("publishing to %s: %s: %w", msg.Subject, kind, err)
			}
			continue // published again below
		}
		pending[i] = true
		waiting++
	}
	r.timer.Reset(attempt)
	defer r.timer.Stop()
wait:
	for waiting > 0 {
		select {
		case m := <-r.ch:
			id, err := strconv.ParseUint(m.Subject[len(r.prefix):], 10, 64)
			if err != nil || id < base || id >= base+uint64(len(msgs)) || !pending[id-base] {
				continue // a late ack of an earlier publish
			}
			i := id - base
			pending[i] = false
			waiting--
			acked[i] = pubAckOK(m)
		case <-r.timer.C:
			break wait
		case <-ctx.Done():
			rep.failed(stage, KindCanceled, msgs[0].Subject, ctx.Err())
			return fmt.Errorf("publishing to %s: %w", msgs[0].Subject, ctx.Err())
		}
	}
	for i, msg := range msgs {
		if acked[i] {
			continue
		}
		if err := publishMsg(ctx, r.js, msg, stage, rep); err != nil {
			return err
		}
	}
	return nil
}

// pubAckOK reports whether m is a stream's ack of a stored message (a
// JSON PubAck without an error; a duplicate is stored). A status (no
// responders) or an error is not: the message is published again, which
// classifies the error.
func pubAckOK(m *nats.Msg) bool {
	if len(m.Data) == 0 || (m.Header != nil && m.Header.Get(statusHeader) != "") {
		return false
	}
	// The server's PubAck, {"stream":"NAME", "seq":N}, without decoding;
	// anything else (an error, an escaped key) is decoded.
	if bytes.HasPrefix(m.Data, []byte(`{"stream":`)) && bytes.HasSuffix(m.Data, []byte("}")) &&
		bytes.IndexByte(m.Data, '\\') < 0 && !bytes.Contains(m.Data, []byte(`"error"`)) {
		return true
	}
	var ack struct {
		Stream string          `json:"stream"`
		Error  json.RawMessage `json:"error"`
	}
	return json.Unmarshal(m.Data, &ack) == nil && ack.Stream != "" && len(ack.Error) == 0
}

// relayHolder is a consumer's relay, made on first use, and the
// acknowledgement of its fetches: deferred when the fetch's handler
// published through the relay, at once otherwise.
type relayHolder struct {
	js  jetstream.JetStream
	st  *consumerState
	r   *relay
	err error
}

func (h *relayHolder) get() (*relay, error) {
	if h.r == nil && h.err == nil {
		room := h.st.cfg.relayRoom
		if room <= 0 {
			room = relayAckBuffer
		}
		if h.r, h.err = newRelay(h.js, h.st, room); h.err != nil && h.st.log != nil {
			// Not retried: every publish of this consumer then waits
			// for its acks as PublishAll does, correct but slower.
			h.st.log.Warn("relay: no PubAck inbox, publishing one ack wait per call instead", logfields.Err, h.err)
		}
	}
	return h.r, h.err
}

// start is called before each handler call.
func (h *relayHolder) start() {
	if h.r != nil {
		h.r.used = false
	}
}

// ack acknowledges a handled fetch's messages: deferred when its handler
// published through the relay (the next fetch's publishes, or the next
// idle fetch, write them), else at once with what was deferred.
func (h *relayHolder) ack(msgs []jetstream.Msg) {
	if h.r != nil && h.r.used {
		h.st.lastSuccess = time.Now()
		h.r.acks = append(h.r.acks, msgs...)
		return
	}
	h.flushAcks()
	h.st.ack(msgs)
}

func (h *relayHolder) flushAcks() {
	if h.r != nil {
		h.r.flushAcks()
	}
}

func (h *relayHolder) close() {
	if h.r != nil {
		h.r.close()
	}
}
