package containv1

import (
	"fmt"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"
)

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

// TestCompactIfSmaller: a batch is compacted exactly when that makes its
// encoding smaller, and then reads back as the same events.
func TestCompactIfSmaller(t *testing.T) {
	mk := func(containers, perContainer int) *Batch {
		b := &Batch{SchemaVersion: SchemaVersion, Host: "h1"}
		for c := range containers {
			for range perContainer {
				b.Events = append(b.Events, &Event{ContainerId: strings.Repeat(fmt.Sprint(c%10), 64), ContainerName: fmt.Sprintf("web-%d", c),
					Host: "h1", Kind: Kind_KIND_EXEC, Body: &Event_Exec{Exec: &Exec{Filename: "/bin/sh"}}})
			}
		}
		b.Events = append(b.Events, &Event{Host: "h1", Kind: Kind_KIND_EXEC}) // a host event
		return b
	}
	for _, tc := range []struct{ containers, per int }{{1, 1}, {5, 1}, {1, 2}, {5, 3}, {50, 5}} {
		b := mk(tc.containers, tc.per)
		before := proto.Size(b)
		did := b.CompactIfSmaller()
		after := proto.Size(b)
		// What Compact alone would make.
		c := mk(tc.containers, tc.per)
		c.Compact()
		if smaller := proto.Size(c) < before; did != smaller {
			t.Errorf("%d containers × %d events: compacted %v, but compacting gives %d bytes against %d", tc.containers, tc.per, did, proto.Size(c), before)
		}
		if !did && (after != before || b.SchemaVersion != SchemaVersion || b.Containers != nil) {
			t.Errorf("%d × %d: not compacted, but changed", tc.containers, tc.per)
		}
		if did {
			if b.SchemaVersion != SchemaVersionDictionary || len(b.Containers) != tc.containers {
				t.Errorf("%d × %d: version %d, %d entries", tc.containers, tc.per, b.SchemaVersion, len(b.Containers))
			}
			if err := b.Expand(); err != nil {
				t.Fatal(err)
			}
			b.SchemaVersion = SchemaVersion
			if want := mk(tc.containers, tc.per); !proto.Equal(b, want) {
				t.Errorf("%d × %d: read back differs", tc.containers, tc.per)
			}
		}
	}
}
