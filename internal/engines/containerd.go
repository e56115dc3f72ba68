package engines

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	containers "github.com/containerd/containerd/api/services/containers/v1"
	tasks "github.com/containerd/containerd/api/services/tasks/v1"
	version "github.com/containerd/containerd/api/services/version/v1"
	"github.com/containerd/containerd/api/types/task"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"
)

// Well-known containerd namespaces.
const (
	// NamespaceK8s holds the containers the CRI plugin runs for kubelet.
	NamespaceK8s = "k8s.io"
	// NamespaceMoby holds dockerd's containers.
	NamespaceMoby = "moby"
)

// maxSpec bounds the OCI spec read from containerd (annotations come from
// it); a larger spec is not parsed.
const maxSpec = 1 << 20

// Containerd is a client of one containerd.
type Containerd struct {
	address    string
	timeout    time.Duration
	conn       *grpc.ClientConn
	containers containers.ContainersClient
	tasks      tasks.TasksClient
	version    version.VersionClient
}

// NewContainerd returns a client of the containerd listening on the unix
// socket address (/run/containerd/containerd.sock). Nothing is dialled
// until the first call. timeout bounds each call (default 2 s).
func NewContainerd(address string, timeout time.Duration) (*Containerd, error) {
	if timeout <= 0 {
		timeout = 2 * time.Second
	}
	target := address
	if !strings.Contains(target, "://") {
		target = "unix://" + target
	}
	conn, err := grpc.NewClient(target, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, fmt.Errorf("containerd %s: %w", address, err)
	}
	return &Containerd{
		address:    address,
		timeout:    timeout,
		conn:       conn,
		containers: containers.NewContainersClient(conn),
		tasks:      tasks.NewTasksClient(conn),
		version:    version.NewVersionClient(conn),
	}, nil
}

// Address is containerd's socket.
func (c *Containerd) Address() string { return c.address }

// Close closes the connection.
func (c *Containerd) Close() error { return c.conn.Close() }

func (c *Containerd) ctx(ctx context.Context, ns string) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	return metadata.AppendToOutgoingContext(ctx, "containerd-namespace", ns), cancel
}

func (c *Containerd) err(op, ns, id string, err error) error {
	if status.Code(err) == codes.NotFound {
		return fmt.Errorf("containerd %s %s %s/%s: %w", c.address, op, ns, id, ErrNotFound)
	}
	return fmt.Errorf("containerd %s %s %s/%s: %w", c.address, op, ns, id, err)
}

// Container reads container id of namespace ns, with its task's state.
func (c *Containerd) Container(ctx context.Context, ns, id string) (Container, error) {
	cctx, cancel := c.ctx(ctx, ns)
	defer cancel()
	r, err := c.containers.Get(cctx, &containers.GetContainerRequest{ID: id})
	if err != nil {
		return Container{}, c.err("get", ns, id, err)
	}
	rc := r.GetContainer()
	out := Container{ID: rc.GetID(), Name: rc.GetID(), ImageRef: rc.GetImage(), Labels: rc.GetLabels()}
	if spec := rc.GetSpec().GetValue(); len(spec) > 0 && len(spec) <= maxSpec {
		var s struct {
			Annotations map[string]string `json:"annotations"`
		}
		if json.Unmarshal(spec, &s) == nil {
			out.Annotations = s.Annotations
		}
	}
	t, err := c.tasks.Get(cctx, &tasks.GetRequest{ContainerID: id})
	switch {
	case err == nil:
		p := t.GetProcess()
		out.Pid = int(p.GetPid())
		out.Running = p.GetStatus() == task.Status_RUNNING
		out.Paused = p.GetStatus() == task.Status_PAUSED || p.GetStatus() == task.Status_PAUSING
	case status.Code(err) != codes.NotFound:
		return out, c.err("task get", ns, id, err)
	}
	return out, nil
}

// TaskStatus reads the status of the container's task (RUNNING, PAUSED...).
func (c *Containerd) TaskStatus(ctx context.Context, ns, id string) (string, error) {
	cctx, cancel := c.ctx(ctx, ns)
	defer cancel()
	t, err := c.tasks.Get(cctx, &tasks.GetRequest{ContainerID: id})
	if err != nil {
		return "", c.err("task get", ns, id, err)
	}
	return t.GetProcess().GetStatus().String(), nil
}

// Pause pauses the container's task.
func (c *Containerd) Pause(ctx context.Context, ns, id string) error {
	cctx, cancel := c.ctx(ctx, ns)
	defer cancel()
	if _, err := c.tasks.Pause(cctx, &tasks.PauseTaskRequest{ContainerID: id}); err != nil {
		return c.err("pause", ns, id, err)
	}
	return nil
}

// Resume resumes the container's paused task.
func (c *Containerd) Resume(ctx context.Context, ns, id string) error {
	cctx, cancel := c.ctx(ctx, ns)
	defer cancel()
	if _, err := c.tasks.Resume(cctx, &tasks.ResumeTaskRequest{ContainerID: id}); err != nil {
		return c.err("resume", ns, id, err)
	}
	return nil
}

// Version checks that containerd answers and returns its version.
func (c *Containerd) Version(ctx context.Context) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	r, err := c.version.Version(ctx, &emptypb.Empty{})
	if err != nil {
		return "", fmt.Errorf("containerd %s: version: %w", c.address, err)
	}
	return r.GetVersion(), nil
}
