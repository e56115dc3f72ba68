package analyzer

import (
	"errors"
	"fmt"
	"sort"
)

// ErrNoBaseline is returned for an image key without a baseline.
var ErrNoBaseline = errors.New("no baseline")

// Keys lists the image keys with a baseline, sorted.
func (e *Engine) Keys() []string {
	keys := make([]string, 0, len(e.images))
	for k := range e.images {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// Baseline returns the live baseline of key, or nil. It belongs to the
// engine: read it only while nothing calls Observe.
func (e *Engine) Baseline(key string) *Baseline { return e.images[key] }

// Snapshot renders the baseline of key.
func (e *Engine) Snapshot(key string) (*Doc, error) {
	b := e.images[key]
	if b == nil {
		return nil, fmt.Errorf("%w for %q", ErrNoBaseline, key)
	}
	return b.Doc(), nil
}

// Dirty renders the baselines changed since the last call.
func (e *Engine) Dirty() []*Doc {
	var out []*Doc
	for _, b := range e.images {
		if b.dirty {
			b.dirty = false
			out = append(out, b.Doc())
		}
	}
	return out
}

// Load installs a baseline from its document, replacing the live one
// (containers of the image keep their state). The document is validated
// first; on error nothing changes.
func (e *Engine) Load(d *Doc) error {
	b, err := docBaseline(d)
	if err != nil {
		return err
	}
	old := e.images[d.Key]
	if old == nil && len(e.images) >= e.cfg.MaxImages {
		return fmt.Errorf("loading baseline %s: analyzer.max_images (%d) reached", d.Key, e.cfg.MaxImages)
	}
	if b.seed == nil && old != nil {
		b.seed = old.seed
	}
	e.images[d.Key] = b
	for _, c := range e.containers {
		if c.base == old && old != nil {
			c.base = b
		}
	}
	return nil
}

// Lock stops learning for key: every deviation is scored, nothing is
// absorbed.
func (e *Engine) Lock(key string) error {
	b := e.images[key]
	if b == nil {
		return fmt.Errorf("%w for %q", ErrNoBaseline, key)
	}
	if b.Phase != PhaseLocked {
		if b.ConvergedNs == 0 {
			b.ConvergedNs = b.LastNs
		}
		b.Phase = PhaseLocked
		b.Version++
		b.dirty = true
	}
	return nil
}

// Unlock makes key learn again, keeping what it learned, for a new
// learning window starting at its next event.
func (e *Engine) Unlock(key string) error {
	b := e.images[key]
	if b == nil {
		return fmt.Errorf("%w for %q", ErrNoBaseline, key)
	}
	b.Phase = PhaseLearning
	b.FirstNs, b.ConvergedNs, b.Observations, b.Novelty = 0, 0, 0, 0
	b.Version++
	b.dirty = true
	return nil
}

// Reset forgets what key learned (its declared profile stays) and starts
// a new learning window at its next event. The version keeps growing.
func (e *Engine) Reset(key string) error {
	b := e.images[key]
	if b == nil {
		return fmt.Errorf("%w for %q", ErrNoBaseline, key)
	}
	nb := newBaseline(b.Key, b.Image)
	nb.seed = b.seed
	nb.Version = b.Version + 1
	nb.dirty = true
	if nb.seed != nil {
		for _, x := range append(append([]string(nil), nb.seed.p.Entrypoint...), nb.seed.p.Executables...) {
			nb.Exec[x] += 0
		}
	}
	e.images[key] = nb
	for _, c := range e.containers {
		if c.base == b {
			c.base = nb
			clear(c.groups)
		}
	}
	return nil
}

// ApplyOp applies a manual operation recorded in a document.
func (e *Engine) ApplyOp(d *Doc) error {
	switch d.Op {
	case "lock":
		if e.images[d.Key] == nil {
			return e.Load(d)
		}
		return e.Lock(d.Key)
	case "unlock":
		if e.images[d.Key] == nil {
			return e.Load(d)
		}
		return e.Unlock(d.Key)
	case "reset":
		if e.images[d.Key] == nil {
			return nil
		}
		return e.Reset(d.Key)
	case "import":
		if err := e.Load(d); err != nil {
			return err
		}
		e.images[d.Key].dirty = true
		return nil
	}
	return fmt.Errorf("baseline %s: unknown op %q", d.Key, d.Op)
}

// SetProfile seeds (or re-seeds) the baseline of an image digest with its
// declared profile; p nil removes the declaration.
func (e *Engine) SetProfile(digest string, p *Profile) {
	b := e.images[digest]
	if b == nil {
		return
	}
	b.seed = compileProfile(p)
	if p != nil {
		for _, x := range append(append([]string(nil), p.Entrypoint...), p.Executables...) {
			if _, ok := b.Exec[x]; !ok && len(x) > 0 && x[0] == '/' {
				b.Exec[x] = 0
			}
		}
	}
	b.Version++
	b.dirty = true
}
