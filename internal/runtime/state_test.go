package runtime

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The samples below are trimmed copies of what the runtimes write, with
// their key names, nesting and value types kept.

const dockerConfigV2 = `{"StreamConfig":{},"State":{"Running":true,"Paused":false,"Restarting":false,"OOMKilled":false,"RemovalInProgress":false,"Dead":false,"Pid":31337,"ExitCode":0,"Error":"","StartedAt":"2024-05-02T10:11:12.123456789Z","FinishedAt":"0001-01-01T00:00:00Z","Health":null},"ID":"` + hex64 + `","Created":"2024-05-02T10:11:11.9Z","Managed":false,"Path":"/docker-entrypoint.sh","Args":["nginx","-g","daemon off;"],"Config":{"Hostname":"0123456789ab","Domainname":"","User":"","AttachStdin":false,"Tty":false,"Env":["PATH=/usr/local/sbin:/usr/local/bin"],"Cmd":["nginx","-g","daemon off;"],"Image":"nginx:1.25","Volumes":null,"WorkingDir":"","Entrypoint":["/docker-entrypoint.sh"],"OnBuild":null,"Labels":{"com.docker.compose.project":"shop","com.docker.compose.service":"web","maintainer":"NGINX Docker Maintainers"},"StopSignal":"SIGQUIT"},"Image":"sha256:a8758716bb6aa4d90071160d27028fe4eaee7ce8166221a97d30440c8eac2be6","ImageManifest":{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:3f3a2b1f0c7e0e9c2b8f1e1d6a5b4c3d2e1f0a9b8c7d6e5f4a3b2c1d0e9f8a7b","size":1778},"NetworkSettings":{"Bridge":"","SandboxID":"abc","Networks":{}},"LogPath":"/var/lib/docker/containers/` + hex64 + `/` + hex64 + `-json.log","Name":"/shop-web-1","Driver":"overlay2","OS":"linux","RestartCount":0,"HasBeenStartedBefore":false,"HasBeenManuallyStopped":false,"MountPoints":{},"AppArmorProfile":"docker-default","HostnamePath":"","HostsPath":"","ShmPath":"","ResolvConfPath":"","SeccompProfile":"","NoNewPrivileges":false}`

// containerd 1.7 CRI bundle config.json (OCI spec) of a pod container.
const containerdCRIConfig = `{"ociVersion":"1.1.0","process":{"user":{"uid":0,"gid":0},"args":["/app"],"cwd":"/"},"root":{"path":"rootfs"},"hostname":"","mounts":[],"annotations":{"io.kubernetes.cri.container-name":"api","io.kubernetes.cri.container-type":"container","io.kubernetes.cri.image-name":"registry.example/shop/api:2.1","io.kubernetes.cri.sandbox-id":"` + hex64 + `","io.kubernetes.cri.sandbox-name":"api-7d9f8b6c5-x2x9z","io.kubernetes.cri.sandbox-namespace":"shop","io.kubernetes.cri.sandbox-uid":"1a2b3c4d-0000-1111-2222-333344445555"},"linux":{"cgroupsPath":"kubepods-besteffort-pod1a2b3c4d_0000_1111_2222_333344445555.slice:cri-containerd:` + hex64 + `","namespaces":[{"type":"pid"}]}}`

// cri-o bundle: userdata/config.json under the run root.
const crioConfig = `{"ociVersion":"1.0.2-dev","process":{"args":["/app"]},"root":{"path":"/var/lib/containers/storage/overlay/abc/merged"},"annotations":{"io.container.manager":"cri-o","io.kubernetes.container.hash":"1a2b3c4d","io.kubernetes.container.restartCount":"0","io.kubernetes.cri-o.Annotations":"{\"io.kubernetes.container.hash\":\"1a2b3c4d\"}","io.kubernetes.cri-o.ContainerID":"` + hex64 + `","io.kubernetes.cri-o.ContainerName":"k8s_worker_queue-0_jobs_77aa_0","io.kubernetes.cri-o.ContainerType":"container","io.kubernetes.cri-o.Created":"2024-05-02T10:11:12.123Z","io.kubernetes.cri-o.Image":"sha256:0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0","io.kubernetes.cri-o.ImageName":"quay.io/acme/worker:5","io.kubernetes.cri-o.ImageRef":"quay.io/acme/worker@sha256:9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b","io.kubernetes.cri-o.KubeName":"queue-0","io.kubernetes.cri-o.Labels":"{\"io.kubernetes.container.name\":\"worker\",\"io.kubernetes.pod.name\":\"queue-0\",\"io.kubernetes.pod.namespace\":\"jobs\",\"io.kubernetes.pod.uid\":\"77aa\"}","io.kubernetes.cri-o.Metadata":"{\"name\":\"worker\"}","io.kubernetes.cri-o.SandboxID":"` + hex64 + `","io.kubernetes.cri-o.SandboxName":"k8s_queue-0_jobs_77aa_0","io.kubernetes.pod.name":"queue-0","io.kubernetes.pod.namespace":"jobs"}}`

// podman bundle and containers.json (containers/storage).
const podmanConfig = `{"ociVersion":"1.0.2-dev","process":{"args":["sh"]},"root":{"path":"/var/lib/containers/storage/overlay/def/merged"},"annotations":{"io.container.manager":"libpod","io.podman.annotations.autoremove":"FALSE","io.podman.annotations.init":"FALSE","io.podman.annotations.privileged":"FALSE","io.podman.annotations.publish-all":"FALSE","org.opencontainers.image.stopSignal":"15"}}`

const podmanContainersJSON = `[{"id":"` + hex64 + `","names":["happy_turing"],"image":"ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12","layer":"cd34","metadata":"{\"image-name\":\"docker.io/library/alpine:3.19\",\"image-id\":\"ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12\",\"name\":\"happy_turing\",\"created-at\":1714644672,\"mountlabel\":\"\"}","created":"2024-05-02T10:11:12.5Z","flags":{"MountLabel":"","ProcessLabel":""}},{"id":"other","names":["x"],"image":"","layer":"","metadata":"{}"}]`

func writeFile(t *testing.T, p, s string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
}

// emptyReader reads only the locations the test lays out.
func emptyReader(dir string) StateReader {
	return StateReader{
		RuncRoot:           filepath.Join(dir, "run/runc"),
		ContainerdTaskRoot: filepath.Join(dir, "run/containerd/io.containerd.runtime.v2.task"),
		StorageRoots:       []string{filepath.Join(dir, "var/lib/containers/storage"), filepath.Join(dir, "run/containers/storage")},
		DockerRoot:         filepath.Join(dir, "var/lib/docker"),
	}
}

func TestLookupDocker(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "var/lib/docker/containers", hex64, "config.v2.json"), dockerConfigV2)
	info, err := emptyReader(dir).Lookup(Ref{Runtime: Docker, ID: hex64})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"com.docker.compose.project": "shop",
		"com.docker.compose.service": "web",
		LabelContainerName:           "shop-web-1",
		LabelImageRef:                "nginx:1.25",
		LabelImageID:                 "sha256:a8758716bb6aa4d90071160d27028fe4eaee7ce8166221a97d30440c8eac2be6",
		LabelImageDigest:             "sha256:3f3a2b1f0c7e0e9c2b8f1e1d6a5b4c3d2e1f0a9b8c7d6e5f4a3b2c1d0e9f8a7b",
	}
	for k, v := range want {
		if info.Labels[k] != v {
			t.Errorf("label %s = %q, want %q", k, info.Labels[k], v)
		}
	}
	if info.Name != "shop-web-1" || info.Runtime != Docker || info.InitPID != 31337 {
		t.Errorf("info = %+v", info)
	}
}

// A docker container found in docker's runc root keeps its OCI labels and
// gains the daemon's (compose labels, image), the OCI ones winning.
func TestLookupDockerWithRuncState(t *testing.T) {
	dir := t.TempDir()
	r := emptyReader(dir)
	r.ExtraRuncRoots = []string{filepath.Join(dir, "run/docker/runtime-runc/moby")}
	writeJSON(t, filepath.Join(dir, "run/docker/runtime-runc/moby", hex64, "state.json"), map[string]any{
		"init_process_pid": 99,
		"config":           map[string]any{"labels": []string{"com.docker.compose.service=from-oci"}},
	})
	writeFile(t, filepath.Join(dir, "var/lib/docker/containers", hex64, "config.v2.json"), dockerConfigV2)
	info, err := r.Lookup(Ref{Runtime: Docker, ID: hex64})
	if err != nil {
		t.Fatal(err)
	}
	if info.InitPID != 99 || info.Labels["com.docker.compose.service"] != "from-oci" || info.Labels[LabelImageRef] != "nginx:1.25" || info.Runtime != Docker {
		t.Errorf("info = %+v", info)
	}
}

func TestLookupContainerdCRI(t *testing.T) {
	dir := t.TempDir()
	bundle := filepath.Join(dir, "run/containerd/io.containerd.runtime.v2.task/k8s.io", hex64)
	writeFile(t, filepath.Join(dir, "run/containerd/io.containerd.runtime.v2.task/moby/.keep"), "")
	writeFile(t, filepath.Join(bundle, "config.json"), containerdCRIConfig)
	writeFile(t, filepath.Join(bundle, "init.pid"), "4321")
	// The cgroupfs driver's path does not tell the runtime (CRI).
	info, err := emptyReader(dir).Lookup(Ref{Runtime: CRI, ID: hex64, PodUID: "1a2b3c4d-0000-1111-2222-333344445555"})
	if err != nil {
		t.Fatal(err)
	}
	if info.Runtime != Containerd || info.Name != "api" || info.Pod != "api-7d9f8b6c5-x2x9z" || info.Namespace != "shop" ||
		info.InitPID != 4321 || info.Bundle != bundle || info.Labels["io.kubernetes.cri.image-name"] != "registry.example/shop/api:2.1" {
		t.Errorf("info = %+v", info)
	}
}

func TestLookupCRIO(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "run/containers/storage/overlay-containers", hex64, "userdata/config.json"), crioConfig)
	writeFile(t, filepath.Join(dir, "var/lib/containers/storage/overlay-containers/containers.json"),
		`[{"id":"`+hex64+`","names":["k8s_worker_queue-0_jobs_77aa_0"],"image":"0f1e","metadata":"{\"pod-name\":\"queue-0\",\"pod-id\":\"`+hex64+`\",\"image-name\":\"quay.io/acme/worker:5\",\"image-id\":\"0f1e\",\"name\":\"k8s_worker_queue-0_jobs_77aa_0\",\"metadata-name\":\"worker\",\"uid\":\"77aa\",\"namespace\":\"jobs\",\"attempt\":0}"}]`)
	info, err := emptyReader(dir).Lookup(Ref{Runtime: CRIO, ID: hex64, PodUID: "77aa"})
	if err != nil {
		t.Fatal(err)
	}
	if info.Runtime != CRIO || info.Name != "worker" || info.Pod != "queue-0" || info.Namespace != "jobs" ||
		info.Labels["io.kubernetes.cri-o.ImageName"] != "quay.io/acme/worker:5" || info.Labels[LabelImageID] != "0f1e" ||
		!strings.HasSuffix(info.Bundle, filepath.Join(hex64, "userdata")) {
		t.Errorf("info = %+v", info)
	}
	// The pod and namespace come from the Labels annotation alone too.
	dir2 := t.TempDir()
	writeFile(t, filepath.Join(dir2, "run/containers/storage/overlay-containers", hex64, "userdata/config.json"),
		`{"annotations":{"io.kubernetes.cri-o.Labels":"{\"io.kubernetes.pod.name\":\"p\",\"io.kubernetes.pod.namespace\":\"n\",\"io.kubernetes.container.name\":\"c\"}"}}`)
	info, err = emptyReader(dir2).Lookup(Ref{Runtime: CRI, ID: hex64})
	if err != nil || info.Runtime != CRIO || info.Pod != "p" || info.Namespace != "n" || info.Name != "c" {
		t.Errorf("labels only: info = %+v, %v", info, err)
	}
}

func TestLookupPodman(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "var/lib/containers/storage/overlay-containers", hex64, "userdata/config.json"), podmanConfig)
	writeFile(t, filepath.Join(dir, "var/lib/containers/storage/overlay-containers/containers.json"), podmanContainersJSON)
	info, err := emptyReader(dir).Lookup(Ref{Runtime: Podman, ID: hex64})
	if err != nil {
		t.Fatal(err)
	}
	if info.Runtime != Podman || info.Name != "happy_turing" || info.Labels[LabelImageRef] != "docker.io/library/alpine:3.19" ||
		info.Labels["io.container.manager"] != "libpod" || info.Pod != "" {
		t.Errorf("info = %+v", info)
	}
	// A rootless podman started through runc's fallback path (no libpod
	// scope) is still recognised by its annotations.
	info, err = emptyReader(dir).Lookup(Ref{Runtime: Runc, ID: hex64})
	if err != nil || info.Runtime != Podman {
		t.Errorf("via runc ref: info = %+v, %v", info, err)
	}
}

func TestLookupStateErrors(t *testing.T) {
	dir := t.TempDir()
	r := emptyReader(dir)
	if _, err := r.Lookup(Ref{Runtime: Docker, ID: hex64}); err == nil || !strings.Contains(err.Error(), "not found") {
		t.Errorf("nothing on disk: %v", err)
	}
	writeFile(t, filepath.Join(dir, "var/lib/docker/containers", hex64, "config.v2.json"), `{"Name":`)
	if _, err := r.Lookup(Ref{Runtime: Docker, ID: hex64}); err == nil || strings.Contains(err.Error(), "not found") {
		t.Errorf("corrupt config.v2.json: %v, want a parse error", err)
	}
}

func FuzzParseDockerConfig(f *testing.F) {
	f.Add([]byte(dockerConfigV2))
	f.Add([]byte(`{"ImageManifest":null,"State":{"Pid":-1}}`))
	f.Add([]byte(`{"Config":{"Labels":{"a":1}}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := ParseDockerConfig(b)
		if err == nil && c.ImageManifest != nil {
			_ = c.ImageManifest.Digest
		}
	})
}

func FuzzParseStorageContainers(f *testing.F) {
	f.Add([]byte(podmanContainersJSON), hex64)
	f.Add([]byte(`[{"id":"a","metadata":"{\"pod-name\":1}"}]`), "a")
	f.Add([]byte(`{}`), "")
	f.Fuzz(func(t *testing.T, b []byte, id string) {
		c, _, ok, err := ParseStorageContainers(b, id)
		if ok && c.ID != id {
			t.Fatalf("entry %q for id %q", c.ID, id)
		}
		if !ok && err == nil && c.ID != "" {
			t.Fatal("entry without ok")
		}
	})
}

func FuzzParseCRIOLabels(f *testing.F) {
	f.Add(`{"io.kubernetes.pod.name":"p","io.kubernetes.pod.namespace":"n"}`)
	f.Add(`{"a":null}`)
	f.Add(`[]`)
	f.Fuzz(func(t *testing.T, s string) {
		m, err := ParseCRIOLabels(s)
		if err != nil && m != nil {
			t.Fatal("labels with an error")
		}
	})
}

// FuzzLookupBundle lays out hostile files in every location Lookup reads
// and checks it neither crashes nor invents a container.
func FuzzLookupBundle(f *testing.F) {
	f.Add(crioConfig, podmanContainersJSON, dockerConfigV2)
	f.Add(`{"annotations":{"io.kubernetes.cri-o.Labels":"{"}}`, `[{"id":"x"}]`, `null`)
	f.Fuzz(func(t *testing.T, bundle, list, docker string) {
		dir := t.TempDir()
		writeFile(t, filepath.Join(dir, "run/containers/storage/overlay-containers/x/userdata/config.json"), bundle)
		writeFile(t, filepath.Join(dir, "run/containers/storage/overlay-containers/containers.json"), list)
		writeFile(t, filepath.Join(dir, "run/containerd/io.containerd.runtime.v2.task/default/x/config.json"), bundle)
		writeFile(t, filepath.Join(dir, "var/lib/docker/containers/x/config.v2.json"), docker)
		info, err := emptyReader(dir).Lookup(Ref{Runtime: Runc, ID: "x"})
		if err == nil && info.Labels == nil {
			t.Fatalf("found without labels: %+v", info)
		}
	})
}
