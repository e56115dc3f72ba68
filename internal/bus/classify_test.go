package bus

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

func TestClassify(t *testing.T) {
	cases := []struct {
		err       error
		kind      string
		permanent bool
	}{
		{nats.ErrTimeout, KindTimeout, false},
		{fmt.Errorf("x: %w", context.DeadlineExceeded), KindTimeout, false},
		{jetstream.ErrNoStreamResponse, KindNoResponders, false},
		{nats.ErrNoResponders, KindNoResponders, false},
		{jetstream.ErrTooManyStalledMsgs, KindTooManyAcks, false},
		{nats.ErrConnectionReconnecting, KindDisconnected, false},
		{nats.ErrDisconnected, KindDisconnected, false},
		{&jetstream.APIError{Code: 503, ErrorCode: 10008}, KindUnavailable, false},
		{errors.New("something new"), KindOther, false},
		{fmt.Errorf("p: %w", nats.ErrMaxPayload), KindMaxPayload, true},
		{fmt.Errorf("%w: x", nats.ErrPermissionViolation), KindPermission, true},
		{fmt.Errorf("%w: %w", ErrNoStream, jetstream.ErrNoStreamResponse), KindNoStream, true},
		{fmt.Errorf("%w: 9 bytes", ErrTooLarge), KindTooLarge, true},
		{&jetstream.APIError{Code: 400, ErrorCode: jetstream.JSErrCodeStreamMessageExceedsMaximum}, KindTooLarge, true},
		{&jetstream.APIError{Code: 400, ErrorCode: 10071}, KindStreamRefused, true},
		{nats.ErrConnectionClosed, KindClosed, true},
		{nats.ErrBadSubject, KindInvalid, true},
		{context.Canceled, KindCanceled, true},
	}
	for _, c := range cases {
		kind, perm := classify(c.err)
		if kind != c.kind || perm != c.permanent {
			t.Errorf("classify(%v) = %s, %v; want %s, %v", c.err, kind, perm, c.kind, c.permanent)
		}
	}
}

func TestRecordViolation(t *testing.T) {
	nc := &nats.Conn{}
	recordViolation(nc, fmt.Errorf("%w: %s", nats.ErrPermissionViolation, `Permissions Violation for Publish to "contain.v1.raw.h2"`))
	if violation(nc, "contain.v1.raw.h2") == nil {
		t.Fatal("violation not recorded")
	}
	if violation(nc, "contain.v1.raw.h1") != nil {
		t.Fatal("violation for another subject")
	}
	forgetViolations(nc)
	if violation(nc, "contain.v1.raw.h2") != nil {
		t.Fatal("violation kept after close")
	}
}
