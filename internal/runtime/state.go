package runtime

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Labels the readers add to Info.Labels from a runtime's own state (never
// overwriting an annotation or label of the same key).
const (
	// LabelImageRef is the image reference the runtime started the
	// container from (docker Config.Image, containers/storage image-name).
	LabelImageRef = "io.contain.image.ref"
	// LabelImageDigest is the image's manifest digest (docker's
	// ImageManifest.digest).
	LabelImageDigest = "io.contain.image.digest"
	// LabelImageID is the runtime's image id: the digest of the image's
	// config, not of its manifest (docker Image, containers/storage image).
	LabelImageID = "io.contain.image.id"
	// LabelContainerName is the name the runtime gave the container
	// (docker Name without its "/", containers/storage names[0]).
	LabelContainerName = "io.contain.container.name"
)

// identityKeys are the io.contain.* labels only a runtime's or engine's
// own state may set (setIdentity); the same keys from annotations or image
// labels (which an image author controls) are dropped (Info.sanitize).
var identityKeys = []string{LabelImageRef, LabelImageDigest, LabelImageID, LabelContainerName, LabelPodmanPod}

// setIdentity records v, read from the runtime's or engine's own state,
// as the identity field k (an identityKeys label name) unless a trusted
// source set it already, and writes the label k.
func setIdentity(info *Info, k, v string) {
	if v == "" {
		return
	}
	f := info.Identity.field(k)
	if f == nil || *f != "" {
		return
	}
	*f = v
	if info.Labels == nil {
		info.Labels = map[string]string{}
	}
	info.Labels[k] = v
}

// setIfAbsent sets labels[k] = v unless v is empty or k is already set.
func setIfAbsent(info *Info, k, v string) {
	if v == "" {
		return
	}
	if info.Labels == nil {
		info.Labels = map[string]string{}
	}
	if _, ok := info.Labels[k]; !ok {
		info.Labels[k] = v
	}
}

// DockerConfig is the part of dockerd's containers/<id>/config.v2.json
// that identifies a container.
type DockerConfig struct {
	ID    string `json:"ID"`
	Name  string `json:"Name"`
	Image string `json:"Image"`
	// ImageManifest is set by dockerd with the containerd image store
	// (Docker 25+).
	ImageManifest *struct {
		Digest string `json:"digest"`
	} `json:"ImageManifest"`
	State struct {
		Pid int64 `json:"Pid"`
	} `json:"State"`
	Config struct {
		Image  string            `json:"Image"`
		Labels map[string]string `json:"Labels"`
	} `json:"Config"`
}

// ParseDockerConfig parses a config.v2.json.
func ParseDockerConfig(b []byte) (DockerConfig, error) {
	var c DockerConfig
	if err := json.Unmarshal(b, &c); err != nil {
		return c, fmt.Errorf("docker config.v2.json: %w", err)
	}
	return c, nil
}

func (r StateReader) readDocker(id string, info *Info) (bool, error) {
	if r.DockerRoot == "" {
		return false, nil
	}
	p := filepath.Join(r.DockerRoot, "containers", id, "config.v2.json")
	b, err := readBounded(p)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	c, err := ParseDockerConfig(b)
	if err != nil {
		return false, fmt.Errorf("%s: %w", p, err)
	}
	if info.Labels == nil {
		info.Labels = map[string]string{}
	}
	for k, v := range c.Config.Labels {
		setIfAbsent(info, k, v)
	}
	setIdentity(info, LabelContainerName, strings.TrimPrefix(c.Name, "/"))
	setIdentity(info, LabelImageRef, c.Config.Image)
	setIdentity(info, LabelImageID, c.Image)
	if c.ImageManifest != nil {
		setIdentity(info, LabelImageDigest, c.ImageManifest.Digest)
	}
	if info.InitPID == 0 && c.State.Pid > 0 && c.State.Pid <= 1<<32-1 {
		info.InitPID = uint32(c.State.Pid)
	}
	return true, nil
}

// readContainerd reads containerd's v2 task bundle
// <ContainerdTaskRoot>/<namespace>/<id>/config.json (its annotations: the
// CRI plugin's io.kubernetes.cri.*, nerdctl's nerdctl/*) and init.pid.
func (r StateReader) readContainerd(id string, info *Info) (bool, error) {
	if r.ContainerdTaskRoot == "" {
		return false, nil
	}
	nss, err := os.ReadDir(r.ContainerdTaskRoot)
	if err != nil {
		return false, nil // no containerd on this host
	}
	for _, ns := range nss {
		if !ns.IsDir() {
			continue
		}
		bundle := filepath.Join(r.ContainerdTaskRoot, ns.Name(), id)
		ann, err := readBundleAnnotations(filepath.Join(bundle, "config.json"))
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return false, err
		}
		for k, v := range ann {
			setIfAbsent(info, k, v)
		}
		if info.Labels == nil {
			info.Labels = map[string]string{}
		}
		if info.Bundle == "" {
			info.Bundle = bundle
		}
		if info.EngineNamespace == "" {
			info.EngineNamespace = ns.Name()
		}
		if info.InitPID == 0 {
			if b, err := readBounded(filepath.Join(bundle, "init.pid")); err == nil {
				if pid, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 32); err == nil {
					info.InitPID = uint32(pid)
				}
			}
		}
		return true, nil
	}
	return false, nil
}

// StorageContainer is one entry of containers/storage's containers.json.
type StorageContainer struct {
	ID    string   `json:"id"`
	Names []string `json:"names"`
	Image string   `json:"image"`
	// Metadata is a JSON document kept as a string: podman's and cri-o's
	// RuntimeContainerMetadata.
	Metadata string `json:"metadata"`
}

// StorageMetadata is the part of a StorageContainer's metadata that
// names it (podman: image-name, image-id, name; cri-o adds pod-name,
// namespace and metadata-name, the Kubernetes container name).
type StorageMetadata struct {
	ImageName    string `json:"image-name"`
	ImageID      string `json:"image-id"`
	Name         string `json:"name"`
	MetadataName string `json:"metadata-name"`
	PodName      string `json:"pod-name"`
	Namespace    string `json:"namespace"`
}

// ParseStorageContainers parses containers.json and returns the entry of
// id (ok false when absent).
func ParseStorageContainers(b []byte, id string) (c StorageContainer, md StorageMetadata, ok bool, err error) {
	var list []StorageContainer
	if err := json.Unmarshal(b, &list); err != nil {
		return c, md, false, fmt.Errorf("containers.json: %w", err)
	}
	for _, e := range list {
		if e.ID != id {
			continue
		}
		if e.Metadata != "" {
			if err := json.Unmarshal([]byte(e.Metadata), &md); err != nil {
				return e, md, true, fmt.Errorf("containers.json: metadata of %s: %w", id, err)
			}
		}
		return e, md, true, nil
	}
	return c, md, false, nil
}

// Annotation keys of cri-o and podman bundles.
const (
	crioLabels    = "io.kubernetes.cri-o.Labels"
	crioPrefix    = "io.kubernetes.cri-o."
	podmanManager = "io.container.manager"
)

// ParseCRIOLabels parses the io.kubernetes.cri-o.Labels annotation: the
// CRI labels of the container as a JSON object (kubelet's
// io.kubernetes.pod.name, io.kubernetes.pod.namespace,
// io.kubernetes.container.name, io.kubernetes.pod.uid).
func ParseCRIOLabels(s string) (map[string]string, error) {
	var m map[string]string
	if err := json.Unmarshal([]byte(s), &m); err != nil {
		return nil, fmt.Errorf("%s: %w", crioLabels, err)
	}
	return m, nil
}

// storageDrivers are the containers/storage graph drivers whose
// <driver>-containers directory is read.
var storageDrivers = []string{"overlay", "vfs", "btrfs", "zfs"}

// readStorage reads containers/storage (cri-o, podman):
// <root>/<driver>-containers/<id>/userdata/config.json, the bundle (its
// annotations; cri-o's io.kubernetes.cri-o.Labels expanded), and
// <root>/<driver>-containers/containers.json (names, image, metadata).
// The runtime is podman when io.container.manager is libpod, cri-o when
// io.kubernetes.cri-o.* annotations are present.
func (r StateReader) readStorage(id string, info *Info) (bool, error) {
	found := false
	for _, root := range r.StorageRoots {
		if root == "" {
			continue
		}
		for _, drv := range storageDrivers {
			dir := filepath.Join(root, drv+"-containers")
			cfg := filepath.Join(dir, id, "userdata", "config.json")
			ann, err := readBundleAnnotations(cfg)
			switch {
			case errors.Is(err, fs.ErrNotExist):
			case err != nil:
				return found, err
			default:
				found = true
				for k, v := range ann {
					setIfAbsent(info, k, v)
				}
				if s := ann[crioLabels]; s != "" {
					if m, err := ParseCRIOLabels(s); err == nil {
						for k, v := range m {
							setIfAbsent(info, k, v)
						}
					}
				}
				if info.Bundle == "" {
					info.Bundle = filepath.Dir(cfg)
				}
				if info.Runtime == Runc || info.Runtime == CRI || info.Runtime == "" {
					switch {
					case ann[podmanManager] == "libpod":
						info.Runtime = Podman
					case hasPrefixKey(ann, crioPrefix):
						info.Runtime = CRIO
					}
				}
			}
			b, err := readBounded(filepath.Join(dir, "containers.json"))
			if errors.Is(err, fs.ErrNotExist) {
				continue
			}
			if err != nil {
				return found, err
			}
			c, md, ok, err := ParseStorageContainers(b, id)
			if !ok {
				if err != nil {
					return found, err
				}
				continue
			}
			found = true
			if len(c.Names) > 0 {
				setIdentity(info, LabelContainerName, c.Names[0])
			}
			setIdentity(info, LabelImageRef, md.ImageName)
			setIdentity(info, LabelImageID, firstNonEmpty(md.ImageID, c.Image))
			setIfAbsent(info, "io.kubernetes.pod.name", md.PodName)
			setIfAbsent(info, "io.kubernetes.pod.namespace", md.Namespace)
			setIfAbsent(info, "io.kubernetes.container.name", md.MetadataName)
		}
	}
	if found && info.Labels == nil {
		info.Labels = map[string]string{}
	}
	return found, nil
}

func hasPrefixKey(m map[string]string, prefix string) bool {
	for k := range m {
		if strings.HasPrefix(k, prefix) {
			return true
		}
	}
	return false
}

func firstNonEmpty(s ...string) string {
	for _, v := range s {
		if v != "" {
			return v
		}
	}
	return ""
}
