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
	return readStreamOn(ctx, js, stream, subject, from, end, follow,
		func(_ string, b *containv1.Batch) error { return fn(b) }, malformed)
}

// readStreamOn is readStream giving fn the subject each batch was
// published on: a fleet batch's part's is its host's own
// (containv1.FleetPartSubject).
func readStreamOn(ctx context.Context, js jetstream.JetStream, stream, subject string, from, end time.Time, follow bool,
	fn func(subject string, b *containv1.Batch) error, malformed func(subject string, err error)) error {
	cons, err := js.OrderedConsumer(ctx, stream, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{subject},
		DeliverPolicy:  jetstream.DeliverByStartTimePolicy,
		OptStartTime:   &from,
	})
	if err != nil {
		return fmt.Errorf("%s: %w", stream, err)
	}
	// Without follow the read ends at what the stream held when it began:
	// the first message's pending count fixes how many come, so messages
	// published while reading (replay --to-subject into the events it
	// reads) are never read back in a loop.
	var left uint64
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
		md, mdErr := msg.Metadata()
		if mdErr == nil && !end.IsZero() && md.Timestamp.After(end) {
			return nil
		}
		if !follow && left == 0 {
			if mdErr != nil {
				return fmt.Errorf("%s: %w", stream, mdErr)
			}
			left = md.NumPending + 1
		}
		// A fleet batch's parts one by one (bus.DecodeParts).
		bs, err := bus.DecodeParts(msg.Data())
		if err != nil {
			malformed(msg.Subject(), err)
		}
		fleet := len(bs) > 0 && containv1.IsFleetSubject(msg.Subject())
		for _, b := range bs {
			on := msg.Subject()
			if fleet {
				on = containv1.FleetPartSubject(on, b.GetHost())
			}
			if err := fn(on, b); err != nil {
				return err
			}
		}
		if !follow {
			if left--; left == 0 {
				return nil // all the stream held when the read began
			}
		}
	}
	return nil
}
