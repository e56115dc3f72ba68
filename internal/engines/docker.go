package engines

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/containerd/errdefs"
	"github.com/moby/moby/client"
)

// Container is what an engine says about one container.
type Container struct {
	ID   string
	Name string
	// ImageRef is the reference the container was started from
	// ("nginx:1.27", "docker.io/library/nginx:1.27").
	ImageRef string
	// ImageID is the engine's image id (docker: the config digest).
	ImageID string
	// ImageDigest is the manifest digest when the engine knows it.
	ImageDigest string
	Labels      map[string]string
	// Annotations are the OCI spec annotations (containerd; Kubernetes pod
	// name and namespace live there under CRI).
	Annotations map[string]string
	Pid         int
	Running     bool
	Paused      bool
}

// ErrNotFound is returned when the engine does not know the container.
var ErrNotFound = errors.New("container not found")

// Docker is a client of one Docker Engine.
type Docker struct {
	host    string
	timeout time.Duration
	c       *client.Client
}

// NewDocker returns a client of the Docker Engine at host (unix:///run/docker.sock,
// tcp://...). Nothing is dialled until the first call; the API version is
// negotiated then. timeout bounds each call (default 2 s).
func NewDocker(host string, timeout time.Duration) (*Docker, error) {
	if timeout <= 0 {
		timeout = 2 * time.Second
	}
	c, err := client.New(client.WithHost(host), client.WithAPIVersionNegotiation())
	if err != nil {
		return nil, fmt.Errorf("docker %s: %w", host, err)
	}
	return &Docker{host: host, timeout: timeout, c: c}, nil
}

// Host is the engine's address.
func (d *Docker) Host() string { return d.host }

// Close releases the client's connections.
func (d *Docker) Close() error { return d.c.Close() }

func (d *Docker) err(op, id string, err error) error {
	if errdefs.IsNotFound(err) {
		return fmt.Errorf("docker %s %s %s: %w", d.host, op, id, ErrNotFound)
	}
	return fmt.Errorf("docker %s %s %s: %w", d.host, op, id, err)
}

// Ping checks that the engine answers.
func (d *Docker) Ping(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, d.timeout)
	defer cancel()
	if _, err := d.c.Ping(ctx, client.PingOptions{}); err != nil {
		return fmt.Errorf("docker %s: ping: %w", d.host, err)
	}
	return nil
}

// Inspect reads a container (by id or name).
func (d *Docker) Inspect(ctx context.Context, id string) (Container, error) {
	ctx, cancel := context.WithTimeout(ctx, d.timeout)
	defer cancel()
	r, err := d.c.ContainerInspect(ctx, id, client.ContainerInspectOptions{})
	if err != nil {
		return Container{}, d.err("inspect", id, err)
	}
	ic := r.Container
	c := Container{ID: ic.ID, Name: strings.TrimPrefix(ic.Name, "/"), ImageID: ic.Image}
	if ic.Config != nil {
		c.ImageRef = ic.Config.Image
		c.Labels = ic.Config.Labels
	}
	if ic.State != nil {
		c.Pid = ic.State.Pid
		c.Running = ic.State.Running
		c.Paused = ic.State.Paused
	}
	if ic.ImageManifestDescriptor != nil {
		c.ImageDigest = ic.ImageManifestDescriptor.Digest.String()
	}
	if c.ImageDigest == "" && c.ImageID != "" {
		// The classic image store: the repo digest, when the image was
		// pulled (an imported or built image has none).
		if im, err := d.c.ImageInspect(ctx, c.ImageID); err == nil {
			for _, rd := range im.RepoDigests {
				if _, dg, ok := strings.Cut(rd, "@"); ok {
					c.ImageDigest = dg
					break
				}
			}
		}
	}
	return c, nil
}

// Pause pauses the container through the engine and returns once the
// engine reports it paused.
func (d *Docker) Pause(ctx context.Context, id string) error {
	ctx, cancel := context.WithTimeout(ctx, d.timeout)
	defer cancel()
	if _, err := d.c.ContainerPause(ctx, id, client.ContainerPauseOptions{}); err != nil {
		return d.err("pause", id, err)
	}
	return nil
}

// Unpause resumes a container paused through the engine.
func (d *Docker) Unpause(ctx context.Context, id string) error {
	ctx, cancel := context.WithTimeout(ctx, d.timeout)
	defer cancel()
	if _, err := d.c.ContainerUnpause(ctx, id, client.ContainerUnpauseOptions{}); err != nil {
		return d.err("unpause", id, err)
	}
	return nil
}
