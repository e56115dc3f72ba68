package bus

import (
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// A puller makes a consumer's pull requests (ConsumerConfig without
// FetchFill) on core NATS, every one answered on one inbox subscribed for
// the consumer's life. jetstream's Fetch and FetchNoWait subscribe and
// unsubscribe an inbox, start a goroutine and a timer and build a context
// for every request: in the fleet load test that was a tenth of the
// analyzer's CPU, most fetches being a FetchNoWait that found nothing and
// a Fetch(1) that waited. Here a request is one publish, and its end (a
// 404, 408 or 409 status) is read on the same channel as its messages.
//
// Request k replies to the inbox's subject k, so the status that ends an
// earlier request (one given up on locally, after a reconnect) is told
// apart and does not end the current one. A message delivered late, after
// its request's status (a clustered consumer's held delivery), is not
// lost: it waits in the channel for the next fetch, which takes it first.
type puller struct {
	nc      *nats.Conn
	subject string // the consumer's next-message API subject
	prefix  string // the inbox; request k replies to prefix+k
	sub     *nats.Subscription
	ch      chan *nats.Msg
	timer   *time.Timer
	seq     uint64
	// The request bodies, fixed by the configuration.
	noWait, noWaitMore, waitOne []byte
	n                           int
	wait                        time.Duration
	eager                       bool
}

// pullGrace is how long past its expiry a request's end is waited for
// (its 408 status) before it is given up (a reconnect lost it).
const pullGrace = time.Second

// newPuller subscribes the inbox of cfg's consumer (defaults applied).
func newPuller(nc *nats.Conn, cfg ConsumerConfig) (*puller, error) {
	prefix := nc.NewInbox() + "."
	// Room for every message the consumer may have unacknowledged
	// (MaxAckPending) and the statuses, so that none is dropped.
	ch := make(chan *nats.Msg, 4*cfg.Fetch+16)
	sub, err := nc.ChanSubscribe(prefix+"*", ch)
	if err != nil {
		return nil, fmt.Errorf("pull inbox: %w", err)
	}
	t := time.NewTimer(time.Hour)
	t.Stop()
	body := func(batch int, noWait bool, expires time.Duration) []byte {
		b := []byte(`{"batch":` + strconv.Itoa(batch))
		if noWait {
			b = append(b, `,"no_wait":true`...)
		}
		if expires > 0 {
			b = append(b, `,"expires":`+strconv.FormatInt(int64(expires), 10)...)
		}
		return append(b, '}')
	}
	return &puller{
		nc: nc, subject: fmt.Sprintf(apiConsumerMsgNext, cfg.Stream, cfg.Durable), prefix: prefix, sub: sub, ch: ch, timer: t,
		noWait: body(cfg.Fetch, true, 0), noWaitMore: body(max(cfg.Fetch-1, 1), true, 0), waitOne: body(1, false, cfg.FetchWait),
		n: cfg.Fetch, wait: cfg.FetchWait, eager: cfg.Eager,
	}, nil
}

// fetch is what fetch documents, for a consumer without FetchFill: what
// is pending (up to n) at once; else the first message within the wait,
// and (not Eager) what is pending after it.
func (p *puller) fetch() ([]jetstream.Msg, error) {
	if out := p.take(nil); len(out) > 0 {
		return out, nil // delivered late to an earlier request
	}
	out, err := p.request(nil, p.noWait, p.n, pullGrace)
	if err != nil || len(out) > 0 {
		return out, err
	}
	if out, err = p.request(nil, p.waitOne, 1, p.wait+pullGrace); err != nil || len(out) == 0 || p.n == 1 || p.eager {
		return out, err
	}
	return p.request(out, p.noWaitMore, p.n-1, pullGrace)
}

// take appends the messages already received, without waiting, up to n
// in all; statuses found are of ended requests.
func (p *puller) take(out []jetstream.Msg) []jetstream.Msg {
	for len(out) < p.n {
		select {
		case m := <-p.ch:
			if !isStatus(m) {
				out = append(out, &pulledMsg{msg: m, nc: p.nc})
			}
		default:
			return out
		}
	}
	return out
}

// request makes a pull request with body for up to want messages and
// appends them to out as they come, until want came, its ending status
// came or limit passed.
func (p *puller) request(out []jetstream.Msg, body []byte, want int, limit time.Duration) ([]jetstream.Msg, error) {
	p.seq++
	reply := p.prefix + strconv.FormatUint(p.seq, 10)
	if err := p.nc.PublishRequest(p.subject, reply, body); err != nil {
		return out, fmt.Errorf("pull request: %w", err)
	}
	p.timer.Reset(limit)
	defer p.timer.Stop()
	for got := 0; got < want; {
		select {
		case <-p.timer.C:
			return out, nil
		case m := <-p.ch:
			if isStatus(m) {
				if m.Subject != reply {
					continue // an earlier request's end
				}
				return out, statusErr(m)
			}
			out = append(out, &pulledMsg{msg: m, nc: p.nc})
			got++
		}
	}
	return out, nil
}

// close unsubscribes the inbox and hands back (naks) what was delivered
// and not fetched, so that it is redelivered at once rather than after
// AckWait (a released partition's next owner gets it).
func (p *puller) close() {
	_ = p.sub.Unsubscribe()
	for {
		select {
		case m := <-p.ch:
			if !isStatus(m) {
				_ = (&pulledMsg{msg: m, nc: p.nc}).Nak()
			}
		default:
			return
		}
	}
}

// isStatus reports whether m is a pull request's status, not a message.
func isStatus(m *nats.Msg) bool {
	return len(m.Data) == 0 && m.Header != nil && m.Header.Get(statusHeader) != ""
}
