package bus

import (
	"errors"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
)

// The server reports a publish it refused (a permissions violation) only
// asynchronously, to the connection's error handler; the JetStream
// publish itself just times out. Connect records each such report here,
// per connection and subject, so Publish can tell a refused subject
// (permanent) from a slow server (transient).
var violations sync.Map // *nats.Conn -> *connViolations

type connViolations struct {
	mu   sync.Mutex
	subj map[string]time.Time
}

// violationTTL is how long a reported violation explains a timeout.
const violationTTL = time.Minute

// recordViolation notes err for nc when it is a publish permissions
// violation.
func recordViolation(nc *nats.Conn, err error) {
	if nc == nil || !errors.Is(err, nats.ErrPermissionViolation) {
		return
	}
	msg := err.Error()
	i := strings.Index(strings.ToLower(msg), "publish to \"")
	if i < 0 {
		return
	}
	rest := msg[i+len("publish to \""):]
	j := strings.IndexByte(rest, '"')
	if j < 0 {
		return
	}
	v, _ := violations.LoadOrStore(nc, &connViolations{subj: map[string]time.Time{}})
	cv := v.(*connViolations)
	cv.mu.Lock()
	cv.subj[rest[:j]] = time.Now()
	cv.mu.Unlock()
}

// violation returns a permissions-violation error when the server
// refused a publish to subject on nc within the last violationTTL.
func violation(nc *nats.Conn, subject string) error {
	if nc == nil {
		return nil
	}
	v, ok := violations.Load(nc)
	if !ok {
		return nil
	}
	cv := v.(*connViolations)
	cv.mu.Lock()
	defer cv.mu.Unlock()
	if t, ok := cv.subj[subject]; ok && time.Since(t) < violationTTL {
		return errors.Join(nats.ErrPermissionViolation, errors.New("server refused publish to "+subject))
	}
	return nil
}

// forgetViolations drops nc's record once it is closed.
func forgetViolations(nc *nats.Conn) { violations.Delete(nc) }
