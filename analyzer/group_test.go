package analyzer

import (
	"strings"
	"testing"

	"github.com/containsec/contain/schemas/containv1"
)

func ctrEv(ctr string, at int64, ref, digest string, labels map[string]string) *containv1.Event {
	ev := base(ctr, at)
	ev.ImageRef, ev.ImageDigest = ref, digest
	ev.Kind = containv1.Kind_KIND_CONTAINER
	ev.Body = &containv1.Event_Container{Container: &containv1.ContainerInfo{Runtime: "runc", Labels: labels}}
	return ev
}

func TestGroupKey(t *testing.T) {
	compose := map[string]string{LabelComposeProject: "shop", LabelComposeService: "web"}
	k8s := map[string]string{LabelK8sNamespace: "prod", LabelK8sPod: "web-7d4b9c8f6d-x2x9q", LabelK8sContainer: "nginx"}
	cri := map[string]string{LabelCRINamespace: "prod", LabelCRIPod: "db-0", LabelCRIContainer: "postgres"}
	app := map[string]string{LabelK8sNamespace: "prod", LabelK8sPod: "whatever-1a", LabelK8sContainer: "c", LabelApp: "api"}
	cases := []struct {
		mode   string
		labels map[string]string
		want   string
	}{
		{GroupByDigest, compose, ""},
		{GroupByRepository, compose, ""},
		{GroupByCompose, compose, "compose:shop/web"},
		{GroupByCompose, k8s, ""},
		{GroupByCompose, map[string]string{LabelComposeService: "web/../x"}, ""},
		{GroupByKubernetes, k8s, "k8s:prod/web/nginx"},
		{GroupByKubernetes, cri, "k8s:prod/db/postgres"},
		{GroupByKubernetes, app, "k8s:prod/api/c"},
		{GroupByKubernetes, compose, ""},
		{GroupByKubernetes, map[string]string{LabelK8sNamespace: strings.Repeat("n", 300), LabelK8sPod: "p"}, ""},
	}
	for _, c := range cases {
		if got := GroupKey(c.mode, &containv1.ContainerInfo{Labels: c.labels}); got != c.want {
			t.Errorf("GroupKey(%s, %v) = %q, want %q", c.mode, c.labels, got, c.want)
		}
	}
	// Pod and namespace fields of the container event win over labels.
	if got := GroupKey(GroupByKubernetes, &containv1.ContainerInfo{Namespace: "ns", Pod: "agent-bx2kq", Labels: map[string]string{LabelK8sContainer: "a"}}); got != "k8s:ns/agent/a" {
		t.Errorf("fields: %q", got)
	}
	if GroupKey(GroupByCompose, nil) != "" {
		t.Error("nil info")
	}
}

func TestPodWorkloadAndRepository(t *testing.T) {
	for pod, want := range map[string]string{
		"web-7d4b9c8f6d-x2x9q":  "web",    // Deployment
		"my-api-5c9f8b7d-bx2kq": "my-api", // Deployment, 8-char hash
		"agent-bx2kq":           "agent",  // DaemonSet, Job
		"db-0":                  "db",     // StatefulSet
		"redis-cluster-12":      "redis-cluster",
		"standalone":            "standalone",
		"web-aeiou":             "web-aeiou", // vowels: not a generated suffix
		"":                      "",
	} {
		if got := PodWorkload(pod); got != want {
			t.Errorf("PodWorkload(%q) = %q, want %q", pod, got, want)
		}
	}
	for ref, want := range map[string]string{
		"shop/web:1.2":               "shop/web",
		"shop/web":                   "shop/web",
		"registry:5000/shop/web:1.2": "registry:5000/shop/web",
		"registry:5000/shop/web":     "registry:5000/shop/web",
		"shop/web@sha256:" + strings.Repeat("a", 64): "shop/web",
		"shop/web:1.2@sha256:abc":                    "shop/web",
	} {
		if got := Repository(ref); got != want {
			t.Errorf("Repository(%q) = %q, want %q", ref, got, want)
		}
	}
}

func TestGroupByValidate(t *testing.T) {
	c := DefaultConfig()
	for _, m := range append(GroupByModes, "") {
		c.GroupBy = m
		if err := c.Validate(); err != nil {
			t.Errorf("%q: %v", m, err)
		}
	}
	c.GroupBy = "pod"
	if err := c.Validate(); err == nil || !strings.HasPrefix(err.Error(), "analyzer.group_by:") {
		t.Errorf("bad group_by: %v", err)
	}
}

// TestEngineGroupBy: under each mode, which containers share what a first
// container learned. Container c2 runs another image version (digest and
// tag) of the same repository, in the same compose service and Kubernetes
// workload; c3 is another service of another repository.
func TestEngineGroupBy(t *testing.T) {
	labels := func(svc, pod string) map[string]string {
		return map[string]string{
			LabelComposeProject: "shop", LabelComposeService: svc,
			LabelK8sNamespace: "prod", LabelK8sPod: pod, LabelK8sContainer: "main",
		}
	}
	type ctr struct {
		id, ref, digest string
		labels          map[string]string
	}
	c1 := ctr{"c1", "shop/web:1.0", "sha256:aaaa", labels("web", "web-7d4b9c8f6d-x2x9q")}
	c2 := ctr{"c2", "shop/web:1.1", "sha256:bbbb", labels("web", "web-5c9f8b7d6c-bx2kq")}
	c3 := ctr{"c3", "shop/db:1.0", "sha256:cccc", labels("db", "db-0")}
	for _, tc := range []struct {
		mode          string
		c2Shares      bool
		c1Key, c3Key  string
		wantBaselines int
	}{
		{GroupByDigest, false, "sha256:aaaa", "sha256:cccc", 3},
		{GroupByRepository, true, "repo:shop/web", "repo:shop/db", 2},
		{GroupByCompose, true, "compose:shop/web", "compose:shop/db", 2},
		{GroupByKubernetes, true, "k8s:prod/web/main", "k8s:prod/db/main", 2},
	} {
		t.Run(tc.mode, func(t *testing.T) {
			cfg := testConfig()
			cfg.GroupBy = tc.mode
			e := newEngine(t, cfg, nil)
			ev := func(c ctr, e *containv1.Event) *containv1.Event {
				e.ImageRef, e.ImageDigest = c.ref, c.digest
				return e
			}
			for i, c := range []ctr{c1, c2, c3} {
				e.Observe(ctrEv(c.id, sec(float64(i)/10), c.ref, c.digest, c.labels))
			}
			// c1 learns for the window; c2 and c3 start after it ended.
			e.Observe(ev(c1, execEv("c1", sec(0.5), "/bin/httpd")))
			e.Observe(ev(c1, execEv("c1", sec(3.5), "/bin/httpd")))
			e.Observe(ev(c3, execEv("c3", sec(3.6), "/bin/postgres")))
			// An exec c1 never made: scored (alerted) only against c1's
			// converged baseline; c2's own would still be learning.
			out := e.Observe(ev(c2, execEv("c2", sec(4), "/bin/wget")))
			shared := len(out) == 1
			if shared != tc.c2Shares {
				t.Errorf("c2 shares c1's baseline: %v, want %v (alerts %v)", shared, tc.c2Shares, out)
			}
			// The alert names c2's pod, namespace and labels (any mode).
			if a := out; shared {
				al := a[0].GetAlert()
				if al.GetPod() != "web-5c9f8b7d6c-bx2kq" || al.GetNamespace() != "prod" || al.GetLabels()[LabelComposeService] != "web" || len(al.GetLabels()) != 5 {
					t.Errorf("alert pod %q namespace %q labels %v", al.GetPod(), al.GetNamespace(), al.GetLabels())
				}
			}
			keys := e.Keys()
			if len(keys) != tc.wantBaselines {
				t.Errorf("baselines %v, want %d", keys, tc.wantBaselines)
			}
			for _, k := range []string{tc.c1Key, tc.c3Key} {
				if e.Baseline(k) == nil {
					t.Errorf("no baseline %q in %v", k, keys)
				}
			}
		})
	}
}

// TestEngineRuntimeProcess: what runc's init stages do inside a container
// (before they exec its program) is neither learned nor scored; a program
// of the image that names itself like runc is scored.
func TestEngineRuntimeProcess(t *testing.T) {
	e := newEngine(t, testConfig(), nil)
	learn(e, "c1")
	runc := func(at float64, name string, tgid uint32) *containv1.Event {
		ev := sysEv("c1", sec(at), name)
		ev.GetSyscall().Mode = containv1.Syscall_MODE_SENSITIVE
		ev.GetSyscall().Proc = &containv1.Process{Pid: tgid, Tgid: tgid, Ppid: 900, Comm: "runc:[2:INIT]"}
		return ev
	}
	// During learning: runc's start (mount, pivot_root) and a runc exec
	// (setuid, capset).
	for i, s := range []string{"unshare", "mount", "pivot_root", "setuid", "capset"} {
		e.Observe(runc(1.5+float64(i)/100, s, 500))
	}
	if _, ok := e.Baseline("sha256:aaaa").Syscalls["unshare"]; ok {
		t.Fatal("runc's unshare was learned")
	}
	// After: another runc exec raises nothing ...
	for _, s := range []string{"setuid", "capset", "keyctl"} {
		if out := e.Observe(runc(5, s, 600)); len(out) != 0 {
			t.Errorf("runc exec %s alerted: %v", s, out[0].GetAlert().Reasons)
		}
	}
	// ... nor do periodic counts of its syscalls ...
	cnt := sysEv("c1", sec(5.1), "unshare")
	cnt.GetSyscall().Mode = containv1.Syscall_MODE_COUNT
	if out := e.Observe(cnt); len(out) != 0 {
		t.Errorf("count alerted: %v", out[0].GetAlert().Reasons)
	}
	if s := e.Stats(); s.Runtime != 8 || s.Counts != 1 {
		t.Errorf("stats runtime %d counts %d, want 8 and 1", s.Runtime, s.Counts)
	}
	// ... but the image's own unshare does, and so does a process of the
	// image renamed runc:[2:INIT]: known by its exec (tgid 10, see execEv)
	// or by a fork from a known process.
	mine := runc(6, "unshare", 10)
	if a := alertOf(t, e.Observe(mine)); a.Reasons[0].Code != CodeNamespace {
		t.Errorf("renamed process: %v", a.Reasons)
	}
	fork := base("c1", sec(6.1))
	fork.Kind = containv1.Kind_KIND_PROCESS
	fork.Body = &containv1.Event_Process{Process: &containv1.ProcessLifecycle{Op: containv1.ProcessLifecycle_OP_FORK,
		Proc: &containv1.Process{Pid: 10, Tgid: 10}, ChildTgid: 11}}
	e.Observe(fork)
	if a := alertOf(t, e.Observe(runc(6.2, "setns", 11))); a.Reasons[0].Code != CodeNamespace {
		t.Errorf("forked renamed process: %v", a.Reasons)
	}
	// Once it exited, its tgid is the runtime's again.
	exit := base("c1", sec(6.3))
	exit.Kind = containv1.Kind_KIND_PROCESS
	exit.Body = &containv1.Event_Process{Process: &containv1.ProcessLifecycle{Op: containv1.ProcessLifecycle_OP_EXIT,
		Proc: &containv1.Process{Pid: 11, Tgid: 11}}}
	e.Observe(exit)
	if out := e.Observe(runc(6.4, "mount", 11)); len(out) != 0 {
		t.Errorf("runtime after exit alerted: %v", out[0].GetAlert().Reasons)
	}
}

// FuzzGroupKey: labels are the container's (hostile) annotations; a key is
// never built from an over-long or path-like value, and never panics.
func FuzzGroupKey(f *testing.F) {
	f.Add("shop", "web", "prod", "web-7d4b9c8f6d-x2x9q", "nginx", "")
	f.Add("", "", "ns", "db-0", "", "app")
	f.Add("a/b", "c\x00", "", "-", "--", "x-")
	f.Fuzz(func(t *testing.T, project, service, ns, pod, ctr, app string) {
		ci := &containv1.ContainerInfo{Pod: app + pod, Namespace: ns + project, Labels: map[string]string{
			LabelComposeProject: project, LabelComposeService: service,
			LabelK8sNamespace: ns, LabelK8sPod: pod, LabelK8sContainer: ctr, LabelApp: app,
		}}
		for _, m := range GroupByModes {
			k := GroupKey(m, ci)
			if k == "" {
				continue
			}
			if strings.Contains(k, "\x00") || len(k) > 4*maxGroupLabel+16 {
				t.Fatalf("%s: key %q", m, k)
			}
			if strings.Count(k, "/") > 2 {
				t.Fatalf("%s: key %q has a path-like part", m, k)
			}
		}
		_ = PodWorkload(pod)
		_ = Repository(pod)
	})
}

// TestGroupKeyRuntimeDigest: the runtime's digest is the baseline group; a
// label naming another digest (or the critical label) changes nothing.
func TestGroupKeyRuntimeDigest(t *testing.T) {
	real := "sha256:" + strings.Repeat("a", 64)
	fake := "sha256:" + strings.Repeat("f", 64)
	ci := &containv1.ContainerInfo{ImageRef: "shop/web:1", ImageDigest: real}
	spoofed := &containv1.ContainerInfo{ImageRef: "shop/web:1", ImageDigest: real,
		Labels: map[string]string{"io.contain.image.digest": fake, "io.contain.critical": "true"}}
	for _, mode := range []string{"", GroupByDigest, GroupByRepository} {
		if a, b := GroupKey(mode, ci), GroupKey(mode, spoofed); a != b || a == "" {
			t.Errorf("%q: group %q vs spoofed %q", mode, a, b)
		}
	}
	if g := GroupKey(GroupByDigest, spoofed); g != real {
		t.Errorf("digest group %q", g)
	}
	if g := GroupKey(GroupByRepository, spoofed); g != "repo:shop/web" {
		t.Errorf("repository group %q", g)
	}
	// Without the runtime's fields the event's image key decides (legacy).
	if g := GroupKey(GroupByDigest, &containv1.ContainerInfo{Labels: map[string]string{"io.contain.image.digest": fake}}); g != "" {
		t.Errorf("label made a group: %q", g)
	}
	if g := GroupKey(GroupByDigest, &containv1.ContainerInfo{ImageDigest: "sha256:../x"}); g != "" {
		t.Errorf("bad digest made a group: %q", g)
	}
}
