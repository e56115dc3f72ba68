package responder

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/containsec/contain/internal/auth"
	"github.com/containsec/contain/internal/freezer"
	"github.com/containsec/contain/internal/logfields"
	"github.com/containsec/contain/internal/metrics"
	"github.com/containsec/contain/schemas/containv1"
)

// Control verbs, served on containv1.ControlSubject(host, verb).
const (
	VerbRelease        = "release"
	VerbQuarantineList = "quarantine.list"
)

// ReleaseRequest is the JSON body of a release request, carried signed
// (auth.Signed, purpose ReleasePurpose(host)) by the operator's
// credentials.
type ReleaseRequest struct {
	ContainerID string `json:"container_id"`
	// Actor is who releases. The responder sets it from the verified
	// signature (credential name and OS user, auth.Signed.Actor); a value
	// in the request is ignored.
	Actor  string `json:"actor,omitempty"`
	Reason string `json:"reason"`
	// Note is free text from the operator (`contain release --actor`),
	// recorded in the reason, never as the actor.
	Note string `json:"note,omitempty"`
}

// ReleasePurpose is what a release request for host is signed for: a
// signature for one host is refused by every other.
func ReleasePurpose(host string) string {
	return "control " + VerbRelease + " " + containv1.SubjectToken(host)
}

// ControlReply is the JSON body of every control reply.
type ControlReply struct {
	OK    bool   `json:"ok"`
	Error string `json:"error,omitempty"`
	// Action is the RELEASE action event (protojson), for release.
	Action json.RawMessage `json:"action,omitempty"`
	// Quarantined is the list, for quarantine.list.
	Quarantined []Quarantine `json:"quarantined,omitempty"`
}

// maxControlBytes bounds a control request.
const maxControlBytes = 64 << 10

// ParseReleaseRequest decodes and checks a release request. It is pure and
// safe on any input.
func ParseReleaseRequest(data []byte) (ReleaseRequest, error) {
	var req ReleaseRequest
	if len(data) > maxControlBytes {
		return req, fmt.Errorf("release request: %d bytes exceeds %d", len(data), maxControlBytes)
	}
	if err := json.Unmarshal(data, &req); err != nil {
		return req, fmt.Errorf("release request: %w", err)
	}
	switch {
	case !freezer.ValidID(req.ContainerID):
		return req, fmt.Errorf("release request: invalid container_id %q", truncate(req.ContainerID, 128))
	case req.Reason == "":
		return req, errors.New("release request: reason must be set (why it is released)")
	case len(req.Actor) > 256 || len(req.Reason) > 4096 || len(req.Note) > 256:
		return req, errors.New("release request: actor, note or reason too long")
	}
	return req, nil
}

func (r *Responder) serveControl(ctx context.Context) ([]*nats.Subscription, error) {
	var subs []*nats.Subscription
	for verb, h := range map[string]func(context.Context, []byte) ControlReply{
		VerbRelease: r.controlRelease,
		VerbQuarantineList: func(context.Context, []byte) ControlReply {
			return ControlReply{OK: true, Quarantined: r.Quarantined()}
		},
	} {
		subj := containv1.ControlSubject(r.cfg.Host, verb)
		sub, err := r.nc.Subscribe(subj, func(msg *nats.Msg) {
			reply := h(ctx, msg.Data)
			if !reply.OK {
				r.m.Errors.WithLabelValues(metrics.StageResponder, "control").Inc()
			}
			data, err := json.Marshal(reply)
			if err != nil {
				data = []byte(`{"ok":false,"error":"encoding reply"}`)
			}
			if msg.Reply != "" {
				if err := msg.Respond(data); err != nil {
					r.log.Warn("control reply failed", logfields.Subject, subj, logfields.Err, err)
				}
			}
		})
		if err != nil {
			for _, s := range subs {
				_ = s.Unsubscribe()
			}
			return nil, fmt.Errorf("subscribing %s: %w", subj, err)
		}
		subs = append(subs, sub)
	}
	if err := r.nc.Flush(); err != nil {
		for _, s := range subs {
			_ = s.Unsubscribe()
		}
		return nil, fmt.Errorf("control subscriptions: %w", err)
	}
	return subs, nil
}

func (r *Responder) controlRelease(ctx context.Context, data []byte) ControlReply {
	env, err := r.operators.Verify(data, ReleasePurpose(r.cfg.Host))
	if err != nil {
		reason := auth.Reason(err)
		r.m.Refused.WithLabelValues(metrics.StageResponder, reason).Inc()
		if _, logged := r.refusedLogged.LoadOrStore(reason, true); !logged {
			r.log.Error("refusing control request (logged once per reason; see contain_refused_total)",
				logfields.Verb, VerbRelease, logfields.Reason, reason, logfields.Err, err)
		}
		return ControlReply{Error: "release: " + err.Error()}
	}
	req, err := ParseReleaseRequest(env.Body)
	if err != nil {
		r.m.Malformed.WithLabelValues(metrics.StageResponder).Inc()
		return ControlReply{Error: err.Error()}
	}
	req.Actor = truncate(env.Actor(), 256)
	if req.Note != "" {
		req.Reason = truncate(req.Reason+" (note: "+req.Note+")", 4096)
	}
	r.log.Info("release requested", logfields.ContainerID, req.ContainerID, logfields.Actor, req.Actor, logfields.Reason, req.Reason)
	ev, err := r.Release(ctx, req)
	reply := ControlReply{OK: err == nil}
	if err != nil {
		reply.Error = err.Error()
	}
	if ev != nil {
		if b, merr := protojson.Marshal(ev); merr == nil {
			reply.Action = b
		}
	}
	return reply
}

// Release thaws a container, verifies it runs, forgets its quarantine and
// publishes a RELEASE action (FAILED or SKIPPED ones too). It returns the
// action and an error when the container is not running afterwards.
func (r *Responder) Release(ctx context.Context, req ReleaseRequest) (*containv1.Event, error) {
	r.actMu.Lock()
	out, act := r.newAction(nil, containv1.Action_TYPE_RELEASE)
	out.ContainerId = req.ContainerID
	act.Actor = req.Actor
	act.Reason = req.Reason
	d := &Detail{}
	q := r.quarantined[req.ContainerID]
	if q != nil {
		out.ContainerName, out.ImageRef, out.ImageDigest = q.ContainerName, q.ImageRef, q.ImageDigest
		act.AlertId = parseID(q.AlertID)
		act.Score = q.Score
	}
	res, err := r.release(ctx, req, q, act, d)
	if res == containv1.Action_RESULT_FAILED {
		r.m.Errors.WithLabelValues(metrics.StageResponder, "thaw").Inc()
	}
	r.finish(out, act, res, d)
	r.actMu.Unlock()

	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if perr := r.publish(pctx, []*containv1.Event{out}); perr != nil {
		r.log.Error("release action not published", logfields.ContainerID, req.ContainerID, logfields.Err, perr)
		if err == nil {
			err = perr
		}
	}
	return out, err
}

// release does the work of Release with actMu held.
func (r *Responder) release(ctx context.Context, req ReleaseRequest, q *Quarantine, act *containv1.Action, d *Detail) (containv1.Action_Result, error) {
	fail := func(decision string, err error) (containv1.Action_Result, error) {
		d.Decision, d.Error = decision, err.Error()
		return containv1.Action_RESULT_FAILED, fmt.Errorf("%s: %w", decision, err)
	}
	target, err := freezer.Locate(r.cfg.roots(), req.ContainerID)
	if err != nil && q != nil && q.target != nil && errors.Is(err, freezer.ErrNotFound) {
		// Paused through the engine's reported pid (no runc state).
		target, err = q.target, nil
	}
	if err != nil {
		if q != nil && errors.Is(err, freezer.ErrNotFound) {
			delete(r.quarantined, req.ContainerID)
			d.Decision = "container is gone; quarantine record dropped"
			return containv1.Action_RESULT_SKIPPED, fmt.Errorf("releasing %s: %w", req.ContainerID, err)
		}
		return fail("container not found", err)
	}
	d.Cgroup = firstNonEmpty(target.FreezerV1, target.Cgroup2)
	if q == nil {
		// Not paused by this responder: thaw only a proven container
		// (never a host unit an administrator froze).
		if err := freezer.Prove(r.cfg.roots(), target, r.protect.protected()); errors.Is(err, freezer.ErrRefused) {
			r.refused(req.ContainerID, err)
			return fail("refused", err)
		}
	}
	var m freezer.Method
	if q != nil {
		m = q.method
	} else {
		m = freezer.FrozenBy(r.candidates(target), target)
	}
	if m == nil {
		d.Decision = "not frozen; nothing to release"
		return containv1.Action_RESULT_SKIPPED, fmt.Errorf("releasing %s: %s", req.ContainerID, d.Decision)
	}
	act.Method = m.Name()
	vctx, cancel := context.WithTimeout(ctx, r.cfg.VerifyTimeout)
	defer cancel()
	start := time.Now()
	if err := m.Thaw(vctx, target); err != nil {
		return fail("thaw failed; container still frozen", err)
	}
	// Another method may hold it frozen too (e.g. runc pause on top).
	if other := freezer.FrozenBy(r.candidates(target), target); other != nil {
		if err := other.Thaw(vctx, target); err != nil {
			return fail("thaw failed; container still frozen by "+other.Name(), err)
		}
	}
	d.FreezeUs = time.Since(start).Microseconds()
	delete(r.quarantined, req.ContainerID)
	r.released[req.ContainerID] = OperatorRelease{At: r.now(), Actor: req.Actor, Reason: req.Reason}
	d.Decision = "released and verified thawed"
	if q == nil {
		d.Decision += " (it was not paused by this responder)"
	}
	return containv1.Action_RESULT_OK, nil
}

func parseID(s string) []byte {
	var b []byte
	for i := 0; i+1 < len(s); i++ {
		if s[i] == '-' {
			continue
		}
		hi, lo := unhex(s[i]), unhex(s[i+1])
		if hi < 0 || lo < 0 {
			return nil
		}
		b = append(b, byte(hi<<4|lo))
		i++
	}
	return b
}

func unhex(c byte) int {
	switch {
	case c >= '0' && c <= '9':
		return int(c - '0')
	case c >= 'a' && c <= 'f':
		return int(c-'a') + 10
	case c >= 'A' && c <= 'F':
		return int(c-'A') + 10
	}
	return -1
}

// Quarantined lists what this responder has paused, with each container's
// current state, oldest first.
func (r *Responder) Quarantined() []Quarantine {
	r.actMu.Lock()
	defer r.actMu.Unlock()
	out := make([]Quarantine, 0, len(r.quarantined))
	for _, q := range r.quarantined {
		c := *q
		c.State = "thawed"
		if ok, err := q.method.Frozen(q.target); err != nil {
			if errors.Is(err, freezer.ErrExited) {
				c.State = "gone"
			} else {
				c.State = "unknown: " + err.Error()
			}
		} else if ok {
			c.State = "frozen"
		}
		c.target, c.method = nil, nil
		out = append(out, c)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Since.Before(out[j].Since) })
	return out
}

// ErrNoResponder: no responder serves the host's control subjects.
var ErrNoResponder = errors.New("no responder is serving this host")

func request(ctx context.Context, nc *nats.Conn, host, verb string, body []byte) (ControlReply, error) {
	var reply ControlReply
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
	}
	msg, err := nc.RequestWithContext(ctx, containv1.ControlSubject(host, verb), body)
	if err != nil {
		if errors.Is(err, nats.ErrNoResponders) {
			return reply, fmt.Errorf("%s on host %q: %w", verb, host, ErrNoResponder)
		}
		return reply, fmt.Errorf("%s on host %q: %w", verb, host, err)
	}
	if err := json.Unmarshal(msg.Data, &reply); err != nil {
		return reply, fmt.Errorf("%s on host %q: bad reply: %w", verb, host, err)
	}
	return reply, nil
}

// Release asks host's responder to thaw containerID, signed by signer
// (the responder records the signer's identity as the actor), with reason
// and an optional note. It returns the RELEASE action the responder
// published (also when the release failed, if the responder recorded one).
func Release(ctx context.Context, nc *nats.Conn, signer *auth.Signer, host, containerID, reason, note string) (*containv1.Event, error) {
	req, err := json.Marshal(ReleaseRequest{ContainerID: containerID, Reason: reason, Note: note})
	if err != nil {
		return nil, err
	}
	if signer == nil {
		return nil, errors.New("release: operator credentials are required to sign the request")
	}
	body, err := signer.Sign(ReleasePurpose(host), req)
	if err != nil {
		return nil, err
	}
	reply, err := request(ctx, nc, host, VerbRelease, body)
	if err != nil {
		return nil, err
	}
	var ev *containv1.Event
	if len(reply.Action) > 0 {
		ev = &containv1.Event{}
		if err := protojson.Unmarshal(reply.Action, ev); err != nil {
			return nil, fmt.Errorf("release on host %q: bad action in reply: %w", host, err)
		}
	}
	if !reply.OK {
		return ev, fmt.Errorf("release %s on host %q: %s", containerID, host, reply.Error)
	}
	return ev, nil
}

// ListQuarantined asks host's responder what it has paused.
func ListQuarantined(ctx context.Context, nc *nats.Conn, host string) ([]Quarantine, error) {
	reply, err := request(ctx, nc, host, VerbQuarantineList, []byte("{}"))
	if err != nil {
		return nil, err
	}
	if !reply.OK {
		return nil, fmt.Errorf("quarantine.list on host %q: %s", host, reply.Error)
	}
	return reply.Quarantined, nil
}
