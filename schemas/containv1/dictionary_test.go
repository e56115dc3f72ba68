package containv1

import "testing"

// TestExpand: an event referring to a dictionary entry reads the entry's
// fields where it has none of its own, keeps its own, and loses the
// reference; an event referring to none is left alone; the dictionary is
// dropped; a reference past the dictionary (or without one) fails.
func TestExpand(t *testing.T) {
	b := &Batch{
		Containers: []*ContainerRef{
			{ContainerId: "c1", ContainerName: "web", ImageRef: "shop/web:1", ImageDigest: "sha256:x", ProfileRef: "p@1"},
			{ContainerId: "c2"},
		},
		Events: []*Event{
			{ContainerRef: 1},
			{ContainerRef: 1, ImageRef: "own:2", ContainerName: "mine"},
			{ContainerRef: 2},
			{ContainerId: "host-less"},
		},
	}
	if err := b.Expand(); err != nil {
		t.Fatal(err)
	}
	want := []Event{
		{ContainerId: "c1", ContainerName: "web", ImageRef: "shop/web:1", ImageDigest: "sha256:x", ProfileRef: "p@1"},
		{ContainerId: "c1", ContainerName: "mine", ImageRef: "own:2", ImageDigest: "sha256:x", ProfileRef: "p@1"},
		{ContainerId: "c2"},
		{ContainerId: "host-less"},
	}
	for i, ev := range b.Events {
		w := &want[i]
		if ev.ContainerId != w.ContainerId || ev.ContainerName != w.ContainerName || ev.ImageRef != w.ImageRef ||
			ev.ImageDigest != w.ImageDigest || ev.ProfileRef != w.ProfileRef || ev.ContainerRef != 0 {
			t.Errorf("event %d expanded to %v, want %v", i, ev, w)
		}
	}
	if b.Containers != nil {
		t.Errorf("dictionary kept: %v", b.Containers)
	}
	for _, bad := range []*Batch{
		{Containers: []*ContainerRef{{ContainerId: "c1"}}, Events: []*Event{{ContainerRef: 2}}},
		{Events: []*Event{{ContainerRef: 1}}},
	} {
		if err := bad.Expand(); err == nil {
			t.Errorf("Expand accepted a reference past the dictionary: %v", bad)
		}
	}
}

// TestCompactExpand: Compact writes each distinct container once and
// Expand reads the same events back.
func TestCompactExpand(t *testing.T) {
	mk := func() []*Event {
		return []*Event{
			{ContainerId: "c1", ImageRef: "a:1", Kind: Kind_KIND_EXEC},
			{ContainerId: "c1", ImageRef: "a:1", Kind: Kind_KIND_FILE},
			{ContainerId: "c1", ImageRef: "a:1", ContainerName: "renamed"},
			{Host: "h"},
			{ContainerId: "c2", ImageDigest: "sha256:d", ProfileRef: "sha256:d@1"},
		}
	}
	b := &Batch{SchemaVersion: SchemaVersion, Events: mk()}
	b.Compact()
	if len(b.Containers) != 3 || b.SchemaVersion != SchemaVersionDictionary {
		t.Fatalf("compacted into %d containers, version %d; want 3, %d", len(b.Containers), b.SchemaVersion, SchemaVersionDictionary)
	}
	if b.Events[0].ContainerId != "" || b.Events[0].ContainerRef != 1 || b.Events[3].ContainerRef != 0 {
		t.Fatalf("compacted events %v", b.Events)
	}
	if err := b.Expand(); err != nil {
		t.Fatal(err)
	}
	for i, want := range mk() {
		got := b.Events[i]
		if got.ContainerId != want.ContainerId || got.ContainerName != want.ContainerName || got.ImageRef != want.ImageRef ||
			got.ImageDigest != want.ImageDigest || got.ProfileRef != want.ProfileRef || got.Kind != want.Kind || got.Host != want.Host {
			t.Errorf("event %d read back %v, want %v", i, got, want)
		}
	}
}
