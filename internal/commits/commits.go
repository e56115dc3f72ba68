package commits

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/containsec/contain/internal/engines"
	"github.com/containsec/contain/schemas/containv1"
)

// Publish sends one KIND_COMMIT event; an error is logged and the event
// dropped (counted in Stats.PublishErrors).
type Publish func(ctx context.Context, ev *containv1.Event) error

// Engine names.
const (
	EngineDocker     = "docker"
	EnginePodman     = "podman"
	EngineContainerd = "containerd"
)

// maxLineage bounds the ancestors carried in an event.
const maxLineage = 32

// Log field keys.
const (
	logEngine = "engine"
	logAddr   = "addr"
	logErr    = "err"
	logImage  = "image"
)

// Stats counts what the watcher did.
type Stats struct {
	Commits       atomic.Uint64
	PublishErrors atomic.Uint64
	Reconnects    atomic.Uint64
}

// Watcher reports commits of every configured engine.
type Watcher struct {
	cfg     Config
	host    string
	publish Publish
	log     *slog.Logger
	ids     *containv1.IDGen
	Stats   Stats

	// ready is closed once every engine's stream is subscribed (or has
	// failed once): tests commit after it.
	ready   chan struct{}
	pending sync.WaitGroup
}

// New returns a watcher publishing through publish; host names the
// events' host.
func New(cfg Config, host string, publish Publish, log *slog.Logger) (*Watcher, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if publish == nil {
		return nil, errors.New("commits: no publish function")
	}
	return &Watcher{cfg: cfg, host: host, publish: publish, log: log, ids: containv1.NewIDGen(), ready: make(chan struct{})}, nil
}

// Ready is closed once every engine's event stream was subscribed once.
func (w *Watcher) Ready() <-chan struct{} { return w.ready }

// Run watches until ctx ends.
func (w *Watcher) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	start := func(engine, addr string, watch func(ctx context.Context, subscribed func()) error) {
		w.pending.Add(1)
		wg.Add(1)
		go func() {
			defer wg.Done()
			w.loop(ctx, engine, addr, watch)
		}()
	}
	for _, h := range w.cfg.DockerHosts {
		d, err := engines.NewDocker(h, w.cfg.Timeout)
		if err != nil {
			return fmt.Errorf("commits: %w", err)
		}
		defer d.Close()
		start(EngineDocker, h, func(ctx context.Context, sub func()) error { return w.watchDocker(ctx, d, sub) })
	}
	for _, a := range w.cfg.Containerd {
		c, err := engines.NewContainerd(a, w.cfg.Timeout)
		if err != nil {
			return fmt.Errorf("commits: %w", err)
		}
		defer c.Close()
		start(EngineContainerd, a, func(ctx context.Context, sub func()) error { return w.watchContainerd(ctx, c, sub) })
	}
	if w.cfg.Podman {
		start(EnginePodman, w.cfg.PodmanBinary, w.watchPodman)
	}
	go func() { w.pending.Wait(); close(w.ready) }()
	wg.Wait()
	return nil
}

// loop runs watch until ctx ends, re-subscribing after Retry; an outage
// is logged once.
func (w *Watcher) loop(ctx context.Context, engine, addr string, watch func(ctx context.Context, subscribed func()) error) {
	var once sync.Once
	sub := func() { once.Do(w.pending.Done) }
	down := false
	for ctx.Err() == nil {
		err := watch(ctx, func() {
			sub()
			if down {
				w.log.Info("engine events resumed", logEngine, engine, logAddr, addr)
				down = false
			}
		})
		sub()
		if ctx.Err() != nil {
			return
		}
		w.Stats.Reconnects.Add(1)
		if !down {
			w.log.Warn("engine events unavailable; retrying", logEngine, engine, logAddr, addr, logErr, err)
			down = true
		}
		select {
		case <-ctx.Done():
		case <-time.After(w.cfg.Retry):
		}
	}
}

// emit publishes c as a KIND_COMMIT event at wallNs.
func (w *Watcher) emit(ctx context.Context, c *containv1.Commit, digest string, wallNs int64) {
	if wallNs <= 0 {
		wallNs = time.Now().UnixNano()
	}
	ev := &containv1.Event{
		Id:            w.ids.Next(),
		Host:          w.host,
		ContainerId:   c.SourceContainerId,
		ContainerName: c.SourceContainerName,
		ImageRef:      c.SourceImageRef,
		ImageDigest:   digest,
		WallNs:        wallNs,
		Kind:          containv1.Kind_KIND_COMMIT,
		SchemaVersion: containv1.SchemaVersion,
		Body:          &containv1.Event_Commit{Commit: c},
	}
	w.Stats.Commits.Add(1)
	if err := w.publish(ctx, ev); err != nil {
		w.Stats.PublishErrors.Add(1)
		w.log.Warn("commit event not published", logEngine, c.Engine, logImage, c.ImageRef, logErr, err)
	}
}

// lineage walks parent from id, nearest first, bounded and cycle-safe.
func lineage(id string, parent map[string]string) []string {
	var out []string
	seen := map[string]bool{}
	for id != "" && !seen[id] && len(out) < maxLineage {
		seen[id] = true
		out = append(out, id)
		id = parent[id]
	}
	return out
}

// forEach calls each for every event of evs until errs reports an error,
// which it returns, or evs closes: then it returns errs's pending error, or
// else ctx's.
func forEach(ctx context.Context, evs <-chan engines.Event, errs <-chan error, each func(engines.Event)) error {
	for {
		select {
		case ev, ok := <-evs:
			if !ok {
				select {
				case err := <-errs:
					return err
				default:
					return ctx.Err()
				}
			}
			each(ev)
		case err := <-errs:
			return err
		}
	}
}
