package enricher

import (
	"context"
	"sync"
)

// resolver turns container images into declarations and profiles in the
// background, off the event path.
type resolver struct {
	e     *Enricher
	queue chan ContainerImage
}

func newResolver(e *Enricher) (*resolver, error) {
	return &resolver{e: e, queue: make(chan ContainerImage, e.cfg.ResolveQueue)}, nil
}

func (r *resolver) start(ctx context.Context, wg *sync.WaitGroup) {}

func (r *resolver) request(rec ContainerImage) {}
