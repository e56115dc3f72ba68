package posture

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/containsec/contain/internal/engines"
)

// Sources are the engines to audit.
type Sources struct {
	DockerHosts  []string
	Containerd   []string
	Podman       bool
	PodmanBinary string
	Timeout      time.Duration
}

// dockerNamespace is the containerd namespace docker runs its containers
// in: audited through docker.
const dockerNamespace = "moby"

func (s Sources) timeout() time.Duration {
	if s.Timeout <= 0 {
		return 10 * time.Second
	}
	return s.Timeout
}

// Running reads every running container of every engine; an engine that
// fails adds its error and the others' containers are still returned.
func (s Sources) Running(ctx context.Context) ([]engines.ContainerConfig, error) {
	var (
		out  []engines.ContainerConfig
		errs []error
	)
	for _, h := range s.DockerHosts {
		d, err := engines.NewDocker(h, s.timeout())
		if err == nil {
			var cs []engines.ContainerConfig
			cs, err = d.RunningConfigs(ctx)
			out = append(out, cs...)
			d.Close()
		}
		errs = append(errs, err)
	}
	for _, a := range s.Containerd {
		errs = append(errs, s.eachNamespace(ctx, a, func(c *engines.Containerd, ns string) error {
			cs, err := c.RunningConfigs(ctx, ns)
			out = append(out, cs...)
			return err
		}))
	}
	if s.Podman {
		cs, err := s.podmanRunning(ctx)
		out = append(out, cs...)
		errs = append(errs, err)
	}
	return out, errors.Join(errs...)
}

func (s Sources) eachNamespace(ctx context.Context, addr string, f func(c *engines.Containerd, ns string) error) error {
	c, err := engines.NewContainerd(addr, s.timeout())
	if err != nil {
		return err
	}
	defer c.Close()
	nss, err := c.Namespaces(ctx)
	if err != nil {
		return err
	}
	var errs []error
	for _, ns := range nss {
		if ns == dockerNamespace && len(s.DockerHosts) > 0 {
			continue
		}
		errs = append(errs, f(c, ns))
	}
	return errors.Join(errs...)
}

func (s Sources) podman(ctx context.Context, args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*s.timeout())
	defer cancel()
	bin := s.PodmanBinary
	if bin == "" {
		bin = "podman"
	}
	out, err := exec.CommandContext(ctx, bin, args...).Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return nil, fmt.Errorf("podman %s: %w: %s", strings.Join(args, " "), err, ee.Stderr)
		}
		return nil, fmt.Errorf("podman %s: %w", strings.Join(args, " "), err)
	}
	return out, nil
}

func (s Sources) podmanRunning(ctx context.Context) ([]engines.ContainerConfig, error) {
	ids, err := s.podman(ctx, "ps", "-q", "--no-trunc")
	if err != nil {
		return nil, err
	}
	list := strings.Fields(string(ids))
	if len(list) == 0 {
		return nil, nil
	}
	b, err := s.podman(ctx, append([]string{"inspect", "--type", "container"}, list...)...)
	if err != nil {
		return nil, err
	}
	return ParsePodmanInspect(b)
}

// ParsePodmanInspect reads `podman inspect --type container` output.
func ParsePodmanInspect(b []byte) ([]engines.ContainerConfig, error) {
	var in []struct {
		ID        string `json:"Id"`
		Name      string `json:"Name"`
		Image     string `json:"Image"`
		ImageName string `json:"ImageName"`
		Config    struct {
			User    string              `json:"User"`
			Volumes map[string]struct{} `json:"Volumes"`
		} `json:"Config"`
		HostConfig struct {
			ReadonlyRootfs bool              `json:"ReadonlyRootfs"`
			Tmpfs          map[string]string `json:"Tmpfs"`
		} `json:"HostConfig"`
		Mounts []struct {
			Type        string `json:"Type"`
			Source      string `json:"Source"`
			Destination string `json:"Destination"`
			RW          bool   `json:"RW"`
		} `json:"Mounts"`
	}
	if err := json.Unmarshal(b, &in); err != nil {
		return nil, fmt.Errorf("podman inspect: %w", err)
	}
	out := make([]engines.ContainerConfig, 0, len(in))
	for _, c := range in {
		cc := engines.ContainerConfig{Engine: "podman", ID: c.ID, Name: c.Name, ImageRef: c.ImageName, ImageID: c.Image,
			ReadOnlyRootfs: c.HostConfig.ReadonlyRootfs, User: c.Config.User, UID: -1}
		for v := range c.Config.Volumes {
			cc.Volumes = append(cc.Volumes, v)
		}
		slices.Sort(cc.Volumes)
		for dst, opts := range c.HostConfig.Tmpfs {
			cc.Mounts = append(cc.Mounts, engines.Mount{Type: "tmpfs", Destination: dst, RW: !slices.Contains(strings.Split(opts, ","), "ro")})
		}
		for _, m := range c.Mounts {
			cc.Mounts = append(cc.Mounts, engines.Mount{Type: m.Type, Source: m.Source, Destination: m.Destination, RW: m.RW})
		}
		out = append(out, cc)
	}
	return out, nil
}

// Image is one tagged image an engine holds.
type Image struct {
	Engine    string `json:"engine"`
	Namespace string `json:"namespace,omitempty"`
	Ref       string `json:"ref"`
	ID        string `json:"id,omitempty"`
	Address   string `json:"-"`
}

// Images lists every tagged image of every engine (containerd: every
// namespace but docker's).
func (s Sources) Images(ctx context.Context) ([]Image, error) {
	var (
		out  []Image
		errs []error
	)
	for _, h := range s.DockerHosts {
		d, err := engines.NewDocker(h, s.timeout())
		if err == nil {
			var ims []engines.ImageInfo
			if ims, err = d.Images(ctx); err == nil {
				for _, im := range ims {
					for _, r := range im.Refs {
						if !strings.Contains(r, "@") {
							out = append(out, Image{Engine: "docker", Ref: r, ID: im.ID, Address: h})
						}
					}
				}
			}
			d.Close()
		}
		errs = append(errs, err)
	}
	for _, a := range s.Containerd {
		errs = append(errs, s.eachNamespace(ctx, a, func(c *engines.Containerd, ns string) error {
			names, err := c.ImageNames(ctx, ns)
			for _, n := range names {
				if !strings.Contains(n, "@") {
					out = append(out, Image{Engine: "containerd", Namespace: ns, Ref: n, Address: a})
				}
			}
			return err
		}))
	}
	if s.Podman {
		b, err := s.podman(ctx, "images", "--format", "json")
		if err == nil {
			var ims []struct {
				ID    string   `json:"Id"`
				Names []string `json:"Names"`
			}
			if err = json.Unmarshal(b, &ims); err == nil {
				for _, im := range ims {
					for _, n := range im.Names {
						out = append(out, Image{Engine: "podman", Ref: n, ID: "sha256:" + im.ID})
					}
				}
			}
		}
		errs = append(errs, err)
	}
	return out, errors.Join(errs...)
}

// Export writes im as a docker-save tarball into dir and returns its path.
func (s Sources) Export(ctx context.Context, im Image, dir string) (string, error) {
	path := filepath.Join(dir, fmt.Sprintf("%x.tar", hashRef(im.Engine+im.Namespace+im.Ref)))
	ctx, cancel := context.WithTimeout(ctx, 6*s.timeout())
	defer cancel()
	var cmd *exec.Cmd
	switch im.Engine {
	case "docker":
		d, err := engines.NewDocker(im.Address, 6*s.timeout())
		if err != nil {
			return "", err
		}
		defer d.Close()
		return path, d.Save(ctx, im.Ref, path)
	case "containerd":
		cmd = exec.CommandContext(ctx, "ctr", "--address", im.Address, "-n", im.Namespace, "images", "export", path, im.Ref)
	case "podman":
		bin := s.PodmanBinary
		if bin == "" {
			bin = "podman"
		}
		cmd = exec.CommandContext(ctx, bin, "save", "--format", "docker-archive", "-o", path, im.Ref)
	default:
		return "", fmt.Errorf("export %s: unknown engine %q", im.Ref, im.Engine)
	}
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("export %s %s: %w: %s", im.Engine, im.Ref, err, strings.TrimSpace(string(out)))
	}
	return path, nil
}

func hashRef(s string) uint64 {
	h := uint64(14695981039346656037)
	for i := 0; i < len(s); i++ {
		h = (h ^ uint64(s[i])) * 1099511628211
	}
	return h
}
