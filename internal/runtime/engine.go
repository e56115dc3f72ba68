package runtime

import (
	"context"
	"errors"
	"fmt"
	"maps"

	"github.com/containsec/contain/internal/engines"
)

// EngineReader asks the container engines' APIs what identifies a
// container: the Docker Engine (Inspect) and containerd (its containers
// and images services). A nil client is never asked.
type EngineReader struct {
	Docker     *engines.Docker
	Containerd *engines.Containerd
}

// Engines an EngineReader asks.
const (
	EngineDocker     = "docker"
	EngineContainerd = "containerd"
)

// EngineError is a failed engine lookup; Reason is one of
// engines.ReasonNotFound, ReasonTimeout, ReasonUnreachable, ReasonError.
type EngineError struct {
	Engine string
	Reason string
	Err    error
}

func (e *EngineError) Error() string {
	return fmt.Sprintf("%s lookup: %s: %v", e.Engine, e.Reason, e.Err)
}
func (e *EngineError) Unwrap() error { return e.Err }

// Enabled reports whether any engine is configured.
func (r EngineReader) Enabled() bool { return r.Docker != nil || r.Containerd != nil }

// Engine says which engine to ask about ref's container (given what the
// on-disk state told, disk) and, for containerd, in which namespace; ""
// when none applies or none is configured. Docker containers (the cgroup
// path or config.v2.json says docker) are asked of the Docker Engine, even
// though dockerd runs them through containerd's moby namespace.
// containerd is asked about its own containers (cri-containerd scopes,
// a bundle under its task root), Kubernetes cgroupfs containers (k8s.io)
// and two-level paths /<namespace>/<id> (Ref.Namespace, to confirm it).
func (r EngineReader) Engine(ref Ref, disk Info) (engine, ns string) {
	if ref.Runtime == Docker || disk.Runtime == Docker {
		if r.Docker != nil {
			return EngineDocker, ""
		}
		return "", ""
	}
	if r.Containerd == nil {
		return "", ""
	}
	switch {
	case disk.EngineNamespace != "":
		return EngineContainerd, disk.EngineNamespace
	case ref.Namespace != "":
		return EngineContainerd, ref.Namespace
	case ref.Runtime == Containerd || ref.Runtime == CRI || disk.Runtime == Containerd:
		return EngineContainerd, engines.NamespaceK8s
	}
	return "", ""
}

// Lookup asks engine (in namespace ns for containerd) about container id
// and returns what it says as an Info: runtime, init pid, labels (for
// containerd its OCI spec's annotations, then its labels) with
// LabelContainerName, LabelImageRef, LabelImageID and LabelImageDigest
// where the engine knows them, and the names fillNames derives. Errors are
// *EngineError.
func (r EngineReader) Lookup(ctx context.Context, engine, ns, id string) (Info, error) {
	info := Info{Name: id, Labels: map[string]string{}}
	fail := func(err error) (Info, error) {
		return Info{}, &EngineError{Engine: engine, Reason: engines.Reason(err), Err: err}
	}
	switch {
	case engine == EngineDocker && r.Docker != nil:
		c, err := r.Docker.Inspect(ctx, id)
		if err != nil {
			return fail(err)
		}
		info.Runtime = Docker
		maps.Copy(info.Labels, c.Labels)
		setIdentity(&info, LabelContainerName, c.Name)
		setIdentity(&info, LabelImageRef, c.ImageRef)
		setIdentity(&info, LabelImageID, c.ImageID)
		setIdentity(&info, LabelImageDigest, c.ImageDigest)
		info.InitPID = pid32(c.Pid)
	case engine == EngineContainerd && r.Containerd != nil:
		c, err := r.Containerd.Container(ctx, ns, id)
		if err != nil {
			return fail(err)
		}
		info.Runtime = Containerd
		info.EngineNamespace = ns
		maps.Copy(info.Labels, c.Annotations)
		for k, v := range c.Labels {
			setIfAbsent(&info, k, v)
		}
		setIdentity(&info, LabelImageRef, c.ImageRef)
		if c.ImageRef != "" {
			// Best effort: the image may be gone since the container
			// was created; the container is identified without it.
			if im, err := r.Containerd.Image(ctx, ns, c.ImageRef); err == nil {
				setIdentity(&info, LabelImageDigest, im.Digest)
				setIdentity(&info, LabelImageID, im.ID)
			}
		}
		info.InitPID = pid32(c.Pid)
	default:
		return fail(fmt.Errorf("engine %q not configured", engine))
	}
	info.fillNames()
	return info, nil
}

func pid32(p int) uint32 {
	if p <= 0 || p > 1<<32-1 {
		return 0
	}
	return uint32(p)
}

// Merge combines what the on-disk state said (disk) with what the engine
// answered (eng, the zero Info when it did not). The engine wins: its
// runtime, its value of every label key it has (labels, annotations, the
// io.contain.* names and image fields: the engine's view is current and
// its API stable, while on-disk formats change between versions and may be
// read half-written); keys only on disk are kept. The bundle and the init
// pid come from disk when it has them (the engine does not tell the
// bundle; both read the same pid). Name, Pod and Namespace are derived
// again from the merged labels.
func Merge(disk, eng Info) Info {
	if eng.Runtime == "" && eng.Labels == nil {
		return disk
	}
	out := disk
	out.Runtime = firstNonEmpty(eng.Runtime, disk.Runtime)
	out.EngineNamespace = firstNonEmpty(eng.EngineNamespace, disk.EngineNamespace)
	if out.InitPID == 0 {
		out.InitPID = eng.InitPID
	}
	out.Labels = make(map[string]string, len(eng.Labels)+len(disk.Labels))
	maps.Copy(out.Labels, disk.Labels)
	maps.Copy(out.Labels, eng.Labels)
	out.Identity = disk.Identity
	for _, k := range identityKeys {
		if v := *eng.Identity.field(k); v != "" {
			*out.Identity.field(k) = v
		}
	}
	out.DroppedLabels = max(disk.DroppedLabels, eng.DroppedLabels)
	out.Name = firstNonEmpty(eng.Name, disk.Name)
	out.fillNames()
	return out
}

// IsEngineReason reports whether err is an *EngineError of reason.
func IsEngineReason(err error, reason string) bool {
	var ee *EngineError
	return errors.As(err, &ee) && ee.Reason == reason
}
