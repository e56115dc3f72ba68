package collector

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/containsec/contain/internal/cgroups"
	"github.com/containsec/contain/internal/runtime"
)

// TestIdentityStateWrittenLate: a container whose runtime writes its
// state seconds after its cgroup appears (docker's State.Pid once a start
// on a loaded host returns) is identified and announced again when the
// state comes, for up to metaRetryFor; the state is read every
// metaRetryEvery at first, then every metaRetrySlow.
func TestIdentityStateWrittenLate(t *testing.T) {
	root := t.TempDir()
	d := newIdentity(cgroups.NewResolver(t.TempDir()), runtime.StateReader{DockerRoot: root})
	t0 := time.Unix(1_800_000_000, 0)
	now := t0
	d.now = func() time.Time { return now }
	write := func(id string) {
		p := filepath.Join(root, "containers", id, "config.v2.json")
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		cfg := `{"ID":"` + id + `","Name":"/web-1","State":{"Pid":4242},"Config":{"Image":"shop/web:1.2"}}`
		if err := os.WriteFile(p, []byte(cfg), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	add := func(cg uint64, id string) *container {
		c := &container{cgroupID: cg, ref: runtime.Ref{Runtime: runtime.Docker, ID: id}, isContainer: true, firstSeen: now}
		if !d.readMeta(c) {
			c.nextRetry = d.nextMetaRetry(c)
		}
		d.byID[cg] = c
		return c
	}
	// step advances the clock to at, refreshing c every 10 ms, and
	// reports when c was first dirty (zero: not by at).
	step := func(c *container, at time.Duration) time.Duration {
		for now.Sub(t0) < at {
			now = now.Add(10 * time.Millisecond)
			if d.refresh(c) {
				return now.Sub(t0)
			}
		}
		return 0
	}

	late := add(1, "late")
	if got := step(late, 15*time.Second); got != 0 {
		t.Fatalf("dirty at %v with no state written", got)
	}
	if late.nextRetry.Sub(now) > metaRetrySlow {
		t.Fatalf("next read in %v after 15s, want at most %v", late.nextRetry.Sub(now), metaRetrySlow)
	}
	write("late")
	got := step(late, 16*time.Second)
	if got == 0 || got > 15*time.Second+metaRetrySlow+10*time.Millisecond {
		t.Fatalf("state written at 15s read at %v, want within %v", got, metaRetrySlow)
	}
	if !late.diskDone || late.info.Identity.ImageRef != "shop/web:1.2" || late.info.Identity.Name != "web-1" {
		t.Fatalf("late state: diskDone %v identity %+v", late.diskDone, late.info.Identity)
	}

	// Past metaRetryFor the state is no longer looked for.
	t0 = now
	gone := add(2, "gone")
	if got := step(gone, metaRetryFor+time.Second); got != 0 {
		t.Fatalf("dirty at %v with no state written", got)
	}
	write("gone")
	if got := step(gone, metaRetryFor+3*time.Second); got != 0 || gone.diskDone {
		t.Fatalf("state read %v after metaRetryFor", got)
	}
}
