package bus

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// A long pull (design 032) is how an Eager consumer (the detection path:
// enricher, analyzer) fetches: one inbox subscription for the consumer's
// lifetime and pull requests on it that stay open (pullExpires) for up
// to pullDepth fetches' messages. The server delivers each message as it
// arrives into the subscription's buffer; a fetch takes what is buffered
// (up to Fetch), or waits up to FetchWait for the first message, and
// sends a request only when what is outstanding fell to half the depth.
// A message costs a delivery and an acknowledgement, where jetstream's
// Fetch and FetchNoWait cost a subscription, a request, an
// unsubscription, channels and timers per fetch, two when the consumer
// runs dry, as it does between the messages of a moderate stream.
//
// What the buffer holds has been delivered and counts against AckWait
// and MaxAckPending: depth is bounded (pullDepth fetches, at most
// MaxAckPending with the fetch in hand), and a consumer that stops, or
// backs off after failures, ends its subscription and Naks what it
// buffered, so that it is redelivered at once (to the next owner of an
// analyzer partition) rather than after AckWait.

const (
	// pullDepth is how many fetches' messages a long pull asks for.
	pullDepth = 2
	// pullExpires is how long one of its pull requests stays open.
	pullExpires = 10 * time.Second
	// pullHeartbeat is the idle heartbeat asked of the server: with none
	// for two, the requests are taken for lost (a server restarted, a
	// consumer leader moved without telling) and asked again.
	pullHeartbeat = time.Second
	// closeGrace bounds how long closing waits for the messages the
	// server sent before it saw the subscription end.
	closeGrace = 2 * time.Second
)

// longPull is one consumer's long-lived pull subscription.
type longPull struct {
	nc      *nats.Conn
	subject string // the consumer's next-message API subject
	inbox   string
	sub     *nats.Subscription
	ch      chan *nats.Msg
	drained chan struct{} // closed when the subscription is gone
	depth   int           // messages asked for at most

	// pending is messages asked for and neither received nor ended by a
	// status: what the server may still send.
	pending int
	// received counts messages (data and status) taken from ch.
	received uint64
	// quiet is when an idle fetch last saw received change, lastReq when
	// the last request went out.
	seen           uint64
	quiet, lastReq time.Time
	reconnects     uint64
	timer          *time.Timer
}

// newLongPull subscribes an inbox for consumer stream/durable's
// deliveries; the first fetch asks for them.
func newLongPull(nc *nats.Conn, stream, durable string, fetch int) (*longPull, error) {
	depth := pullDepth * fetch
	p := &longPull{
		nc:      nc,
		subject: fmt.Sprintf(apiConsumerMsgNext, stream, durable),
		inbox:   nc.NewInbox(),
		// Room for every delivery the server may have in flight to this
		// inbox (at most MaxAckPending, 4 fetches; more when a request is
		// asked again after a reconnect) and the statuses, so that the
		// client never drops one as a slow consumer.
		ch:         make(chan *nats.Msg, 4*depth+64),
		drained:    make(chan struct{}),
		depth:      depth,
		reconnects: nc.Stats().Reconnects,
		timer:      time.NewTimer(time.Hour),
	}
	p.timer.Stop()
	sub, err := nc.ChanSubscribe(p.inbox, p.ch)
	if err != nil {
		return nil, fmt.Errorf("long pull: %w", err)
	}
	sub.SetClosedHandler(func(string) { close(p.drained) })
	p.sub = sub
	return p, nil
}

// fetch returns what is buffered, up to n messages, or else waits up to
// wait (or until ctx ends or stop closes) for the first message and
// returns it with what came with it.
func (p *longPull) fetch(ctx context.Context, stop <-chan struct{}, n int, wait time.Duration) ([]jetstream.Msg, error) {
	if err := p.topUp(); err != nil {
		return nil, err
	}
	out, err := p.take(nil, n)
	if err != nil || len(out) > 0 {
		return out, p.after(err)
	}
	p.timer.Reset(wait)
	defer p.timer.Stop()
	for len(out) == 0 {
		select {
		case m := <-p.ch:
			if out, err = p.handle(out, m); err != nil {
				return out, err
			}
		case <-p.timer.C:
			return nil, p.idle()
		case <-ctx.Done():
			return nil, nil
		case <-stop:
			return nil, nil
		}
	}
	out, err = p.take(out, n)
	return out, p.after(err)
}

// after asks for more once a fetch took messages, so that the server
// refills the buffer while the handler runs.
func (p *longPull) after(err error) error {
	if err != nil {
		return err
	}
	return p.topUp()
}

// take appends to out what is buffered, up to n messages in all.
func (p *longPull) take(out []jetstream.Msg, n int) ([]jetstream.Msg, error) {
	for len(out) < n {
		select {
		case m := <-p.ch:
			var err error
			if out, err = p.handle(out, m); err != nil {
				return out, err
			}
		default:
			return out, nil
		}
	}
	return out, nil
}

// handle appends a delivered message to out, or accounts for a status.
func (p *longPull) handle(out []jetstream.Msg, m *nats.Msg) ([]jetstream.Msg, error) {
	p.received++
	if len(m.Data) > 0 || m.Header == nil || m.Header.Get(statusHeader) == "" {
		if p.pending > 0 {
			p.pending--
		}
		return append(out, &pulledMsg{msg: m, nc: p.nc}), nil
	}
	switch code := m.Header.Get(statusHeader); code {
	case statusHeartbeat:
		return out, nil
	case statusTimeout, statusConflict:
		// A request ended: with what it still had room for, or (a
		// leader change, the consumer deleted) with all of them.
		if left, err := strconv.Atoi(m.Header.Get(pendingMsgsHeader)); err == nil {
			p.pending = max(p.pending-left, 0)
		} else {
			p.pending = 0
		}
		if err := statusErr(m); err != nil && m.Header.Get(descriptionHeader) == "Consumer Deleted" {
			return out, err
		}
		return out, p.topUp()
	default:
		p.pending = 0
		return out, statusErr(m)
	}
}

// idle checks, after a fetch waited in vain, that the requests are still
// served: after a reconnect, or with no heartbeat for two, they are asked
// again.
func (p *longPull) idle() error {
	now := time.Now()
	if p.received != p.seen || p.quiet.IsZero() {
		p.seen, p.quiet = p.received, now
	}
	r := p.nc.Stats().Reconnects
	lost := p.pending > 0 && now.Sub(p.quiet) > 2*pullHeartbeat && now.Sub(p.lastReq) > 2*pullHeartbeat
	if r != p.reconnects || lost {
		p.reconnects, p.pending = r, 0
	}
	return p.topUp()
}

// topUp asks for what the buffer lacks once what is outstanding fell to
// half the depth.
func (p *longPull) topUp() error {
	if p.pending > p.depth/2 {
		return nil
	}
	batch := p.depth - p.pending
	body, err := json.Marshal(pullRequestBody{Expires: pullExpires, Batch: batch, Heartbeat: pullHeartbeat})
	if err != nil {
		return fmt.Errorf("long pull: %w", err)
	}
	if err := p.nc.PublishRequest(p.subject, p.inbox, body); err != nil {
		return fmt.Errorf("long pull: %w", err)
	}
	p.pending, p.lastReq = p.depth, time.Now()
	return nil
}

// close ends the subscription and Naks every message it buffered or
// still receives, so that they are redelivered at once. The server stops
// assigning messages to the requests once it processed the end of the
// subscription; a drain (unsubscribe, then a round trip) brings what it
// sent before. It returns how many it Nak'd.
func (p *longPull) close() int {
	if err := p.sub.Drain(); err != nil {
		// The connection is closed: nothing can be sent or received.
		_ = p.sub.Unsubscribe()
		return 0
	}
	naked := 0
	nak := func(m *nats.Msg) {
		if len(m.Data) == 0 && m.Header.Get(statusHeader) != "" {
			return
		}
		if m.Reply != "" && p.nc.Publish(m.Reply, nakBody) == nil {
			naked++
		}
	}
	grace := time.NewTimer(closeGrace)
	defer grace.Stop()
	for {
		select {
		case m := <-p.ch:
			nak(m)
		case <-p.drained:
			for {
				select {
				case m := <-p.ch:
					nak(m)
				default:
					return naked
				}
			}
		case <-grace.C:
			return naked
		}
	}
}
