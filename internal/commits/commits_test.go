package commits

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/containsec/contain/internal/engines"
	"github.com/containsec/contain/internal/testenv"
	"github.com/containsec/contain/schemas/containv1"
)

// startWatcher runs a watcher over cfg and returns the events it
// publishes.
func startWatcher(t *testing.T, cfg Config) <-chan *containv1.Event {
	t.Helper()
	out := make(chan *containv1.Event, 64)
	w, err := New(cfg, "test-host", func(_ context.Context, ev *containv1.Event) error {
		out <- ev
		return nil
	}, testenv.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	testenv.Go(t, 5*time.Second, w.Run)
	select {
	case <-w.Ready():
	case <-time.After(20 * time.Second):
		t.Fatal("watcher not subscribed after 20s")
	}
	return out
}

// waitCommit returns the first published commit that match accepts.
func waitCommit(t *testing.T, evs <-chan *containv1.Event, d time.Duration, match func(*containv1.Commit) bool) *containv1.Event {
	t.Helper()
	deadline := time.After(d)
	for {
		select {
		case ev := <-evs:
			if c := ev.GetCommit(); c != nil && match(c) {
				return ev
			}
		case <-deadline:
			t.Fatalf("no matching commit event within %s", d)
			return nil
		}
	}
}

func onlyEngine(engine string) Config {
	cfg := DefaultConfig()
	cfg.DockerHosts, cfg.Containerd, cfg.Podman = nil, nil, false
	cfg.Retry = 200 * time.Millisecond
	return cfg
}

func TestDockerCommitTraced(t *testing.T) {
	e := testenv.RequireEngines(t)
	cfg := onlyEngine(EngineDocker)
	cfg.DockerHosts = []string{e.DockerHost}
	evs := startWatcher(t, cfg)
	ctr := e.DockerRun(t, "contain-commit-src", nil, "sh", "-c",
		"echo x > /dropped && rm /bin/ls && echo x > /tool && chmod 755 /tool && echo x > /suid && chmod 4755 /suid && echo ok > /ready && sleep 600")
	waitFile(t, func() bool { out, _ := e.Docker("exec", ctr.ID, "cat", "/ready"); return out == "ok" })
	ref := "contain-commit-test:traced"
	t.Cleanup(func() { _, _ = e.Docker("rmi", "-f", ref) })
	newID, err := e.Docker("commit", "-a", "alice", "-m", "hotfix", ctr.ID, ref)
	if err != nil {
		t.Fatal(err)
	}
	srcImage, err := e.Docker("inspect", "-f", "{{.Image}}", ctr.ID)
	if err != nil {
		t.Fatal(err)
	}
	ev := waitCommit(t, evs, 15*time.Second, func(c *containv1.Commit) bool { return c.ImageId == newID })
	c := ev.GetCommit()
	if ev.Kind != containv1.Kind_KIND_COMMIT || ev.ContainerId != ctr.ID || ev.ContainerName != "contain-commit-src" {
		t.Errorf("envelope: kind %v container %s/%s, want KIND_COMMIT %s/contain-commit-src", ev.Kind, ev.ContainerId, ev.ContainerName, ctr.ID)
	}
	if c.Engine != EngineDocker || c.ImageRef != ref || c.Author != "alice" || c.Comment != "hotfix" || c.SourceImageId != srcImage {
		t.Errorf("commit: %+v", c)
	}
	if c.FilesAdded < 1 || c.FilesDeleted < 1 || !slices.Contains(c.Paths, "A /dropped") || !slices.Contains(c.Paths, "D /bin/ls") {
		t.Errorf("diff: added %d changed %d deleted %d paths %q", c.FilesAdded, c.FilesChanged, c.FilesDeleted, c.Paths)
	}
	if !slices.Equal(c.Setuid, []string{"/suid"}) || !slices.Contains(c.Executables, "/tool") || !slices.Contains(c.Executables, "/suid") ||
		slices.Contains(c.Executables, "/dropped") {
		t.Errorf("flagged: executables %q setuid %q; want /tool and /suid, setuid /suid", c.Executables, c.Setuid)
	}
	if len(c.Lineage) == 0 || c.Lineage[0] != srcImage {
		t.Errorf("lineage %q: want the source image %s first", c.Lineage, srcImage)
	}
}

func TestPodmanCommitTraced(t *testing.T) {
	p := testenv.RequirePodman(t)
	cfg := onlyEngine(EnginePodman)
	cfg.Podman = true
	evs := startWatcher(t, cfg)
	ctr := p.PodmanRun(t, "contain-commit-psrc", nil, "sh", "-c", "echo x > /dropped && echo x > /tool && chmod 755 /tool && echo ok > /ready && sleep 600")
	waitFile(t, func() bool { out, _ := p.Run("exec", ctr.ID, "cat", "/ready"); return lastLine(out) == "ok" })
	// podman events gives no sign that it follows the log yet: commit
	// (to a new tag each time) until one commit is seen.
	ids := map[string]string{} // ref -> new image id
	var ev *containv1.Event
	for i := 0; ev == nil && i < 8; i++ {
		ref := fmt.Sprintf("localhost/contain-commit-test:ptraced-%d", i)
		t.Cleanup(func() { _, _ = p.Run("rmi", "-f", ref) })
		out, err := p.Run("commit", "-f", "docker", "-a", "bob", "-m", "pfix", ctr.ID, ref)
		if err != nil {
			t.Fatal(err)
		}
		ids[ref] = "sha256:" + lastLine(out)
		deadline := time.After(3 * time.Second)
	wait:
		for {
			select {
			case e := <-evs:
				if e.GetCommit().GetSourceContainerId() == ctr.ID {
					ev = e
					break wait
				}
			case <-deadline:
				break wait
			}
		}
	}
	if ev == nil {
		t.Fatal("no podman commit event after 8 commits")
	}
	ref := ev.GetCommit().GetImageRef()
	newID, ok := ids[ref]
	if !ok {
		t.Fatalf("the commit event names image %q, not one of the commits' %v", ref, ids)
	}
	c := ev.GetCommit()
	if ev.ContainerId != ctr.ID || c.Engine != EnginePodman || c.SourceContainerName != "contain-commit-psrc" {
		t.Errorf("envelope/commit: %s %+v", ev.ContainerId, c)
	}
	if c.ImageId != newID || c.ImageRef != ref || c.Author != "bob" || c.Comment != "pfix" {
		t.Errorf("new image: id %s ref %s author %q comment %q; want %s %s bob pfix", c.ImageId, c.ImageRef, c.Author, c.Comment, newID, ref)
	}
	if c.FilesAdded < 1 || !slices.Contains(c.Paths, "A /dropped") {
		t.Errorf("diff: added %d paths %q", c.FilesAdded, c.Paths)
	}
	if !slices.Equal(c.Executables, []string{"/tool"}) || len(c.Setuid) != 0 {
		t.Errorf("flagged: executables %q setuid %q; want /tool only", c.Executables, c.Setuid)
	}
	if len(c.Lineage) == 0 || c.Lineage[0] != c.SourceImageId {
		t.Errorf("lineage %q: want the source image %s first", c.Lineage, c.SourceImageId)
	}
}

func TestContainerdImageCreateTraced(t *testing.T) {
	e := testenv.RequireEngines(t)
	cfg := onlyEngine(EngineContainerd)
	cfg.Containerd = []string{e.Containerd}
	evs := startWatcher(t, cfg)
	src := "docker.io/" + testenv.EnginesImage
	ref := "docker.io/contain/commit-test:created"
	t.Cleanup(func() { _, _ = e.Ctr("images", "rm", ref) })
	cc, err := engines.NewContainerd(e.Containerd, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	want, err := cc.Image(context.Background(), testenv.EnginesNamespace, src)
	if err != nil {
		t.Fatal(err)
	}
	// The server registers a subscription a moment after the stream opens:
	// create the image again until one creation is seen.
	deadline := time.Now().Add(15 * time.Second)
	for {
		_, _ = e.Ctr("images", "rm", ref)
		if _, err := e.Ctr("images", "tag", src, ref); err != nil {
			t.Fatal(err)
		}
		select {
		case ev := <-evs:
			c := ev.GetCommit()
			if c.GetImageRef() != ref {
				continue
			}
			if c.Engine != EngineContainerd || c.Namespace != testenv.EnginesNamespace || c.ImageDigest != want.Digest || c.ImageId != want.ID {
				t.Errorf("commit %+v: want namespace %s digest %s id %s", c, testenv.EnginesNamespace, want.Digest, want.ID)
			}
			if ev.ContainerId != "" {
				t.Errorf("containerd image create names a source container %q", ev.ContainerId)
			}
			return
		case <-time.After(time.Second):
		}
		if time.Now().After(deadline) {
			t.Fatal("no /images/create event within 15s")
		}
	}
}

func waitFile(t *testing.T, ok func() bool) {
	t.Helper()
	for i := 0; i < 100; i++ {
		if ok() {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatal("container did not write its file")
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		return strings.TrimSpace(s[i+1:])
	}
	return s
}

func TestSummariseBounded(t *testing.T) {
	c := &containv1.Commit{}
	summarise(c, []engines.Change{{Kind: 'A', Path: "/a"}, {Kind: 'C', Path: "/b"}, {Kind: 'D', Path: "/c"}, {Kind: 'A', Path: "/d\xff"}}, 2)
	if c.FilesAdded != 2 || c.FilesChanged != 1 || c.FilesDeleted != 1 || len(c.Paths) != 2 || !c.PathsTruncated {
		t.Fatalf("%+v", c)
	}
	if got := lineage("a", map[string]string{"a": "b", "b": "a"}); !slices.Equal(got, []string{"a", "b"}) {
		t.Fatalf("lineage with a cycle: %q", got)
	}
}

func FuzzParsePodmanEvent(f *testing.F) {
	f.Add([]byte(`{"ID":"56ce","Image":"localhost/x:1","Name":"p","Status":"commit","Time":"2026-12-03T04:10:04.512078779Z","Type":"container","Attributes":{}}`))
	f.Add([]byte(`{"Status":"tag","Type":"image"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		ev, ok, err := ParsePodmanEvent(b)
		if ok && (err != nil || ev.ID == "") {
			t.Fatalf("ok with err %v id %q", err, ev.ID)
		}
	})
}

func FuzzParsePodmanDiff(f *testing.F) {
	f.Add([]byte(`{"changed":["/bin"],"added":["/nf"],"deleted":["/bin/ls"]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		ch, err := ParsePodmanDiff(b)
		if err != nil {
			return
		}
		c := &containv1.Commit{}
		summarise(c, ch, 8)
		if int(c.FilesAdded+c.FilesChanged+c.FilesDeleted) != len(ch) || len(c.Paths) > 8 {
			t.Fatalf("summary %+v of %d changes", c, len(ch))
		}
	})
}
