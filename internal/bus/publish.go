package bus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/containsec/contain/internal/logfields"
	"github.com/containsec/contain/internal/metrics"
	"github.com/containsec/contain/schemas/containv1"
)

// Publish errors of contain's own.
var (
	// ErrTooLarge: a batch exceeds MaxPayload once encoded.
	ErrTooLarge = errors.New("message too large")
	// ErrNoStream: no stream captures the subject (the server answered
	// "no responders" and lists no stream for it).
	ErrNoStream = errors.New("no stream matches the subject")
)

// Publish failure kinds (the reason label of contain_publish_*_total).
const (
	KindTimeout       = "timeout"
	KindNoResponders  = "no_responders"
	KindTooManyAcks   = "too_many_pending"
	KindDisconnected  = "disconnected"
	KindMaxPayload    = "max_payload"
	KindPermission    = "permission"
	KindNoStream      = "no_stream"
	KindTooLarge      = "too_large"
	KindClosed        = "connection_closed"
	KindInvalid       = "invalid"
	KindCanceled      = "canceled"
	KindStreamRefused = "stream_refused"
	KindUnavailable   = "unavailable"
	KindOther         = "other"
)

// classify names a publish error and says whether retrying it can help.
// It is pure. Transient: timeouts, JetStream not answering yet, too many
// outstanding acks, a lost connection, a stream's 5xx answer. Permanent:
// a payload over the server's max_payload or the stream's max_msg_size,
// a permissions violation, no stream for the subject, a closed
// connection, any other API refusal. Unknown errors are transient (and
// counted as "other"), so nothing is dropped on an error nobody listed.
func classify(err error) (kind string, permanent bool) {
	var apiErr *jetstream.APIError
	switch {
	case err == nil:
		return "", false
	case errors.Is(err, context.Canceled):
		return KindCanceled, true
	case errors.Is(err, ErrTooLarge):
		return KindTooLarge, true
	case errors.Is(err, ErrNoStream):
		return KindNoStream, true
	case errors.Is(err, nats.ErrMaxPayload):
		return KindMaxPayload, true
	case errors.Is(err, nats.ErrPermissionViolation), errors.Is(err, nats.ErrAuthorization):
		return KindPermission, true
	case errors.Is(err, nats.ErrConnectionClosed):
		return KindClosed, true
	case errors.Is(err, nats.ErrBadSubject), errors.Is(err, nats.ErrInvalidMsg):
		return KindInvalid, true
	case errors.Is(err, jetstream.ErrNoStreamResponse), errors.Is(err, nats.ErrNoResponders):
		return KindNoResponders, false
	case errors.Is(err, jetstream.ErrTooManyStalledMsgs), errors.Is(err, nats.ErrSlowConsumer):
		return KindTooManyAcks, false
	case errors.Is(err, nats.ErrConnectionReconnecting), errors.Is(err, nats.ErrConnectionDraining),
		errors.Is(err, nats.ErrDisconnected), errors.Is(err, nats.ErrStaleConnection):
		return KindDisconnected, false
	case errors.Is(err, nats.ErrTimeout), errors.Is(err, context.DeadlineExceeded):
		return KindTimeout, false
	case errors.As(err, &apiErr):
		switch {
		case apiErr.ErrorCode == jetstream.JSErrCodeStreamMessageExceedsMaximum:
			return KindTooLarge, true
		case apiErr.ErrorCode == jetstream.JSErrCodeStreamNotFound:
			return KindNoStream, true
		case apiErr.Code >= 500 || apiErr.Code == 0 || apiErr.Code == 408:
			return KindUnavailable, false
		}
		return KindStreamRefused, true
	}
	return KindOther, false
}

// Reporter counts and logs publish trouble for Publish. It travels in
// the context (WithReporter) so every stage's publishes are counted
// without each stage threading it through; the stage label is the
// batch's Stage. Without one Publish still classifies and gives up on
// permanent errors, but neither counts nor logs.
type Reporter struct {
	M   *metrics.Metrics
	Log *slog.Logger
	// AttemptTimeout bounds one publish attempt (the wait for the
	// stream's ack); default 5s.
	AttemptTimeout time.Duration
	// StallAfter is how long a publish retries before it is reported
	// stalled (contain_publish_stalled, a log line); default a minute.
	StallAfter time.Duration

	// MaxDeliver is how many times Consume lets a handler fail on a
	// message before it dead-letters it (ConsumerConfig.MaxDeliver
	// overrides it); default DefaultMaxDeliver.
	MaxDeliver int
	// Health receives each consumer's state; HealthBounds its bounds.
	Health       *Health
	HealthBounds HealthConfig

	// Trace, when set, sees every batch at the points of its way through
	// the bus (TraceFlushing, TracePublished, TraceReceived, TraceHandled), on the
	// stage's goroutine: the per-hop latency of benchmarks. It must be
	// quick and must not keep or change the batch.
	Trace func(point, stage string, b *containv1.Batch)

	mu     sync.Mutex
	logged map[string]time.Time
}

// Trace points (Reporter.Trace).
const (
	// TraceFlushing: a Batcher is about to publish the batch.
	TraceFlushing = "flushing"
	// TracePublished: the stream acknowledged the batch (Publish).
	TracePublished = "published"
	// TraceReceived: Consume decoded the batch, before the handler.
	TraceReceived = "received"
	// TraceHandled: the handler returned without error for the fetch
	// that held the batch (what it published is published).
	TraceHandled = "handled"
)

// trace calls r.Trace if there is one.
func (r *Reporter) trace(point, stage string, b *containv1.Batch) {
	if r != nil && r.Trace != nil {
		r.Trace(point, stage, b)
	}
}

type reporterKey struct{}

// WithReporter attaches r to ctx for Publish and Consume.
func WithReporter(ctx context.Context, r *Reporter) context.Context {
	return context.WithValue(ctx, reporterKey{}, r)
}

func reporterFrom(ctx context.Context) *Reporter {
	r, _ := ctx.Value(reporterKey{}).(*Reporter)
	return r
}

// once reports whether key was not logged within every (0: ever).
func (r *Reporter) once(key string, every time.Duration) bool {
	if r == nil || r.Log == nil {
		return false
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.logged == nil {
		r.logged = map[string]time.Time{}
	}
	last, seen := r.logged[key]
	if seen && (every == 0 || time.Since(last) < every) {
		return false
	}
	r.logged[key] = time.Now()
	return true
}

func (r *Reporter) retried(stage, kind, subject string, err error, wait time.Duration) {
	if r == nil {
		return
	}
	if r.M != nil {
		r.M.PublishRetries.WithLabelValues(stage, kind).Inc()
	}
	if r.once("retry/"+stage+"/"+kind, time.Minute) {
		r.Log.Warn("publish failed, retrying (logged once a minute per cause; see contain_publish_retries_total)",
			logfields.Stage, stage, logfields.Subject, subject, logfields.Reason, kind, logfields.RetryIn, wait, logfields.Err, err)
	}
}

func (r *Reporter) failed(stage, kind, subject string, err error) {
	if r == nil {
		return
	}
	if r.M != nil {
		r.M.PublishFailed.WithLabelValues(stage, kind).Inc()
	}
	if kind != KindCanceled && r.once("failed/"+stage+"/"+kind, 0) {
		r.Log.Error("publish failed permanently, not retried (logged once per cause; see contain_publish_failed_total)",
			logfields.Stage, stage, logfields.Subject, subject, logfields.Reason, kind, logfields.Err, err)
	}
}

func (r *Reporter) stalled(stage, subject string, on bool, since time.Duration, err error) {
	if r == nil {
		return
	}
	if r.M != nil {
		v := 0.0
		if on {
			v = 1
		}
		r.M.PublishStalled.WithLabelValues(stage).Set(v)
	}
	if on && r.once("stalled/"+stage, time.Minute) {
		r.Log.Error("publish stalled: retrying a transient error without end (see contain_publish_stalled)",
			logfields.Stage, stage, logfields.Subject, subject, logfields.For, since.Round(time.Second), logfields.Err, err)
	}
}

// Publish sends one batch to JetStream and waits for the stream's ack.
// A transient error (see classify) is retried with back-off until ctx
// ends; a permanent one is returned at once, for the caller to drop and
// count or dead-letter. A retried batch keeps its Nats-Msg-Id, so the
// stream stores it once. The Reporter in ctx (WithReporter) counts
// retries (contain_publish_retries_total) and failures
// (contain_publish_failed_total) and says when retries do not end.
func Publish(ctx context.Context, js jetstream.JetStream, subject string, b *containv1.Batch) error {
	rep := reporterFrom(ctx)
	stage := b.GetStage()
	msg, err := NewMsg(subject, b)
	if err != nil {
		kind, _ := classify(err)
		rep.failed(stage, kind, subject, err)
		return err
	}
	if err := publishMsg(ctx, js, msg, stage, rep); err != nil {
		return err
	}
	rep.trace(TracePublished, stage, b)
	return nil
}

func publishMsg(ctx context.Context, js jetstream.JetStream, msg *nats.Msg, stage string, rep *Reporter) error {
	stallAfter := time.Minute
	if rep != nil && rep.StallAfter > 0 {
		stallAfter = rep.StallAfter
	}
	attempt := 5 * time.Second
	if rep != nil && rep.AttemptTimeout > 0 {
		attempt = rep.AttemptTimeout
	}
	start := time.Now()
	isStalled := false
	defer func() {
		if isStalled {
			rep.stalled(stage, msg.Subject, false, 0, nil)
		}
	}()
	backoff := 50 * time.Millisecond
	for {
		actx, cancel := context.WithTimeout(ctx, attempt)
		_, err := js.PublishMsg(actx, msg, jetstream.WithRetryAttempts(0))
		cancel()
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			rep.failed(stage, KindCanceled, msg.Subject, err)
			return fmt.Errorf("publishing to %s: %w", msg.Subject, err)
		}
		err = explain(ctx, js, msg.Subject, err)
		kind, permanent := classify(err)
		if permanent {
			rep.failed(stage, kind, msg.Subject, err)
			return fmt.Errorf("publishing to %s: %s: %w", msg.Subject, kind, err)
		}
		rep.retried(stage, kind, msg.Subject, err, backoff)
		if d := time.Since(start); d >= stallAfter {
			isStalled = true
			rep.stalled(stage, msg.Subject, true, d, err)
		}
		select {
		case <-ctx.Done():
			rep.failed(stage, KindCanceled, msg.Subject, err)
			return fmt.Errorf("publishing to %s: %w", msg.Subject, err)
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 2*time.Second)
	}
}

// explain turns an ambiguous error into a definite one where the server
// can tell: "no responders" is a JetStream not answering yet (transient)
// unless JetStream answers that no stream captures the subject; a
// timeout follows a permissions violation the server reported
// asynchronously for the subject.
func explain(ctx context.Context, js jetstream.JetStream, subject string, err error) error {
	if errors.Is(err, jetstream.ErrNoStreamResponse) || errors.Is(err, nats.ErrNoResponders) {
		lctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		if _, lerr := js.StreamNameBySubject(lctx, subject); errors.Is(lerr, jetstream.ErrStreamNotFound) {
			return fmt.Errorf("%w: %w", ErrNoStream, err)
		}
		return err
	}
	if perr := violation(js.Conn(), subject); perr != nil {
		return fmt.Errorf("%w (%w)", perr, err)
	}
	return err
}

// PublishAll sends msgs in order without waiting for each stream ack in
// turn (JetStream's asynchronous publish: one write and one read for many
// batches instead of a round trip each), then waits for every ack. A
// message whose publish failed, or whose ack did not come within the
// Reporter's AttemptTimeout, is published again as Publish does, with its
// Nats-Msg-Id, so the stream stores it once; it then lands after the later
// messages that succeeded. stage labels the Reporter's counts.
func PublishAll(ctx context.Context, js jetstream.JetStream, msgs []*nats.Msg, stage string) error {
	rep := reporterFrom(ctx)
	if len(msgs) == 1 {
		return publishMsg(ctx, js, msgs[0], stage, rep)
	}
	attempt := 5 * time.Second
	if rep != nil && rep.AttemptTimeout > 0 {
		attempt = rep.AttemptTimeout
	}
	futs := make([]jetstream.PubAckFuture, len(msgs))
	for i, msg := range msgs {
		f, err := js.PublishMsgAsync(msg)
		if err != nil {
			if kind, permanent := classify(err); permanent {
				rep.failed(stage, kind, msg.Subject, err)
				return fmt.Errorf("publishing to %s: %s: %w", msg.Subject, kind, err)
			}
			continue // retried below
		}
		futs[i] = f
	}
	timer := time.NewTimer(attempt)
	defer timer.Stop()
	expired := false
	var retry []*nats.Msg
	for i, f := range futs {
		if f == nil {
			retry = append(retry, msgs[i])
			continue
		}
		if expired {
			select {
			case <-f.Ok():
			default:
				retry = append(retry, msgs[i])
			}
			continue
		}
		select {
		case <-f.Ok():
		case <-f.Err():
			retry = append(retry, msgs[i])
		case <-timer.C:
			expired = true
			retry = append(retry, msgs[i])
		case <-ctx.Done():
			rep.failed(stage, KindCanceled, msgs[i].Subject, ctx.Err())
			return fmt.Errorf("publishing to %s: %w", msgs[i].Subject, ctx.Err())
		}
	}
	for _, msg := range retry {
		if err := publishMsg(ctx, js, msg, stage, rep); err != nil {
			return err
		}
	}
	return nil
}
