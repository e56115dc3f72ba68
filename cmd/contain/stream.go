package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/containsec/contain/internal/bus"
	"github.com/containsec/contain/schemas/containv1"
)

// readStream reads stream's messages on subject from the time from, through
// an ordered consumer that disturbs no other reader, and calls fn for each
// decoded batch (malformed for each message that does not decode). It
// returns when it has caught up, unless follow, or at a message stored
// after end (zero: no end).
func readStream(ctx context.Context, js jetstream.JetStream, stream, subject string, from, end time.Time, follow bool,
	fn func(*containv1.Batch) error, malformed func(subject string, err error)) error {
	cons, err := js.OrderedConsumer(ctx, stream, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{subject},
		DeliverPolicy:  jetstream.DeliverByStartTimePolicy,
		OptStartTime:   &from,
	})
	if err != nil {
		return fmt.Errorf("%s: %w", stream, err)
	}
	for ctx.Err() == nil {
		msg, err := cons.Next(jetstream.FetchMaxWait(time.Second))
		if err != nil {
			if errors.Is(err, jetstream.ErrNoMessages) || errors.Is(err, context.DeadlineExceeded) || strings.Contains(err.Error(), "timeout") {
				if follow {
					continue
				}
				return nil // caught up
			}
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("%s: %w", stream, err)
		}
		if !end.IsZero() {
			if md, err := msg.Metadata(); err == nil && md.Timestamp.After(end) {
				return nil
			}
		}
		// A fleet batch's parts one by one (bus.DecodeParts).
		bs, err := bus.DecodeParts(msg.Data())
		if err != nil {
			malformed(msg.Subject(), err)
		}
		for _, b := range bs {
			if err := fn(b); err != nil {
				return err
			}
		}
	}
	return nil
}
