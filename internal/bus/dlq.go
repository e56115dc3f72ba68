package bus

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/containsec/contain/schemas/containv1"
)

// The dead-letter stream: a message a stage's handler failed on
// max_deliver times, or panicked on, is copied here by Consume and then
// terminated in its own stream.
const (
	DLQStream = "CONTAIN_DLQ"
	// DLQPrefix starts every dead letter's subject:
	// contain.v1.dlq.<stage>.<original subject>.
	DLQPrefix = containv1.SubjectPrefix + ".dlq"

	HeaderDLQSubject    = "Contain-Dlq-Subject"
	HeaderDLQStage      = "Contain-Dlq-Stage"
	HeaderDLQReason     = "Contain-Dlq-Reason"
	HeaderDLQError      = "Contain-Dlq-Error"
	HeaderDLQDeliveries = "Contain-Dlq-Deliveries"
	HeaderDLQStream     = "Contain-Dlq-Stream"
	HeaderDLQSeq        = "Contain-Dlq-Seq"
	HeaderDLQDurable    = "Contain-Dlq-Durable"
	HeaderDLQMsgID      = "Contain-Dlq-Msg-Id"
)

// Dead-letter reasons (the reason label of contain_dead_lettered_total).
const (
	DLQHandlerError = "handler_error"
	DLQPanic        = "panic"
)

// DLQSubject is the dead-letter subject of a message a stage gave up on.
func DLQSubject(stage, subject string) string {
	return DLQPrefix + "." + stage + "." + subject
}

// ensureDLQ creates or updates the dead-letter stream; it keeps dead
// letters for maxAge (0: until replayed or deleted).
func ensureDLQ(ctx context.Context, js jetstream.JetStream, storage jetstream.StorageType, replicas int, maxAge time.Duration) error {
	_, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:       DLQStream,
		Subjects:   []string{DLQPrefix + ".>"},
		Storage:    storage,
		Replicas:   replicas,
		MaxAge:     maxAge,
		Discard:    jetstream.DiscardOld,
		Duplicates: 2 * time.Minute,
	})
	if err != nil {
		return fmt.Errorf("stream %s: %w", DLQStream, err)
	}
	return nil
}

// deadLetter copies msg to the dead-letter stream with headers naming its
// origin, stage, reason, error and delivery count. It does not terminate
// msg: the caller does once this returned nil.
func deadLetter(ctx context.Context, js jetstream.JetStream, msg jetstream.Msg, stage, durable, reason string, herr error, rep *Reporter) error {
	md, err := msg.Metadata()
	if err != nil {
		return fmt.Errorf("dead-lettering: %w", err)
	}
	out := nats.NewMsg(DLQSubject(stage, msg.Subject()))
	out.Data = msg.Data()
	for k, vs := range msg.Headers() {
		if k == jetstream.MsgIDHeader {
			out.Header.Set(HeaderDLQMsgID, vs[0])
			continue
		}
		out.Header[k] = vs
	}
	errText := ""
	if herr != nil {
		errText = herr.Error()
		if len(errText) > 1024 {
			errText = errText[:1024]
		}
	}
	out.Header.Set(HeaderDLQSubject, msg.Subject())
	out.Header.Set(HeaderDLQStage, stage)
	out.Header.Set(HeaderDLQReason, reason)
	out.Header.Set(HeaderDLQError, errText)
	out.Header.Set(HeaderDLQDeliveries, strconv.FormatUint(md.NumDelivered, 10))
	out.Header.Set(HeaderDLQStream, md.Stream)
	out.Header.Set(HeaderDLQSeq, strconv.FormatUint(md.Sequence.Stream, 10))
	out.Header.Set(HeaderDLQDurable, durable)
	// Dead-lettering the same message twice stores it once.
	out.Header.Set(jetstream.MsgIDHeader, "dlq-"+md.Stream+"-"+durable+"-"+strconv.FormatUint(md.Sequence.Stream, 10))
	pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := publishMsg(pctx, js, out, stage, rep); err != nil {
		return fmt.Errorf("dead-lettering: %w", err)
	}
	return nil
}

// DeadLetter describes one message of the dead-letter stream.
type DeadLetter struct {
	Seq        uint64 // in CONTAIN_DLQ
	Subject    string // the original subject
	Stage      string
	Reason     string
	Error      string
	Deliveries int
	Stream     string // the original stream and sequence
	StreamSeq  uint64
	Time       time.Time // when it was dead-lettered
	Size       int
}

func deadLetterOf(m *jetstream.RawStreamMsg) DeadLetter {
	h := m.Header
	d := DeadLetter{
		Seq: m.Sequence, Subject: h.Get(HeaderDLQSubject), Stage: h.Get(HeaderDLQStage),
		Reason: h.Get(HeaderDLQReason), Error: h.Get(HeaderDLQError), Stream: h.Get(HeaderDLQStream),
		Time: m.Time, Size: len(m.Data),
	}
	d.Deliveries, _ = strconv.Atoi(h.Get(HeaderDLQDeliveries))
	d.StreamSeq, _ = strconv.ParseUint(h.Get(HeaderDLQSeq), 10, 64)
	if d.Subject == "" { // not written by deadLetter: derive from the subject
		rest := strings.TrimPrefix(m.Subject, DLQPrefix+".")
		if st, subj, ok := strings.Cut(rest, "."); ok {
			d.Stage, d.Subject = st, subj
		}
	}
	return d
}

// ListDLQ returns the dead letters of stage (all stages when empty), or
// only the one at seq when seq > 0, oldest first.
func ListDLQ(ctx context.Context, js jetstream.JetStream, stage string, seq uint64) ([]DeadLetter, error) {
	var out []DeadLetter
	err := eachDLQ(ctx, js, stage, seq, func(_ jetstream.Stream, m *jetstream.RawStreamMsg) error {
		out = append(out, deadLetterOf(m))
		return nil
	})
	return out, err
}

// ReplayDLQ republishes the dead letters of stage (all when empty; only
// seq when seq > 0) to their original subjects, without their dead-letter
// headers, and deletes each from the dead-letter stream once its stream
// acknowledged it. It returns how many it replayed.
func ReplayDLQ(ctx context.Context, js jetstream.JetStream, stage string, seq uint64) (int, error) {
	n := 0
	err := eachDLQ(ctx, js, stage, seq, func(st jetstream.Stream, m *jetstream.RawStreamMsg) error {
		d := deadLetterOf(m)
		if d.Subject == "" {
			return fmt.Errorf("dlq %d: no original subject", m.Sequence)
		}
		out := nats.NewMsg(d.Subject)
		out.Data = m.Data
		for k, vs := range m.Header {
			if strings.HasPrefix(k, "Contain-Dlq-") || k == jetstream.MsgIDHeader {
				continue
			}
			out.Header[k] = vs
		}
		// A replay retried is stored once; it is never taken for the
		// original (whose id the stream may still remember).
		out.Header.Set(jetstream.MsgIDHeader, "dlq-replay-"+strconv.FormatUint(m.Sequence, 10))
		if err := publishMsg(ctx, js, out, d.Stage, reporterFrom(ctx)); err != nil {
			return fmt.Errorf("dlq %d: replaying to %s: %w", m.Sequence, d.Subject, err)
		}
		if err := st.DeleteMsg(ctx, m.Sequence); err != nil {
			return fmt.Errorf("dlq %d: replayed, but not deleted: %w", m.Sequence, err)
		}
		n++
		return nil
	})
	return n, err
}

func eachDLQ(ctx context.Context, js jetstream.JetStream, stage string, seq uint64, f func(jetstream.Stream, *jetstream.RawStreamMsg) error) error {
	st, err := js.Stream(ctx, DLQStream)
	if err != nil {
		return fmt.Errorf("stream %s: %w", DLQStream, err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		return fmt.Errorf("stream %s: %w", DLQStream, err)
	}
	first, last := info.State.FirstSeq, info.State.LastSeq
	if seq > 0 {
		first, last = seq, seq
	}
	if info.State.Msgs == 0 {
		return nil
	}
	for s := first; s <= last; s++ {
		m, err := st.GetMsg(ctx, s)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			if seq > 0 {
				return fmt.Errorf("dlq %d: %w", seq, err)
			}
			continue
		}
		if err != nil {
			return fmt.Errorf("dlq %d: %w", s, err)
		}
		if stage != "" && !strings.HasPrefix(m.Subject, DLQPrefix+"."+stage+".") {
			continue
		}
		if err := f(st, m); err != nil {
			return err
		}
	}
	return nil
}
