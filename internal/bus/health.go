package bus

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// HealthConfig bounds what /readyz accepts.
type HealthConfig struct {
	// JetstreamTimeout bounds JetStream's answer to the readiness probe.
	JetstreamTimeout time.Duration `config:"jetstream_timeout"`
	// MaxLag is the most messages a consumer may have pending
	// (num_pending); 0: unbounded.
	MaxLag int `config:"max_lag"`
	// MaxUnackedAge is the oldest a message a consumer received may be
	// without acknowledgement; 0: unbounded.
	MaxUnackedAge time.Duration `config:"max_unacked_age"`
	// CheckInterval is how often each consumer measures its lag, oldest
	// unacked message and expired messages.
	CheckInterval time.Duration `config:"check_interval"`
}

// DefaultHealthConfig is the configuration's default.
func DefaultHealthConfig() HealthConfig {
	return HealthConfig{JetstreamTimeout: 2 * time.Second, MaxLag: 10000, MaxUnackedAge: 10 * time.Minute, CheckInterval: 5 * time.Second}
}

// Validate reports the first invalid field.
func (c HealthConfig) Validate() error {
	switch {
	case c.JetstreamTimeout <= 0:
		return fmt.Errorf("nats.health.jetstream_timeout: %v must be positive", c.JetstreamTimeout)
	case c.MaxLag < 0:
		return fmt.Errorf("nats.health.max_lag: %d must not be negative", c.MaxLag)
	case c.MaxUnackedAge < 0:
		return fmt.Errorf("nats.health.max_unacked_age: %v must not be negative", c.MaxUnackedAge)
	case c.CheckInterval <= 0:
		return fmt.Errorf("nats.health.check_interval: %v must be positive", c.CheckInterval)
	}
	return nil
}

// Health gathers readiness: checks run at each probe (NATS connected,
// JetStream answering, a sink's ping) and states pushed by long-running
// parts (each consumer's lag). It is safe for concurrent use.
type Health struct {
	mu     sync.Mutex
	checks map[string]func(context.Context) error
	states map[string]error
}

// NewHealth makes an empty Health: ready until something says otherwise.
func NewHealth() *Health {
	return &Health{checks: map[string]func(context.Context) error{}, states: map[string]error{}}
}

// Register adds a check run at every probe, e.g. a sink's ping.
func (h *Health) Register(name string, check func(context.Context) error) {
	if h == nil {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.checks[name] = check
}

// Set records the state of name (nil: healthy).
func (h *Health) Set(name string, err error) {
	if h == nil {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.states[name] = err
}

// Remove forgets name's state and check.
func (h *Health) Remove(name string) {
	if h == nil {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.states, name)
	delete(h.checks, name)
}

// Check runs the checks (in parallel, each bounded by ctx) and returns
// one line per part, sorted, and whether all are healthy.
func (h *Health) Check(ctx context.Context) (lines []string, ok bool) {
	h.mu.Lock()
	checks := make(map[string]func(context.Context) error, len(h.checks))
	for k, v := range h.checks {
		checks[k] = v
	}
	results := make(map[string]error, len(h.states)+len(checks))
	for k, v := range h.states {
		results[k] = v
	}
	h.mu.Unlock()
	var (
		wg sync.WaitGroup
		mu sync.Mutex
	)
	for name, c := range checks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := c(ctx)
			mu.Lock()
			results[name] = err
			mu.Unlock()
		}()
	}
	wg.Wait()
	ok = true
	for name, err := range results {
		if err != nil {
			ok = false
			lines = append(lines, name+": "+err.Error())
		} else {
			lines = append(lines, name+": ok")
		}
	}
	sort.Strings(lines)
	return lines, ok
}

// ReadyHandler serves /readyz: 200 and "ready" when every part is
// healthy, else 503 naming each part's reason; each probe is bounded by
// timeout.
func (h *Health) ReadyHandler(timeout time.Duration) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), timeout)
		defer cancel()
		lines, ok := h.Check(ctx)
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if !ok {
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = w.Write([]byte("not ready\n" + strings.Join(lines, "\n") + "\n"))
			return
		}
		_, _ = w.Write([]byte("ready\n" + strings.Join(lines, "\n") + "\n"))
	})
}

// NATSCheck is healthy while nc is connected and JetStream answers
// within timeout.
func NATSCheck(nc *nats.Conn, js jetstream.JetStream, timeout time.Duration) func(context.Context) error {
	return func(ctx context.Context) error {
		if st := nc.Status(); st != nats.CONNECTED {
			return fmt.Errorf("nats %s", strings.ToLower(st.String()))
		}
		ctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		if _, err := js.AccountInfo(ctx); err != nil {
			if errors.Is(err, context.DeadlineExceeded) {
				return fmt.Errorf("jetstream did not answer within %v", timeout)
			}
			return fmt.Errorf("jetstream: %w", err)
		}
		return nil
	}
}

// EmbeddedJetStreamCheck is healthy while the embedded server's JetStream
// can store. JetStream answering (NATSCheck) is not enough: after a write
// error (ENOSPC on a full disk) nats-server keeps the stream's error and
// refuses its writes until it is restarted, while its API still answers;
// on other out-of-space paths it disables JetStream. The server's own
// health check (what its /healthz monitoring endpoint serves) sees both:
// it names the stream and its write error.
func EmbeddedJetStreamCheck(s *server.Server) func(context.Context) error {
	return func(context.Context) error {
		if !s.JetStreamEnabled() {
			return errors.New("jetstream disabled (out of resources?); restart contain once fixed")
		}
		h := s.Healthz(&server.HealthzOptions{})
		if h.StatusCode == http.StatusOK {
			return nil
		}
		msg := h.Error
		if msg == "" {
			msg = h.Status
		}
		if strings.Contains(msg, "write error") {
			// Kept until restart, even once the disk has room again.
			msg += "; restart contain once the disk has room"
		}
		return errors.New(msg)
	}
}
