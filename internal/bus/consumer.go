package bus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/containsec/contain/internal/metrics"
	"github.com/containsec/contain/schemas/containv1"
)

// ConsumerConfig configures a durable pull consumer.
type ConsumerConfig struct {
	Stream  string
	Durable string
	// FilterSubject narrows the stream, e.g. to one host.
	FilterSubject string
	// Stage labels metrics.
	Stage string
	// Fetch is how many messages one handler call receives at most.
	Fetch int
	// FetchWait bounds how long a fetch waits for messages.
	FetchWait time.Duration
	// AckWait is how long a delivered message may stay unacknowledged.
	AckWait time.Duration
	// RetryDelay is the back-off before a failed message is redelivered.
	RetryDelay time.Duration
	// DeliverNew starts a new durable at the stream's end instead of its
	// beginning.
	DeliverNew bool
}

func (c *ConsumerConfig) defaults() {
	if c.Fetch <= 0 {
		c.Fetch = 64
	}
	if c.FetchWait <= 0 {
		c.FetchWait = 200 * time.Millisecond
	}
	if c.AckWait <= 0 {
		c.AckWait = 30 * time.Second
	}
	if c.RetryDelay <= 0 {
		c.RetryDelay = time.Second
	}
}

// Handler processes the decoded batches of one fetch. Returning an error
// makes every message of the fetch be redelivered after RetryDelay.
type Handler func(ctx context.Context, batches []*containv1.Batch) error

// Consume runs a durable pull consumer until ctx ends.
func Consume(ctx context.Context, js jetstream.JetStream, cfg ConsumerConfig, h Handler, m *metrics.Metrics, log *slog.Logger) error {
	cfg.defaults()
	if cfg.Stream == "" || cfg.Durable == "" {
		return errors.New("consumer: stream and durable must be set")
	}
	policy := jetstream.DeliverAllPolicy
	if cfg.DeliverNew {
		policy = jetstream.DeliverNewPolicy
	}
	var cons jetstream.Consumer
	for {
		var err error
		cons, err = js.CreateOrUpdateConsumer(ctx, cfg.Stream, jetstream.ConsumerConfig{
			Durable:       cfg.Durable,
			FilterSubject: cfg.FilterSubject,
			AckPolicy:     jetstream.AckExplicitPolicy,
			AckWait:       cfg.AckWait,
			DeliverPolicy: policy,
			MaxAckPending: 4 * cfg.Fetch,
			MaxDeliver:    -1,
		})
		if err == nil {
			break
		}
		log.Warn("creating consumer, retrying", "stream", cfg.Stream, "durable", cfg.Durable, "err", err)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(time.Second):
		}
	}
	var loggedMalformed atomic.Bool
	backoff := cfg.RetryDelay
	for ctx.Err() == nil {
		msgs, err := cons.Fetch(cfg.Fetch, jetstream.FetchMaxWait(cfg.FetchWait))
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			m.Errors.WithLabelValues(cfg.Stage, "fetch").Inc()
			log.Warn("fetch failed", "durable", cfg.Durable, "err", err)
			time.Sleep(200 * time.Millisecond)
			continue
		}
		var (
			good    []jetstream.Msg
			batches []*containv1.Batch
		)
		for msg := range msgs.Messages() {
			b, err := Decode(msg.Data())
			if err != nil {
				m.Malformed.WithLabelValues(cfg.Stage).Inc()
				if !loggedMalformed.Swap(true) {
					log.Error("skipping malformed message (logged once; see contain_malformed_messages_total)",
						"subject", msg.Subject(), "bytes", len(msg.Data()), "err", err)
				}
				_ = msg.Term()
				continue
			}
			good = append(good, msg)
			batches = append(batches, b)
			n := float64(len(b.Events))
			m.EventsIn.WithLabelValues(cfg.Stage).Add(n)
			m.BatchEvents.WithLabelValues(cfg.Stage).Observe(n)
		}
		if err := msgs.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) && ctx.Err() == nil {
			log.Debug("fetch ended", "err", err)
		}
		if len(batches) == 0 {
			continue
		}
		if err := h(ctx, batches); err != nil {
			m.Errors.WithLabelValues(cfg.Stage, "handler").Inc()
			log.Warn("handler failed; messages will be redelivered", "durable", cfg.Durable, "messages", len(good), "retry_in", backoff, "err", err)
			for _, msg := range good {
				_ = msg.NakWithDelay(backoff)
			}
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, 30*time.Second)
			continue
		}
		backoff = cfg.RetryDelay
		for _, msg := range good {
			if err := msg.Ack(); err != nil {
				m.Errors.WithLabelValues(cfg.Stage, "ack").Inc()
				log.Warn("ack failed; message may be redelivered", "err", fmt.Errorf("ack: %w", err))
			}
		}
	}
	return nil
}
