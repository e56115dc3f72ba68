package analyzer

import (
	"testing"

	"github.com/containsec/contain/schemas/containv1"
)

func commitEv(ctr string, at int64, c *containv1.Commit) *containv1.Event {
	ev := base(ctr, at)
	ev.Kind = containv1.Kind_KIND_COMMIT
	ev.CgroupId = 0
	ev.Body = &containv1.Event_Commit{Commit: c}
	return ev
}

func TestCommitPolicy(t *testing.T) {
	cfg := testConfig()
	cfg.Commits = CommitsConfig{AllowContainers: []string{"builder-*"}, AllowImages: []string{"registry.local/golden/*"}}
	e := newEngine(t, cfg, nil)
	c := &containv1.Commit{Engine: "docker", SourceContainerId: "c1", SourceContainerName: "c1-name", SourceImageRef: "demo:1", ImageRef: "evil:1", FilesAdded: 2}
	a := alertOf(t, e.Observe(commitEv("c1", sec(1), c)))
	r := hasCode(a, CodeCommitUnallowed)
	if r == nil || r.Score != 0.7 || len(r.Mitre) != 1 || r.Mitre[0] != "T1525" {
		t.Fatalf("reasons %v: want commit.unallowed 0.7 T1525", a.Reasons)
	}
	// Allowed by container name, by image, or no source container.
	for name, ev := range map[string]*containv1.Event{
		"container": commitEv("c2", sec(2), &containv1.Commit{Engine: "docker", SourceContainerId: "c2", SourceContainerName: "builder-7", ImageRef: "x:1"}),
		"image":     commitEv("c3", sec(3), &containv1.Commit{Engine: "podman", SourceContainerId: "c3", SourceImageRef: "registry.local/golden/base:2", ImageRef: "x:2"}),
		"source":    commitEv("", sec(4), &containv1.Commit{Engine: "containerd", ImageRef: "x:3"}),
	} {
		if ev.ContainerId == "" {
			ev.ContainerName = ""
		} else {
			ev.ContainerName, ev.ImageRef = "", ""
		}
		if out := e.Observe(ev); len(out) != 0 {
			t.Errorf("%s: allowed commit raised %v", name, out)
		}
	}
	// The class score is tunable.
	cfg.ClassScores = []string{"commit.unallowed=0.9"}
	e = newEngine(t, cfg, nil)
	if a := alertOf(t, e.Observe(commitEv("c1", sec(1), c))); a.Score != 0.9 {
		t.Fatalf("score %v with class_scores commit.unallowed=0.9", a.Score)
	}
	if err := (CommitsConfig{AllowImages: []string{"[bad"}}).Validate(); err == nil {
		t.Fatal("a malformed pattern validated")
	}
}

// TestReadonlyRefusedNotLearned: a write refused by a read-only root
// filesystem alerts during learning and is not learned as a write.
func TestReadonlyRefusedNotLearned(t *testing.T) {
	e := newEngine(t, testConfig(), nil)
	e.Observe(execEv("ro", sec(0), "/bin/httpd", "/bin/httpd"))
	ev := fileEv("ro", sec(0.5), containv1.File_OP_CREATE, "/opt/app/dropper")
	ev.GetFile().Result = erofs
	a := alertOf(t, e.Observe(ev))
	if r := hasCode(a, CodeWriteReadonly); r == nil || r.Score != 0.75 {
		t.Fatalf("reasons %v: want file.write.readonly 0.75", a.Reasons)
	}
	if b := e.containers["ro"].base; b.Phase != PhaseLearning || len(b.Writes) != 0 {
		t.Fatalf("phase %v writes %v: a refused write was learned", b.Phase, b.Writes)
	}
	// Another failure (EACCES) is not this alert.
	ev = fileEv("ro", sec(0.6), containv1.File_OP_OPEN_WRITE, "/opt/app/other")
	ev.GetFile().Result = -13
	for _, out := range e.Observe(ev) {
		if hasCode(out.GetAlert(), CodeWriteReadonly) != nil {
			t.Fatal("EACCES raised file.write.readonly")
		}
	}
}
