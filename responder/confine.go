package responder

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/containsec/contain/internal/freezer"
	"github.com/containsec/contain/internal/logfields"
)

// protectTTL is how long the pids listening on Config.ProtectAddrs are
// cached between proofs.
const protectTTL = 5 * time.Second

// protector computes what Prove protects: the responder's own process,
// Config.ProtectPids, Config.ProtectCgroups, and the processes listening
// on the ports of Config.ProtectAddrs (the NATS server, ClickHouse).
type protector struct {
	procRoot string
	pids     []int
	cgroups  []string
	ports    []int

	mu      sync.Mutex
	at      time.Time
	listen  []int
	lastErr error
}

func newProtector(cfg Config, self int) (*protector, error) {
	p := &protector{procRoot: cfg.ProcRoot, pids: append([]int{self}, cfg.ProtectPids...), cgroups: cfg.ProtectCgroups}
	for _, a := range cfg.ProtectAddrs {
		port, err := addrPort(a)
		if err != nil {
			return nil, err
		}
		p.ports = append(p.ports, port)
	}
	if err := p.refresh(); err != nil {
		return nil, fmt.Errorf("responder.protect_addrs: finding their listeners: %w", err)
	}
	return p, nil
}

// addrPort is the port of a host:port or URL-ish address (nats://h:4222,
// tls://h:4222, h:9000).
func addrPort(a string) (int, error) {
	s := a
	for _, scheme := range []string{"nats://", "tls://", "tcp://", "clickhouse://"} {
		if len(s) > len(scheme) && s[:len(scheme)] == scheme {
			s = s[len(scheme):]
			break
		}
	}
	if i := indexAny(s, "/?"); i >= 0 {
		s = s[:i]
	}
	if at := lastIndex(s, '@'); at >= 0 {
		s = s[at+1:]
	}
	_, port, err := net.SplitHostPort(s)
	if err != nil {
		return 0, fmt.Errorf("responder.protect_addrs: %q: %w", a, err)
	}
	n, err := strconv.Atoi(port)
	if err != nil || n <= 0 || n > 65535 {
		return 0, fmt.Errorf("responder.protect_addrs: %q: bad port %q", a, port)
	}
	return n, nil
}

func indexAny(s, chars string) int {
	for i := 0; i < len(s); i++ {
		for j := 0; j < len(chars); j++ {
			if s[i] == chars[j] {
				return i
			}
		}
	}
	return -1
}

func lastIndex(s string, c byte) int {
	for i := len(s) - 1; i >= 0; i-- {
		if s[i] == c {
			return i
		}
	}
	return -1
}

// refresh finds the listeners again (a /proc scan, milliseconds: kept off
// the freeze path).
func (p *protector) refresh() error {
	if len(p.ports) == 0 {
		return nil
	}
	pids, err := freezer.ListenerPids(p.procRoot, p.ports)
	p.mu.Lock()
	defer p.mu.Unlock()
	if err == nil {
		p.listen = pids
	}
	p.at, p.lastErr = time.Now(), err
	return err
}

// keepFresh refreshes the listeners every protectTTL until ctx ends.
func (p *protector) keepFresh(ctx context.Context, onErr func(error)) {
	if len(p.ports) == 0 {
		return
	}
	tick := time.NewTicker(protectTTL)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			if err := p.refresh(); err != nil {
				onErr(err)
			}
		}
	}
}

// protected is the current set.
func (p *protector) protected() freezer.Protected {
	out := freezer.Protected{ProcRoot: p.procRoot, Pids: p.pids, Cgroups: p.cgroups}
	if len(p.ports) == 0 {
		return out
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	out.Pids = append(append([]int(nil), p.pids...), p.listen...)
	return out
}

// refusedCounter is contain_responder_refused_total{reason}: alerts whose
// target was not proven to be a container.
func refusedCounter(reg prometheus.Registerer) *prometheus.CounterVec {
	c := prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "contain", Subsystem: "responder", Name: "refused_total",
		Help: "Alerts whose target the responder refused to freeze (not proven to be a container), by reason.",
	}, []string{"reason"})
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(*prometheus.CounterVec); ok {
				return existing
			}
		}
	}
	return c
}

// locateProven locates container id from the runtimes' state (or, for a
// docker container when dockerd's runc state is not configured, the
// engine's reported init pid) and proves it is a container. Called with
// actMu held. The error is a *freezer.RefusedError, or wraps
// freezer.ErrExited (the container is gone), or another freezer error.
func (r *Responder) locateProven(ctx context.Context, id string) (*freezer.Target, error) {
	if err := freezer.RefuseID(id); err != nil {
		return nil, err
	}
	protected := r.protect.protected()
	if pr := r.proofs.get(id); pr != nil {
		err := freezer.Recheck(r.cfg.roots(), pr, protected)
		if err == nil {
			return pr.Target, nil
		}
		r.proofs.drop(id)
	}
	t, err := freezer.Locate(r.cfg.roots(), id)
	if errors.Is(err, freezer.ErrNotFound) && r.docker != nil {
		if c, derr := r.docker.Inspect(ctx, id); derr == nil && c.ID == id {
			if !c.Running {
				return nil, fmt.Errorf("%w: docker %s reports %s not running", freezer.ErrExited, r.docker.Host(), id)
			}
			t, err = freezer.LocateByPid(r.cfg.roots(), r.cfg.ProcRoot, id, freezer.RuntimeDocker, "docker-api "+r.docker.Host(), c.Pid)
			if err == nil {
				t.Labels = c.Labels
			}
		}
	}
	if errors.Is(err, freezer.ErrNotFound) {
		return nil, &freezer.RefusedError{Reason: freezer.RefuseUnknown, Detail: err.Error()}
	}
	if err != nil {
		return nil, err
	}
	if err := freezer.Prove(r.cfg.roots(), t, protected); err != nil {
		return t, err
	}
	r.proofs.put(id, freezer.NewProof(t, protected))
	return t, nil
}

// maxProofs bounds the proof cache; past it the cache starts over.
const maxProofs = 4096

// proofCache keeps, per container id, what freezer.Prove established, so
// a later alert about the same container is re-checked (freezer.Recheck:
// the init's start time, its cgroup, the protected set) instead of proven
// from the runtime's state again. A failed re-check drops the entry and
// proves afresh.
type proofCache struct {
	mu sync.Mutex
	m  map[string]*freezer.Proof
}

func (c *proofCache) get(id string) *freezer.Proof {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.m[id]
}

func (c *proofCache) put(id string, p *freezer.Proof) {
	if p == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil || len(c.m) >= maxProofs {
		c.m = map[string]*freezer.Proof{}
	}
	c.m[id] = p
}

func (c *proofCache) drop(id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.m, id)
}

// staleCounter counts alerts skipped for their age.
func staleCounter(reg prometheus.Registerer) prometheus.Counter {
	c := prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: "contain", Subsystem: "responder", Name: "stale_alerts_total",
		Help: "Alerts older than responder.max_alert_age when they arrived: recorded SKIPPED, not acted on.",
	})
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(prometheus.Counter); ok {
				return existing
			}
		}
	}
	return c
}

// refused records a refusal loudly: counted by reason, logged at error.
func (r *Responder) refused(id string, err error) {
	reason := freezer.RefusedReason(err)
	r.refusedTotal.WithLabelValues(reason).Inc()
	r.log.Error("REFUSED to freeze: not a container", logfields.ContainerID, truncate(id, 128), logfields.Reason, reason, logfields.Err, err)
}
