package runtime

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

const hex64 = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

func TestFromCgroupPath(t *testing.T) {
	for _, tc := range []struct {
		path string
		want Ref
		ok   bool
	}{
		{"/", Ref{}, false},
		{"", Ref{}, false},
		// runc / crun with cgroupfs: /<id>, or any path's last component.
		{"/mybox-1", Ref{Runtime: Runc, ID: "mybox-1"}, true},
		{"/some/parent/abc", Ref{Runtime: Runc, ID: "abc"}, true},
		// docker
		{"/docker/" + hex64, Ref{Runtime: Docker, ID: hex64}, true},
		{"/system.slice/docker-" + hex64 + ".scope", Ref{Runtime: Docker, ID: hex64}, true},
		// containerd / Kubernetes, systemd driver
		{"/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1a2b_3c4d.slice/cri-containerd-" + hex64 + ".scope",
			Ref{Runtime: Containerd, ID: hex64, PodUID: "1a2b-3c4d"}, true},
		// Kubernetes, cgroupfs driver
		{"/kubepods/besteffort/pod1a2b-3c4d/" + hex64, Ref{Runtime: CRI, ID: hex64, PodUID: "1a2b-3c4d"}, true},
		{"/kubepods/pod99/" + hex64, Ref{Runtime: CRI, ID: hex64, PodUID: "99"}, true},
		{"/kubepods/besteffort/pod1a2b-3c4d", Ref{}, false},
		// cri-o
		{"/kubepods.slice/kubepods-pod77.slice/crio-" + hex64 + ".scope", Ref{Runtime: CRIO, ID: hex64, PodUID: "77"}, true},
		{"/machine.slice/crio-conmon-" + hex64 + ".scope", Ref{}, false},
		// podman
		{"/machine.slice/libpod-" + hex64 + ".scope", Ref{Runtime: Podman, ID: hex64}, true},
		{"/machine.slice/libpod-conmon-" + hex64 + ".scope", Ref{}, false},
		{"/libpod_parent/libpod-" + hex64, Ref{Runtime: Podman, ID: hex64}, true},
		// host systemd units
		{"/system.slice/sshd.service", Ref{}, false},
		{"/user.slice/user-0.slice/session-3.scope", Ref{}, false},
		{"/init.scope", Ref{}, false},
		{"/system.slice", Ref{}, false},
		{"libpod-", Ref{}, false},
	} {
		got, ok := FromCgroupPath(tc.path)
		if ok != tc.ok || got != tc.want {
			t.Errorf("FromCgroupPath(%q) = %+v, %v; want %+v, %v", tc.path, got, ok, tc.want, tc.ok)
		}
	}
}

func writeJSON(t *testing.T, p string, v any) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(v)
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestLookupRuncState(t *testing.T) {
	dir := t.TempDir()
	bundle := filepath.Join(dir, "bundle")
	// The shape runc 1.x writes (checked against a real container).
	writeJSON(t, filepath.Join(dir, "runc", "box", "state.json"), map[string]any{
		"id":               "box",
		"init_process_pid": 4242,
		"config": map[string]any{
			"labels": []string{"org.opencontainers.image.ref.name=busybox:1", "x=y=z", "bundle=" + bundle},
		},
	})
	writeJSON(t, filepath.Join(bundle, "config.json"), map[string]any{
		"annotations": map[string]string{"only.in.bundle": "1", "x": "ignored"},
	})
	r := StateReader{RuncRoot: filepath.Join(dir, "runc")}
	info, err := r.Lookup(Ref{Runtime: Runc, ID: "box"})
	if err != nil {
		t.Fatal(err)
	}
	if info.Runtime != Runc || info.InitPID != 4242 || info.Bundle != bundle || info.Name != "box" {
		t.Fatalf("info = %+v", info)
	}
	want := map[string]string{"org.opencontainers.image.ref.name": "busybox:1", "x": "y=z", "only.in.bundle": "1"}
	if len(info.Labels) != len(want) {
		t.Fatalf("labels = %v", info.Labels)
	}
	for k, v := range want {
		if info.Labels[k] != v {
			t.Fatalf("labels[%q] = %q, want %q (all: %v)", k, info.Labels[k], v, info.Labels)
		}
	}
}

func TestLookupKubernetesNames(t *testing.T) {
	dir := t.TempDir()
	writeJSON(t, filepath.Join(dir, "k8s", hex64, "state.json"), map[string]any{
		"init_process_pid": 7,
		"config": map[string]any{"labels": []string{
			"io.kubernetes.cri.container-name=web", "io.kubernetes.cri.sandbox-name=web-7d9", "io.kubernetes.cri.sandbox-namespace=prod",
		}},
	})
	r := StateReader{RuncRoot: filepath.Join(dir, "runc"), ExtraRuncRoots: []string{filepath.Join(dir, "k8s")}}
	info, err := r.Lookup(Ref{Runtime: Containerd, ID: hex64})
	if err != nil {
		t.Fatal(err)
	}
	if info.Runtime != Containerd || info.Name != "web" || info.Pod != "web-7d9" || info.Namespace != "prod" {
		t.Fatalf("info = %+v", info)
	}
}

func TestLookupHostileIDsAndMissing(t *testing.T) {
	r := StateReader{RuncRoot: t.TempDir()}
	for _, id := range []string{"", "..", "../../etc", "a/b", "x\x00y", "missing"} {
		if _, err := r.Lookup(Ref{Runtime: Runc, ID: id}); !errors.Is(err, ErrNotFound) {
			t.Errorf("Lookup(%q): err = %v, want ErrNotFound", id, err)
		}
	}
}

func TestLookupMalformedState(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "bad", "state.json")
	_ = os.MkdirAll(filepath.Dir(p), 0o755)
	_ = os.WriteFile(p, []byte("{not json"), 0o644)
	_, err := StateReader{RuncRoot: dir}.Lookup(Ref{Runtime: Runc, ID: "bad"})
	if err == nil || errors.Is(err, ErrNotFound) {
		t.Fatalf("err = %v, want a parse error", err)
	}
}

func FuzzFromCgroupPath(f *testing.F) {
	for _, s := range []string{"/", "/docker/" + hex64, "/kubepods/besteffort/pod1/abc", "/a/b/libpod-x.scope", "kubepods-pod.slice/-pod", "/contain-test/box-1", "/system.slice/x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, p string) {
		ref, ok := FromCgroupPath(p)
		if ok && ref.ID == "" {
			t.Fatalf("ok with empty id for %q", p)
		}
		if ref.Namespace != "" && (ref.Runtime != Runc || !maybeContainerdNamespace(ref.Namespace) || !isContainerdIdentifier(ref.ID)) {
			t.Fatalf("namespace hint %+v for %q", ref, p)
		}
	})
}
