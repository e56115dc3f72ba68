// Package runtime identifies containers from their cgroup paths, by the
// conventions of the container runtimes, and reads their metadata from
// what the runtimes keep on disk, no daemon needed: the OCI runtimes' state
// directories (runc, crun), docker's containers/<id>/config.v2.json,
// containerd's v2 task bundles, containers/storage (cri-o, podman) and
// libpod's bolt database (podman's labels and pods).
// EngineReader asks the engines' APIs (Docker Engine, containerd) the same
// questions, and Merge combines both answers (the engine's wins per key).
// Info.Identity (image ref, digest, id, the runtime's container name) is
// set only from the runtimes' and engines' own state, never from
// annotations or image labels; an identity key (io.contain.image.*,
// io.contain.container.name, io.contain.podman.pod) found there is dropped
// and counted in Info.DroppedLabels.
package runtime

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
)

// Runtime names.
const (
	Docker     = "docker"
	Containerd = "containerd"
	CRIO       = "cri-o"
	Podman     = "podman"
	Runc       = "runc"
	Crun       = "crun"
	// CRI is a Kubernetes pod container whose runtime the cgroup path does
	// not tell (cgroupfs driver: /kubepods/<qos>/pod<uid>/<id>).
	CRI = "cri"
)

// Ref is a container as its cgroup path identifies it.
type Ref struct {
	Runtime string
	ID      string
	// PodUID is the Kubernetes pod uid when the path holds one.
	PodUID string
	// Namespace is the containerd namespace a two-level path
	// /<namespace>/<id> may name (containerd's cgroupfs layout, e.g. `ctr
	// run` in namespace contain-test puts the task at /contain-test/<id>).
	// It is a hint: Runtime stays Runc until containerd or its task
	// bundle confirms the container (EngineReader, StateReader).
	Namespace string
}

// FromCgroupPath identifies the container that owns cgroup path p (a path
// relative to the cgroup2 mount, e.g. "/docker/<id>"). ok is false for the
// root cgroup and for systemd units of the host (slices, services, session
// scopes), which are not containers.
func FromCgroupPath(p string) (ref Ref, ok bool) {
	p = path.Clean("/" + p)
	if p == "/" {
		return Ref{}, false
	}
	parts := strings.Split(strings.TrimPrefix(p, "/"), "/")
	last := parts[len(parts)-1]
	parent := ""
	if len(parts) > 1 {
		parent = parts[len(parts)-2]
	}
	pod := podUID(parts)

	if scope, isScope := strings.CutSuffix(last, ".scope"); isScope {
		for _, c := range []struct{ prefix, runtime string }{
			{"docker-", Docker},
			{"cri-containerd-", Containerd},
			{"crio-", CRIO},
			{"libpod-", Podman},
			{"crun-", Crun},
			{"runc-", Runc},
		} {
			id, found := strings.CutPrefix(scope, c.prefix)
			if !found {
				continue
			}
			if strings.HasPrefix(id, "conmon-") || id == "" {
				return Ref{}, false // the runtime's monitor, not a container
			}
			return Ref{Runtime: c.runtime, ID: id, PodUID: pod}, true
		}
		return Ref{}, false // session-N.scope, init.scope, ...
	}
	if isSystemdUnit(last) {
		return Ref{}, false
	}
	switch {
	case parent == "docker" && isHex64(last):
		return Ref{Runtime: Docker, ID: last}, true
	case last == "libpod-":
		return Ref{}, false
	case strings.HasPrefix(last, "libpod-") && !strings.HasPrefix(last, "libpod-conmon-"):
		return Ref{Runtime: Podman, ID: strings.TrimPrefix(last, "libpod-")}, true
	case pod != "" && !strings.HasPrefix(last, "pod"):
		return Ref{Runtime: CRI, ID: last, PodUID: pod}, true
	case strings.HasPrefix(last, "pod") && pod != "":
		return Ref{}, false // the pod's own cgroup
	}
	ref = Ref{Runtime: Runc, ID: last}
	if len(parts) == 2 && maybeContainerdNamespace(parent) && isContainerdIdentifier(last) {
		ref.Namespace = parent
	}
	return ref, true
}

// maybeContainerdNamespace reports whether a top-level cgroup directory
// may be a containerd namespace: a containerd identifier that is not a
// systemd unit, a Kubernetes or docker parent, or an LXC directory.
func maybeContainerdNamespace(name string) bool {
	if !isContainerdIdentifier(name) || isSystemdUnit(name) || strings.HasSuffix(name, ".scope") {
		return false
	}
	switch name {
	case "docker", "libpod_parent", "machine", "system", "user", "init", "lxc", "lxc.payload", "lxc.monitor":
		return false
	}
	return !strings.HasPrefix(name, "kubepods") && !strings.HasPrefix(name, "lxc.")
}

// isContainerdIdentifier reports whether s is valid as a containerd
// namespace or container id: at most 76 alphanumeric components joined by
// single '.', '_' or '-' (containerd's identifiers.Validate).
func isContainerdIdentifier(s string) bool {
	if s == "" || len(s) > 76 {
		return false
	}
	prevSep := true
	for _, c := range []byte(s) {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
			prevSep = false
		case c == '.' || c == '_' || c == '-':
			if prevSep {
				return false
			}
			prevSep = true
		default:
			return false
		}
	}
	return !prevSep
}

func isSystemdUnit(name string) bool {
	for _, s := range []string{".slice", ".service", ".mount", ".socket", ".swap", ".target", ".device"} {
		if strings.HasSuffix(name, s) {
			return true
		}
	}
	return false
}

// podUID finds a Kubernetes pod uid in a path: ".../pod<uid>/..." or
// ".../kubepods-<qos>-pod<uid_with_underscores>.slice/...".
func podUID(parts []string) string {
	inKube := false
	for _, p := range parts {
		if strings.HasPrefix(p, "kubepods") {
			inKube = true
		}
		if !inKube {
			continue
		}
		name := strings.TrimSuffix(p, ".slice")
		if i := strings.LastIndex(name, "-pod"); i >= 0 {
			return strings.ReplaceAll(name[i+4:], "_", "-")
		}
		if uid, ok := strings.CutPrefix(name, "pod"); ok && uid != "" {
			return uid
		}
	}
	return ""
}

func isHex64(s string) bool {
	if len(s) != 64 {
		return false
	}
	for _, c := range []byte(s) {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// Info is a container's metadata from its runtime's state.
type Info struct {
	Runtime string
	Bundle  string
	InitPID uint32
	// Labels are the OCI annotations (runc's state keeps them as its
	// config labels) merged with the bundle's config.json annotations.
	Labels map[string]string
	// Identity is what the runtime's or engine's own state says of the
	// container's image and name, never taken from labels; its values are
	// also in Labels under the io.contain.* keys.
	Identity Identity
	// DroppedLabels counts io.contain.* labels that came from annotations
	// or image labels (an image author's) and were dropped.
	DroppedLabels int
	// Name is the container's name where an annotation carries one, else
	// its id.
	Name      string
	Pod       string
	Namespace string
	// EngineNamespace is the containerd namespace that holds the
	// container (its task bundle's directory, or the namespace containerd
	// answered in).
	EngineNamespace string
}

// ErrNotFound means no state directory knows the container.
var ErrNotFound = errors.New("container state not found")

// StateReader reads OCI runtime state directories.
type StateReader struct {
	// RuncRoot is runc's --root (default /run/runc).
	RuncRoot string
	// CrunRoot is crun's state root (default /run/crun).
	CrunRoot string
	// ExtraRuncRoots are runc roots of higher-level runtimes (docker's
	// /run/docker/runtime-runc/moby, containerd's /run/containerd/runc/<ns>).
	ExtraRuncRoots []string
	// ContainerdTaskRoot holds containerd's v2 shim bundles,
	// <root>/<namespace>/<id>/config.json (default
	// /run/containerd/io.containerd.runtime.v2.task).
	ContainerdTaskRoot string
	// StorageRoots are containers/storage roots of cri-o and podman
	// (/var/lib/containers/storage, /run/containers/storage): per
	// container <root>/overlay-containers/<id>/userdata/config.json and the
	// list <root>/overlay-containers/containers.json; podman 4's
	// <root>/libpod/bolt_state.db (opened read-only, never waited for).
	StorageRoots []string
	// DockerRoot is dockerd's data root: <root>/containers/<id>/config.v2.json
	// (default /var/lib/docker).
	DockerRoot string
}

// DefaultStateReader reads the standard locations.
func DefaultStateReader() StateReader {
	return StateReader{
		RuncRoot: "/run/runc",
		CrunRoot: "/run/crun",
		ExtraRuncRoots: []string{
			"/run/docker/runtime-runc/moby",
			"/run/containerd/runc/k8s.io",
			"/run/containerd/runc/default",
			"/run/containerd/runc/moby",
		},
		ContainerdTaskRoot: "/run/containerd/io.containerd.runtime.v2.task",
		StorageRoots:       []string{"/var/lib/containers/storage", "/run/containers/storage"},
		DockerRoot:         "/var/lib/docker",
	}
}

// maxStateBytes bounds state files read (a container writes its bundle's
// annotations; the state is not trusted to be small).
const maxStateBytes = 4 << 20

// Lookup reads the metadata of ref's container: the OCI runtime's state
// (runc roots, crun), then what the higher-level runtime keeps on disk
// (docker's config.v2.json, containerd's task bundle, containers/storage of
// cri-o and podman), merged; labels found first win. When no state is
// found it returns ErrNotFound and an Info holding what the ref tells;
// when part of the state was found but another part could not be read now
// (libpod's database locked by podman), ErrIncomplete with what was read.
func (r StateReader) Lookup(ref Ref) (Info, error) {
	info := Info{Runtime: ref.Runtime, Name: ref.ID}
	if ref.ID == "" || strings.ContainsAny(ref.ID, "/\x00") || ref.ID == "." || ref.ID == ".." {
		return info, fmt.Errorf("container id %q: %w", ref.ID, ErrNotFound)
	}
	info, ociErr := r.lookupOCI(ref, info)
	if ociErr != nil && !errors.Is(ociErr, ErrNotFound) {
		return info, ociErr
	}
	found := ociErr == nil
	var errs []error
	var incomplete error
	for _, s := range []struct {
		runtime string
		read    func(id string, info *Info) (bool, error)
	}{
		{Docker, r.readDocker},
		{Containerd, r.readContainerd},
		{"", r.readStorage}, // cri-o or podman: the annotations tell
		{"", r.readLibpod},  // podman's labels: only its database has them
	} {
		ok, err := s.read(ref.ID, &info)
		if err != nil {
			if errors.Is(err, ErrIncomplete) {
				incomplete = err
			}
			errs = append(errs, err)
			continue
		}
		if !ok {
			continue
		}
		found = true
		if s.runtime != "" && (info.Runtime == Runc || info.Runtime == CRI || info.Runtime == "") {
			info.Runtime = s.runtime
		}
	}
	if info.Labels != nil {
		info.fillNames()
	}
	if found && incomplete != nil {
		return info, incomplete
	}
	if found {
		return info, nil
	}
	if len(errs) > 0 {
		return info, errors.Join(errs...)
	}
	return info, ociErr
}

// lookupOCI reads runc's state.json (in RuncRoot or ExtraRuncRoots) or
// crun's status and the bundle's annotations.
func (r StateReader) lookupOCI(ref Ref, info Info) (Info, error) {
	roots := append([]string{r.RuncRoot}, r.ExtraRuncRoots...)
	for i, root := range roots {
		if root == "" {
			continue
		}
		st, err := readRuncState(filepath.Join(root, ref.ID, "state.json"))
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return info, err
		}
		if i == 0 && (ref.Runtime == Runc || ref.Runtime == CRI || ref.Runtime == "") {
			info.Runtime = Runc
		}
		info.InitPID = st.InitPID
		info.Labels = map[string]string{}
		for _, l := range st.Config.Labels {
			k, v, _ := strings.Cut(l, "=")
			if k == "bundle" {
				info.Bundle = v
				continue
			}
			info.Labels[k] = v
		}
		if info.Bundle != "" {
			if ann, err := readBundleAnnotations(filepath.Join(info.Bundle, "config.json")); err == nil {
				for k, v := range ann {
					if _, ok := info.Labels[k]; !ok {
						info.Labels[k] = v
					}
				}
			}
		}
		info.fillNames()
		return info, nil
	}
	if r.CrunRoot != "" {
		if st, err := readCrunStatus(filepath.Join(r.CrunRoot, ref.ID, "status")); err == nil {
			info.Runtime = Crun
			info.InitPID = st.Pid
			info.Bundle = st.Bundle
			if ann, err := readBundleAnnotations(filepath.Join(st.Bundle, "config.json")); err == nil {
				info.Labels = ann
			}
			info.fillNames()
			return info, nil
		}
	}
	return info, fmt.Errorf("container %s: %w", ref.ID, ErrNotFound)
}

// Annotation keys that name a container or its pod.
var (
	nameKeys      = []string{"io.kubernetes.cri.container-name", "io.kubernetes.container.name", "nerdctl/name", "io.podman.annotations.name", "org.opencontainers.container.name", LabelContainerName}
	podKeys       = []string{"io.kubernetes.cri.sandbox-name", "io.kubernetes.pod.name", LabelPodmanPod}
	namespaceKeys = []string{"io.kubernetes.cri.sandbox-namespace", "io.kubernetes.pod.namespace"}
)

// Identity is a container's identity as its runtime or engine keeps it.
type Identity struct {
	ImageRef, ImageDigest, ImageID string
	Name                           string // the runtime's name for the container
	PodmanPod                      string
}

// field is the field of label key k (identityKeys), or nil.
func (id *Identity) field(k string) *string {
	switch k {
	case LabelImageRef:
		return &id.ImageRef
	case LabelImageDigest:
		return &id.ImageDigest
	case LabelImageID:
		return &id.ImageID
	case LabelContainerName:
		return &id.Name
	case LabelPodmanPod:
		return &id.PodmanPod
	}
	return nil
}

// sanitize drops identity labels (identityKeys) no trusted source set (an
// image author's annotations or labels: they could claim another image's
// identity) and writes the trusted ones over any such label. Other
// io.contain.* keys (operator settings other stages read, such as
// io.contain.critical) are left alone.
func (i *Info) sanitize() {
	for _, k := range identityKeys {
		v, ok := i.Labels[k]
		if !ok {
			continue
		}
		if f := i.Identity.field(k); *f != "" {
			if v != *f {
				i.DroppedLabels++
				i.Labels[k] = *f
			}
			continue
		}
		i.DroppedLabels++
		delete(i.Labels, k)
	}
}

func (i *Info) fillNames() {
	i.sanitize()
	pick := func(keys []string) string {
		for _, k := range keys {
			if v := i.Labels[k]; v != "" {
				return v
			}
		}
		return ""
	}
	if n := pick(nameKeys); n != "" {
		i.Name = n
	}
	i.Pod = pick(podKeys)
	i.Namespace = pick(namespaceKeys)
}

type runcState struct {
	InitPID uint32 `json:"init_process_pid"`
	Config  struct {
		Labels []string `json:"labels"`
	} `json:"config"`
}

func readRuncState(p string) (runcState, error) {
	var st runcState
	b, err := readBounded(p)
	if err != nil {
		return st, err
	}
	if err := json.Unmarshal(b, &st); err != nil {
		return st, fmt.Errorf("parsing %s: %w", p, err)
	}
	return st, nil
}

type crunStatus struct {
	Pid    uint32 `json:"pid"`
	Bundle string `json:"bundle"`
}

func readCrunStatus(p string) (crunStatus, error) {
	var st crunStatus
	b, err := readBounded(p)
	if err != nil {
		return st, err
	}
	if err := json.Unmarshal(b, &st); err != nil {
		return st, fmt.Errorf("parsing %s: %w", p, err)
	}
	return st, nil
}

func readBundleAnnotations(p string) (map[string]string, error) {
	b, err := readBounded(p)
	if err != nil {
		return nil, err
	}
	var cfg struct {
		Annotations map[string]string `json:"annotations"`
	}
	if err := json.Unmarshal(b, &cfg); err != nil {
		return nil, fmt.Errorf("parsing %s: %w", p, err)
	}
	return cfg.Annotations, nil
}

func readBounded(p string) ([]byte, error) { return ReadFileBounded(p, maxStateBytes) }

// ReadFileBounded reads file p, refusing one larger than max bytes (a
// runtime's state files are written by, or from, the container and are
// not trusted to be small). A missing file's error wraps fs.ErrNotExist.
func ReadFileBounded(p string, max int) ([]byte, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, int64(max)+1))
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", p, err)
	}
	if len(b) > max {
		return nil, fmt.Errorf("%s: larger than %d bytes", p, max)
	}
	return b, nil
}
