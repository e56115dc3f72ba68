// Package cgroups maps cgroup v2 ids (the inode numbers that eBPF's
// bpf_get_current_cgroup_id returns) to cgroup paths.
//
// A Resolver caches the mapping from a walk of the cgroup2 mount and walks
// again when asked about an id it does not know, so a cgroup created after
// the last walk (a container that just started) resolves on its first
// event. Ids that stay unknown after a fresh walk are remembered for a
// while so a flood of events from a vanished cgroup does not cause a walk
// per event.
package cgroups

import (
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"sync"
	"syscall"
	"time"
)

// ID returns the cgroup id of the cgroup directory at path.
func ID(path string) (uint64, error) {
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		return 0, fmt.Errorf("cgroup id of %s: %w", path, err)
	}
	return st.Ino, nil
}

// Resolver maps cgroup ids to paths relative to a cgroup2 mount ("/" is
// the root). It is safe for concurrent use.
type Resolver struct {
	root string
	// NegativeTTL is how long an id unknown after a fresh walk is not
	// looked for again.
	negativeTTL time.Duration
	maxNegative int

	mu       sync.Mutex
	byID     map[uint64]string
	negative map[uint64]time.Time
	scans    int
	now      func() time.Time
}

// NewResolver makes a Resolver for the cgroup2 hierarchy mounted at root.
func NewResolver(root string) *Resolver {
	return &Resolver{
		root:        root,
		negativeTTL: time.Second,
		maxNegative: 4096,
		byID:        map[uint64]string{},
		negative:    map[uint64]time.Time{},
		now:         time.Now,
	}
}

// Root is the cgroup2 mount the resolver walks.
func (r *Resolver) Root() string { return r.root }

// Scans is how many walks the resolver has done.
func (r *Resolver) Scans() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.scans
}

// Path returns the path of cgroup id, walking the hierarchy again on a
// miss. ok is false when id is not (or no longer) a cgroup.
func (r *Resolver) Path(id uint64) (path string, ok bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if p, ok := r.byID[id]; ok {
		return p, true
	}
	if t, ok := r.negative[id]; ok && r.now().Sub(t) < r.negativeTTL {
		return "", false
	}
	_ = r.scanLocked()
	if p, ok := r.byID[id]; ok {
		delete(r.negative, id)
		return p, true
	}
	if len(r.negative) >= r.maxNegative {
		clear(r.negative)
	}
	r.negative[id] = r.now()
	return "", false
}

// Known reports whether id was present in the last walk, without walking.
func (r *Resolver) Known(id uint64) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	_, ok := r.byID[id]
	return ok
}

// Scan walks the hierarchy now, replacing the cache (cgroups that were
// removed disappear from it).
func (r *Resolver) Scan() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.scanLocked()
}

func (r *Resolver) scanLocked() error {
	r.scans++
	next := make(map[uint64]string, len(r.byID)+16)
	err := filepath.WalkDir(r.root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			// A cgroup removed during the walk is not an error.
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			if p == r.root {
				return err
			}
			return nil
		}
		if !d.IsDir() {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return nil
		}
		st, ok := info.Sys().(*syscall.Stat_t)
		if !ok {
			return nil
		}
		rel, err := filepath.Rel(r.root, p)
		if err != nil {
			return nil
		}
		if rel == "." {
			rel = "/"
		} else {
			rel = "/" + rel
		}
		next[st.Ino] = rel
		return nil
	})
	if err != nil {
		return fmt.Errorf("walking %s: %w", r.root, err)
	}
	r.byID = next
	return nil
}
