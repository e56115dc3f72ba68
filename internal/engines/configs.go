package engines

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"

	containers "github.com/containerd/containerd/api/services/containers/v1"
	tasks "github.com/containerd/containerd/api/services/tasks/v1"
	"github.com/containerd/containerd/api/types/task"
	"github.com/moby/moby/client"
)

// Mount is one mount of a container.
type Mount struct {
	Type        string // bind, volume, tmpfs, proc, ...
	Source      string
	Destination string
	RW          bool
}

// ContainerConfig is what an engine says about a container's filesystem
// and user: what a read-only or non-root policy audits.
type ContainerConfig struct {
	Engine    string
	Namespace string // containerd
	ID        string
	Name      string
	ImageRef  string
	ImageID   string
	// ReadOnlyRootfs: the root filesystem is mounted read-only.
	ReadOnlyRootfs bool
	// User as configured ("", "0", "root", "1000:1000", "app"); UID is
	// set when the engine resolved it (containerd's spec), else -1.
	User string
	UID  int
	// Mounts besides the root filesystem; Volumes are the destinations the
	// image (or the run) declares as volumes.
	Mounts  []Mount
	Volumes []string
}

// RunningConfigs reads the configuration of every running container.
func (d *Docker) RunningConfigs(ctx context.Context) ([]ContainerConfig, error) {
	lctx, cancel := context.WithTimeout(ctx, d.timeout)
	r, err := d.c.ContainerList(lctx, client.ContainerListOptions{})
	cancel()
	if err != nil {
		return nil, d.err("list", "", err)
	}
	var out []ContainerConfig
	for _, s := range r.Items {
		ictx, cancel := context.WithTimeout(ctx, d.timeout)
		ir, err := d.c.ContainerInspect(ictx, s.ID, client.ContainerInspectOptions{})
		cancel()
		if err != nil {
			continue // gone since the list
		}
		ic := ir.Container
		cc := ContainerConfig{Engine: "docker", ID: ic.ID, Name: strings.TrimPrefix(ic.Name, "/"), ImageID: ic.Image, UID: -1}
		if ic.Config != nil {
			cc.ImageRef, cc.User = ic.Config.Image, ic.Config.User
			for v := range ic.Config.Volumes {
				cc.Volumes = append(cc.Volumes, v)
			}
		}
		if ic.HostConfig != nil {
			cc.ReadOnlyRootfs = ic.HostConfig.ReadonlyRootfs
			for dst := range ic.HostConfig.Tmpfs {
				cc.Mounts = append(cc.Mounts, Mount{Type: "tmpfs", Destination: dst, RW: !strings.Contains(ic.HostConfig.Tmpfs[dst], "ro")})
			}
		}
		for _, m := range ic.Mounts {
			cc.Mounts = append(cc.Mounts, Mount{Type: string(m.Type), Source: m.Source, Destination: m.Destination, RW: m.RW})
		}
		slices.Sort(cc.Volumes)
		out = append(out, cc)
	}
	return out, nil
}

// ociSpec is the part of an OCI runtime spec a policy reads.
type ociSpec struct {
	Root struct {
		Readonly bool `json:"readonly"`
	} `json:"root"`
	Process struct {
		User struct {
			UID      uint32 `json:"uid"`
			Username string `json:"username"`
		} `json:"user"`
	} `json:"process"`
	Mounts []struct {
		Destination string   `json:"destination"`
		Type        string   `json:"type"`
		Source      string   `json:"source"`
		Options     []string `json:"options"`
	} `json:"mounts"`
}

// ParseSpecConfig fills cc's filesystem and user from an OCI runtime spec.
func ParseSpecConfig(spec []byte, cc *ContainerConfig) error {
	var s ociSpec
	if err := json.Unmarshal(spec, &s); err != nil {
		return err
	}
	cc.ReadOnlyRootfs = s.Root.Readonly
	cc.UID = int(s.Process.User.UID)
	cc.User = strconv.Itoa(cc.UID)
	if s.Process.User.Username != "" {
		cc.User = s.Process.User.Username
	}
	for _, m := range s.Mounts {
		typ := m.Type
		if typ == "" || slices.Contains(m.Options, "bind") || slices.Contains(m.Options, "rbind") {
			typ = "bind"
		}
		cc.Mounts = append(cc.Mounts, Mount{Type: typ, Source: m.Source, Destination: m.Destination, RW: !slices.Contains(m.Options, "ro")})
	}
	return nil
}

// RunningConfigs reads the configuration of every container of namespace
// ns whose task runs.
func (c *Containerd) RunningConfigs(ctx context.Context, ns string) ([]ContainerConfig, error) {
	cctx, cancel := c.ctx(ctx, ns)
	defer cancel()
	r, err := c.containers.List(cctx, &containers.ListContainersRequest{})
	if err != nil {
		return nil, c.err("list", ns, "", err)
	}
	var out []ContainerConfig
	for _, rc := range r.GetContainers() {
		t, err := c.tasks.Get(cctx, &tasks.GetRequest{ContainerID: rc.GetID()})
		if err != nil || t.GetProcess().GetStatus() != task.Status_RUNNING {
			continue
		}
		cc := ContainerConfig{Engine: "containerd", Namespace: ns, ID: rc.GetID(), Name: rc.GetID(), ImageRef: rc.GetImage(), UID: -1}
		if spec := rc.GetSpec().GetValue(); len(spec) > 0 && len(spec) <= maxSpec {
			_ = ParseSpecConfig(spec, &cc)
		}
		out = append(out, cc)
	}
	return out, nil
}

// Save writes image ref as a docker-save tarball at path.
func (d *Docker) Save(ctx context.Context, ref, path string) error {
	r, err := d.c.ImageSave(ctx, []string{ref})
	if err != nil {
		return d.err("save", ref, err)
	}
	defer r.Close()
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("docker save %s: %w", ref, err)
	}
	if _, err := io.Copy(f, r); err != nil {
		f.Close()
		return fmt.Errorf("docker save %s: %w", ref, err)
	}
	return f.Close()
}
