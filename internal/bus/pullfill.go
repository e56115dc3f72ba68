package bus

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// A filled fetch (ConsumerConfig.FetchFill) is one pull request for up
// to n messages or maxBytes of them, waiting up to FetchWait, made here
// on core NATS rather than with jetstream's Fetch, because of how a
// clustered consumer ends such a request.
//
// On a replicated consumer (R3 stream, consumer replicas inherited) the
// server holds each delivery until the consumer's raft group has its
// delivered state, and only then sends the message; but when the next
// message does not fit the request's remaining bytes it sends the
// "409 Message Size Exceeds MaxBytes" status at once (nats-server
// 2.15.2; its 408 Request Timeout does wait for the held deliveries).
// jetstream's Fetch ends at that status and drops its subscription, so
// the deliveries still held arrive at an inbox nobody reads: they stay
// unacknowledged until AckWait and fill MaxAckPending meanwhile, so that
// later fetches get a message or two each. Measured on a 3-node cluster:
// most filled fetches lost tens to hundreds of messages that way (the
// fleet load test's store saw them as sequence gaps, counted as expired,
// and its inserts shrank to ~45 rows).
//
// The status carries the messages the request still had room for
// (Nats-Pending-Messages), so the messages the server assigned to it are
// n minus that: pullFill reads on until all of them arrived (or a grace
// period passed), then ends.

// Pull request statuses (the status line's code and description).
const (
	statusHeartbeat    = "100"
	statusNoMessages   = "404"
	statusTimeout      = "408"
	statusConflict     = "409"
	pendingMsgsHeader  = "Nats-Pending-Messages"
	statusHeader       = "Status"
	descriptionHeader  = "Description"
	apiConsumerMsgNext = "$JS.API.CONSUMER.MSG.NEXT.%s.%s"
)

// stragglerGrace bounds how long pullFill waits, after the status that
// ended its request, for deliveries the server still holds.
const stragglerGrace = 2 * time.Second

// pullRequestBody is the JSON of a JetStream pull request.
type pullRequestBody struct {
	Expires  time.Duration `json:"expires,omitempty"`
	Batch    int           `json:"batch"`
	MaxBytes int           `json:"max_bytes,omitempty"`
	// Heartbeat asks for an idle heartbeat status this often.
	Heartbeat time.Duration `json:"idle_heartbeat,omitempty"`
}

// pullFill makes one pull request on consumer stream/durable for up to n
// messages or maxBytes (0: no bound) of them, waiting up to wait to fill
// it, and returns what the server delivered to it.
func pullFill(nc *nats.Conn, stream, durable string, n, maxBytes int, wait time.Duration) ([]jetstream.Msg, error) {
	if n < 1 {
		return nil, fmt.Errorf("pull request: batch %d < 1", n)
	}
	inbox := nc.NewInbox()
	// Room for every message the request may bring and its status, so
	// that the client never drops one as a slow consumer.
	ch := make(chan *nats.Msg, n+4)
	sub, err := nc.ChanSubscribe(inbox, ch)
	if err != nil {
		return nil, fmt.Errorf("pull request: %w", err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	body, err := json.Marshal(pullRequestBody{Expires: wait, Batch: n, MaxBytes: maxBytes})
	if err != nil {
		return nil, fmt.Errorf("pull request: %w", err)
	}
	if err := nc.PublishRequest(fmt.Sprintf(apiConsumerMsgNext, stream, durable), inbox, body); err != nil {
		return nil, fmt.Errorf("pull request: %w", err)
	}
	var (
		out    []jetstream.Msg
		bytes  int
		expect = -1 // messages the server assigned, once a status tells
	)
	timer := time.NewTimer(wait + time.Second)
	defer timer.Stop()
	for {
		select {
		case <-timer.C:
			return out, nil
		case m := <-ch:
			if code := m.Header.Get(statusHeader); code != "" && len(m.Data) == 0 {
				switch code {
				case statusHeartbeat:
					continue
				case statusTimeout, statusConflict:
					// The request is over; wait only for what the
					// server assigned to it and has not sent yet.
					p, err := strconv.Atoi(m.Header.Get(pendingMsgsHeader))
					if err != nil || p > n {
						return out, statusErr(m)
					}
					expect = n - p
					if len(out) >= expect {
						return out, statusErr(m)
					}
					timer.Reset(stragglerGrace)
					continue
				case statusNoMessages:
					return out, nil
				default:
					return out, statusErr(m)
				}
			}
			out = append(out, &pulledMsg{msg: m, nc: nc})
			bytes += m.Size()
			if len(out) == n || (maxBytes > 0 && bytes >= maxBytes) || (expect >= 0 && len(out) >= expect) {
				return out, nil
			}
		}
	}
}

// statusErr is the error a request's ending status reports: none for
// those that end a pull request in the ordinary way.
func statusErr(m *nats.Msg) error {
	code, desc := m.Header.Get(statusHeader), m.Header.Get(descriptionHeader)
	switch {
	case code == statusTimeout, code == statusNoMessages:
		return nil
	case code == statusConflict && desc == "Message Size Exceeds MaxBytes":
		return nil
	}
	return fmt.Errorf("pull request: status %s %s", code, desc)
}

// pulledMsg is a message of a pull request made on core NATS, with the
// acknowledgements of jetstream.Msg.
type pulledMsg struct {
	msg  *nats.Msg
	nc   *nats.Conn
	mu   sync.Mutex
	ackd bool
	// md is the metadata parsed once (a consumer reads it when the
	// message is received and again when it is acknowledged).
	md *jetstream.MsgMetadata
}

var _ jetstream.Msg = (*pulledMsg)(nil)

func (p *pulledMsg) Metadata() (*jetstream.MsgMetadata, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.md != nil {
		return p.md, nil
	}
	md, err := p.msg.Metadata()
	if err != nil {
		return nil, err
	}
	p.md = &jetstream.MsgMetadata{
		Sequence:     jetstream.SequencePair{Consumer: md.Sequence.Consumer, Stream: md.Sequence.Stream},
		NumDelivered: md.NumDelivered,
		NumPending:   md.NumPending,
		Timestamp:    md.Timestamp,
		Stream:       md.Stream,
		Consumer:     md.Consumer,
		Domain:       md.Domain,
	}
	return p.md, nil
}

func (p *pulledMsg) Data() []byte         { return p.msg.Data }
func (p *pulledMsg) Headers() nats.Header { return p.msg.Header }
func (p *pulledMsg) Subject() string      { return p.msg.Subject }
func (p *pulledMsg) Reply() string        { return p.msg.Reply }

// Acknowledgement bodies, allocated once.
var (
	ackBody  = []byte("+ACK")
	nakBody  = []byte("-NAK")
	termBody = []byte("+TERM")
	wpiBody  = []byte("+WPI")
)

func (p *pulledMsg) Ack() error  { return p.reply(nil, ackBody, true) }
func (p *pulledMsg) Nak() error  { return p.reply(nil, nakBody, true) }
func (p *pulledMsg) Term() error { return p.reply(nil, termBody, true) }

func (p *pulledMsg) InProgress() error { return p.reply(nil, wpiBody, false) }

func (p *pulledMsg) DoubleAck(ctx context.Context) error { return p.reply(ctx, ackBody, true) }

func (p *pulledMsg) NakWithDelay(delay time.Duration) error {
	if delay <= 0 {
		return p.Nak()
	}
	return p.reply(nil, fmt.Appendf(nil, "-NAK {\"delay\": %d}", delay.Nanoseconds()), true)
}

func (p *pulledMsg) TermWithReason(reason string) error {
	if reason == "" {
		return p.Term()
	}
	return p.reply(nil, []byte("+TERM "+reason), true)
}

// reply sends an acknowledgement body (synchronously with ctx); final
// ones may be sent once.
func (p *pulledMsg) reply(ctx context.Context, body []byte, final bool) error {
	if p.msg.Reply == "" {
		return jetstream.ErrMsgNoReply
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ackd {
		return jetstream.ErrMsgAlreadyAckd
	}
	var err error
	if ctx != nil {
		_, err = p.nc.RequestWithContext(ctx, p.msg.Reply, body)
	} else {
		err = p.nc.Publish(p.msg.Reply, body)
	}
	if err == nil && final {
		p.ackd = true
	}
	return err
}
