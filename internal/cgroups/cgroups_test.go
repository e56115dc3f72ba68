package cgroups

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

// A plain directory tree stands in for a cgroup2 mount: the resolver only
// walks directories and reads inode numbers, which is what cgroupfs gives.
func TestResolverFindsNewDirectoryOnMiss(t *testing.T) {
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "a", "b"), 0o755); err != nil {
		t.Fatal(err)
	}
	r := NewResolver(root)
	if err := r.Scan(); err != nil {
		t.Fatal(err)
	}
	rootID, err := ID(root)
	if err != nil {
		t.Fatal(err)
	}
	if p, ok := r.Path(rootID); !ok || p != "/" {
		t.Fatalf("root: got %q %v", p, ok)
	}
	bID, _ := ID(filepath.Join(root, "a", "b"))
	if p, ok := r.Path(bID); !ok || p != "/a/b" {
		t.Fatalf("a/b: got %q %v", p, ok)
	}

	// Appears after the walk: the miss must trigger a new walk.
	newDir := filepath.Join(root, "ctr-1")
	if err := os.Mkdir(newDir, 0o755); err != nil {
		t.Fatal(err)
	}
	newID, _ := ID(newDir)
	scans := r.Scans()
	if p, ok := r.Path(newID); !ok || p != "/ctr-1" {
		t.Fatalf("new dir: got %q %v", p, ok)
	}
	if r.Scans() != scans+1 {
		t.Fatalf("expected one rescan, got %d", r.Scans()-scans)
	}
}

func TestResolverNegativeCache(t *testing.T) {
	root := t.TempDir()
	r := NewResolver(root)
	now := time.Unix(1000, 0)
	r.now = func() time.Time { return now }
	const unknown = 1 << 62
	if _, ok := r.Path(unknown); ok {
		t.Fatal("unknown id resolved")
	}
	scans := r.Scans()
	for range 100 {
		r.Path(unknown)
	}
	if r.Scans() != scans {
		t.Fatalf("negative cache not used: %d extra walks", r.Scans()-scans)
	}
	now = now.Add(2 * time.Second)
	r.Path(unknown)
	if r.Scans() != scans+1 {
		t.Fatalf("negative entry did not expire")
	}
}

func TestResolverForgetsRemoved(t *testing.T) {
	root := t.TempDir()
	d := filepath.Join(root, "gone")
	if err := os.Mkdir(d, 0o755); err != nil {
		t.Fatal(err)
	}
	id, _ := ID(d)
	r := NewResolver(root)
	if _, ok := r.Path(id); !ok {
		t.Fatal("not found")
	}
	if err := os.Remove(d); err != nil {
		t.Fatal(err)
	}
	if err := r.Scan(); err != nil {
		t.Fatal(err)
	}
	if r.Known(id) {
		t.Fatal("removed cgroup still known")
	}
}
