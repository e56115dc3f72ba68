// Package deploy holds contain's install files (systemd units, Kubernetes
// manifests, a compose file, the image builder); its tests validate them.
package deploy

import (
	"bufio"
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/cli"
	"go.yaml.in/yaml/v3"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	k8syaml "sigs.k8s.io/yaml"

	"github.com/containsec/contain/internal/testenv"
)

// configKeys reads every config key and its environment variable from
// docs/config.md (generated from the config structs; TestConfigDoc in
// cmd/contain keeps it current).
func configKeys(t *testing.T) (keys, envs map[string]bool) {
	t.Helper()
	f, err := os.Open(filepath.Join(testenv.RepoRoot(t), "docs", "config.md"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	keys, envs = map[string]bool{}, map[string]bool{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		cols := strings.Split(sc.Text(), "|")
		if len(cols) < 6 || !strings.HasPrefix(strings.TrimSpace(cols[1]), "`") {
			continue
		}
		keys[strings.Trim(strings.TrimSpace(cols[1]), "`")] = true
		envs[strings.Trim(strings.TrimSpace(cols[4]), "`")] = true
	}
	if len(keys) < 100 || !keys["responder.policy.never_pause_ids"] {
		t.Fatalf("docs/config.md: %d keys read", len(keys))
	}
	return keys, envs
}

// checkYAMLKeys fails on a key of a contain config document that is not a
// config key (entries of a map-valued key are allowed under it).
func checkYAMLKeys(t *testing.T, where string, doc []byte, keys map[string]bool) int {
	t.Helper()
	var m map[string]any
	if err := yaml.Unmarshal(doc, &m); err != nil {
		t.Fatalf("%s: %v", where, err)
	}
	n := 0
	var walk func(prefix string, m map[string]any)
	walk = func(prefix string, m map[string]any) {
		for k, v := range m {
			key := prefix + k
			if keys[key] {
				n++
				continue
			}
			if sub, ok := v.(map[string]any); ok {
				walk(key+".", sub)
				continue
			}
			t.Errorf("%s sets %s, which is not a config key", where, key)
		}
	}
	walk("", m)
	return n
}

func checkEnv(t *testing.T, where string, name string, envs map[string]bool) {
	t.Helper()
	if strings.HasPrefix(name, "CONTAIN_") && name != "CONTAIN_CONFIG" && !envs[name] {
		t.Errorf("%s sets %s, which no config key reads", where, name)
	}
}

// TestSystemdUnits: every unit passes systemd-analyze verify (run where
// systemd is installed), is Type=notify (contain sends READY=1 once its
// stages run) and hardened.
func TestSystemdUnits(t *testing.T) {
	dir := filepath.Join(testenv.RepoRoot(t), "deploy", "systemd")
	units, _ := filepath.Glob(filepath.Join(dir, "*.service"))
	if len(units) != 7 {
		t.Fatalf("%d service units in %s, want contain.service and six stages", len(units), dir)
	}
	tmp := t.TempDir()
	var copies []string
	for _, u := range units {
		body, err := os.ReadFile(u)
		if err != nil {
			t.Fatal(err)
		}
		s := string(body)
		for _, want := range []string{"Type=notify\n", "NoNewPrivileges=yes\n", "ProtectSystem=strict\n", "CapabilityBoundingSet=", "ExecStart=/usr/bin/contain "} {
			if !strings.Contains(s, want) {
				t.Errorf("%s lacks %s", filepath.Base(u), strings.TrimSpace(want))
			}
		}
		if strings.Contains(s, "DynamicUser=yes") && !strings.Contains(s, "CapabilityBoundingSet=\n") {
			t.Errorf("%s: an unprivileged stage keeps capabilities", filepath.Base(u))
		}
		// verify needs the executable to exist.
		c := filepath.Join(tmp, filepath.Base(u))
		os.WriteFile(c, []byte(strings.ReplaceAll(s, "/usr/bin/contain", "/bin/true")), 0o644)
		copies = append(copies, c)
	}
	body, _ := os.ReadFile(filepath.Join(dir, "contain.service"))
	caps := "CapabilityBoundingSet=CAP_BPF CAP_PERFMON CAP_SYS_ADMIN CAP_SYS_PTRACE CAP_DAC_OVERRIDE CAP_DAC_READ_SEARCH CAP_SYS_RESOURCE CAP_CHOWN\n"
	if !strings.Contains(string(body), caps) {
		t.Errorf("contain.service's capabilities are not exactly %s", caps)
	}
	target := filepath.Join(tmp, "contain.target")
	tb, _ := os.ReadFile(filepath.Join(dir, "contain.target"))
	os.WriteFile(target, tb, 0o644)
	copies = append(copies, target)

	if _, err := exec.LookPath("systemd-analyze"); err != nil {
		t.Skip("systemd-analyze not installed (apt-get install systemd): units checked for their settings only")
	}
	cmd := exec.Command("systemd-analyze", append([]string{"verify", "--man=no"}, copies...)...)
	out, err := cmd.CombinedOutput()
	var complaints []string
	for _, line := range strings.Split(string(out), "\n") {
		if strings.Contains(line, tmp) {
			complaints = append(complaints, line)
		}
	}
	if err != nil || len(complaints) > 0 {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, strings.Join(complaints, "\n"))
	}
}

// TestComposeFile: deploy/compose.yaml loads with compose-go (the
// compose specification's schema: an unknown field fails), contain's
// service has the node agent's mounts and host namespaces, and every
// CONTAIN_* variable it sets is a config key's.
func TestComposeFile(t *testing.T) {
	_, envs := configKeys(t)
	path := filepath.Join(testenv.RepoRoot(t), "deploy", "compose.yaml")
	opts, err := cli.NewProjectOptions([]string{path}, cli.WithName("contain"), cli.WithWorkingDirectory(filepath.Dir(path)))
	if err != nil {
		t.Fatal(err)
	}
	p, err := opts.LoadProject(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	names := p.ServiceNames()
	sort.Strings(names)
	if !slices.Equal(names, []string{"clickhouse", "contain", "nats"}) {
		t.Fatalf("services %v", names)
	}
	c := p.Services["contain"]
	if !c.Privileged || c.Pid != "host" || c.Cgroup != "host" || c.NetworkMode != "host" {
		t.Errorf("contain: privileged %v pid %q cgroup %q network %q", c.Privileged, c.Pid, c.Cgroup, c.NetworkMode)
	}
	var targets []string
	for _, v := range c.Volumes {
		targets = append(targets, v.Target)
	}
	for _, want := range []string{"/sys/fs/cgroup", "/sys/fs/bpf", "/sys/kernel/btf", "/run/docker.sock", "/var/lib/docker", "/run/docker", "/var/lib/contain"} {
		if !slices.Contains(targets, want) {
			t.Errorf("contain: no volume at %s (have %v)", want, targets)
		}
	}
	for name := range c.Environment {
		checkEnv(t, "compose.yaml", name, envs)
	}
	if c.DependsOn["clickhouse"].Condition != "service_healthy" {
		t.Errorf("contain does not wait for a healthy ClickHouse: %+v", c.DependsOn)
	}
	if !strings.Contains(strings.Join(p.Services["nats"].Command, " "), "--jetstream") {
		t.Error("nats runs without JetStream")
	}

	// An unknown field is an error (the check above can fail).
	bad := filepath.Join(t.TempDir(), "compose.yaml")
	os.WriteFile(bad, []byte("services:\n  x:\n    image: busybox\n    privilegd: true\n"), 0o644)
	if o, err := cli.NewProjectOptions([]string{bad}, cli.WithName("bad")); err == nil {
		if _, err := o.LoadProject(context.Background()); err == nil {
			t.Error("compose-go accepted an unknown field")
		}
	}
}

// TestKubernetesManifests decodes every document of deploy/kubernetes
// strictly into its k8s.io/api type (an unknown field fails), checks the
// node agent's privileges and mounts, the 3-node JetStream cluster, and
// that every config key and CONTAIN_* variable set exists.
func TestKubernetesManifests(t *testing.T) {
	keys, envs := configKeys(t)
	files, _ := filepath.Glob(filepath.Join(testenv.RepoRoot(t), "deploy", "kubernetes", "*.yaml"))
	kinds := map[string][]any{}
	for _, f := range files {
		body, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for i, doc := range bytes.Split(body, []byte("\n---\n")) {
			where := filepath.Base(f) + " document " + string(rune('1'+i))
			var meta struct{ Kind string }
			if err := k8syaml.Unmarshal(doc, &meta); err != nil {
				t.Fatalf("%s: %v", where, err)
			}
			var obj any
			switch meta.Kind {
			case "Namespace":
				obj = &corev1.Namespace{}
			case "ConfigMap":
				obj = &corev1.ConfigMap{}
			case "Service":
				obj = &corev1.Service{}
			case "DaemonSet":
				obj = &appsv1.DaemonSet{}
			case "Deployment":
				obj = &appsv1.Deployment{}
			case "StatefulSet":
				obj = &appsv1.StatefulSet{}
			default:
				t.Fatalf("%s: kind %q not checked", where, meta.Kind)
			}
			if err := k8syaml.UnmarshalStrict(doc, obj); err != nil {
				t.Errorf("%s: %v", where, err)
				continue
			}
			exactCase(t, where, doc, obj)
			kinds[meta.Kind] = append(kinds[meta.Kind], obj)
		}
	}
	var pods []corev1.PodSpec
	for _, o := range kinds["DaemonSet"] {
		pods = append(pods, o.(*appsv1.DaemonSet).Spec.Template.Spec)
	}
	for _, o := range kinds["Deployment"] {
		pods = append(pods, o.(*appsv1.Deployment).Spec.Template.Spec)
	}
	if len(kinds["DaemonSet"]) != 1 || len(kinds["Deployment"]) != 3 {
		t.Fatalf("%d DaemonSets, %d Deployments; want the node agent and enricher, analyzer, store", len(kinds["DaemonSet"]), len(kinds["Deployment"]))
	}
	node := pods[0]
	sc := node.Containers[0].SecurityContext
	if !node.HostPID || sc == nil || sc.Capabilities == nil {
		t.Fatal("node agent: not hostPID or no capabilities")
	}
	var add []string
	for _, c := range sc.Capabilities.Add {
		add = append(add, string(c))
	}
	if want := []string{"BPF", "PERFMON", "SYS_ADMIN", "SYS_PTRACE", "DAC_OVERRIDE", "DAC_READ_SEARCH", "SYS_RESOURCE"}; !slices.Equal(add, want) ||
		len(sc.Capabilities.Drop) != 1 || sc.Capabilities.Drop[0] != "ALL" || (sc.Privileged != nil && *sc.Privileged) {
		t.Errorf("node agent capabilities: add %v drop %v privileged %v", add, sc.Capabilities.Drop, sc.Privileged)
	}
	mounts := map[string]string{}
	for _, m := range node.Containers[0].VolumeMounts {
		mounts[m.MountPath] = m.Name
	}
	hostPaths := map[string]string{}
	for _, v := range node.Volumes {
		if v.HostPath != nil {
			hostPaths[v.Name] = v.HostPath.Path
		}
	}
	for _, p := range []string{"/sys/fs/cgroup", "/sys/fs/bpf", "/sys/kernel/btf", "/run/containerd"} {
		if hostPaths[mounts[p]] != p {
			t.Errorf("node agent: %s is not the host's (%q)", p, hostPaths[mounts[p]])
		}
	}
	for _, p := range pods[1:] {
		c := p.Containers[0]
		if p.SecurityContext == nil || p.SecurityContext.RunAsNonRoot == nil || !*p.SecurityContext.RunAsNonRoot ||
			c.SecurityContext == nil || len(c.SecurityContext.Capabilities.Drop) != 1 || len(c.SecurityContext.Capabilities.Add) != 0 {
			t.Errorf("%s: not an unprivileged non-root pod", c.Name)
		}
	}
	for _, p := range pods {
		for _, c := range p.Containers {
			for _, e := range c.Env {
				checkEnv(t, c.Name, e.Name, envs)
			}
		}
	}
	var natsSet *appsv1.StatefulSet
	for _, o := range kinds["StatefulSet"] {
		if s := o.(*appsv1.StatefulSet); s.Name == "nats" {
			natsSet = s
		}
	}
	if natsSet == nil || natsSet.Spec.Replicas == nil || *natsSet.Spec.Replicas != 3 {
		t.Fatal("no 3-node nats StatefulSet")
	}
	checked := 0
	for _, o := range kinds["ConfigMap"] {
		cm := o.(*corev1.ConfigMap)
		switch cm.Name {
		case "nats-config":
			if c := cm.Data["nats.conf"]; !strings.Contains(c, "jetstream") || strings.Count(c, "nats://nats-") != 3 {
				t.Errorf("nats.conf: no JetStream or not 3 routes:\n%s", c)
			}
		case "contain-config":
			checked += checkYAMLKeys(t, "contain-config", []byte(cm.Data["contain.yaml"]), keys)
		}
	}
	if checked == 0 {
		t.Error("no contain config checked")
	}
	// Strict decoding can fail.
	if err := k8syaml.UnmarshalStrict([]byte("kind: DaemonSet\nspec:\n  template:\n    spec:\n      hostPIDs: true\n"), &appsv1.DaemonSet{}); err == nil {
		t.Error("strict decoding accepted hostPIDs")
	}
	var ft fakeT
	exactCase(&ft, "x", []byte("kind: DaemonSet\nspec:\n  template:\n    spec:\n      hostPid: true\n"), &appsv1.DaemonSet{Spec: appsv1.DaemonSetSpec{Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{HostPID: true}}}})
	if !ft.failed {
		t.Error("hostPid (for hostPID) not caught")
	}
}

type fakeT struct{ failed bool }

func (f *fakeT) Helper()               {}
func (f *fakeT) Errorf(string, ...any) { f.failed = true }

// exactCase catches what strict decoding lets through: encoding/json
// matches field names regardless of case (hostPid sets hostPID). Every key
// of the document must appear, spelled alike, in the decoded object's
// JSON, unless its value is empty (omitted on output).
func exactCase(t interface {
	Helper()
	Errorf(string, ...any)
}, where string, doc []byte, obj any) {
	t.Helper()
	var in, out any
	if err := k8syaml.Unmarshal(doc, &in); err != nil {
		t.Errorf("%s: %v", where, err)
		return
	}
	js, err := k8syaml.Marshal(obj)
	if err == nil {
		err = k8syaml.Unmarshal(js, &out)
	}
	if err != nil {
		t.Errorf("%s: %v", where, err)
		return
	}
	var walk func(path string, a, b any)
	walk = func(path string, a, b any) {
		switch a := a.(type) {
		case map[string]any:
			bm, _ := b.(map[string]any)
			for k, v := range a {
				bv, ok := bm[k]
				if !ok {
					if v != nil && v != false && v != "" && v != float64(0) && !emptyColl(v) {
						t.Errorf("%s: %s%s is not a field (spelling or case)", where, path, k)
					}
					continue
				}
				walk(path+k+".", v, bv)
			}
		case []any:
			bs, _ := b.([]any)
			for i, v := range a {
				if i < len(bs) {
					walk(path, v, bs[i])
				}
			}
		}
	}
	walk("", in, out)
}

func emptyColl(v any) bool {
	switch v := v.(type) {
	case map[string]any:
		return len(v) == 0
	case []any:
		return len(v) == 0
	}
	return false
}
