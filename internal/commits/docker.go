package commits

import (
	"context"

	"github.com/containsec/contain/internal/engines"
	"github.com/containsec/contain/schemas/containv1"
)

// watchDocker reports the engine's container "commit" events: their
// attributes name the new image (imageID, imageRef) and the comment; the
// author comes from the new image, the diff from the container.
func (w *Watcher) watchDocker(ctx context.Context, d *engines.Docker, subscribed func()) error {
	if err := d.Ping(ctx); err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	evs, errs := d.Events(ctx, "container", "commit")
	subscribed()
	return forEach(ctx, evs, errs, func(ev engines.Event) { w.dockerCommit(ctx, d, ev) })
}

func (w *Watcher) dockerCommit(ctx context.Context, d *engines.Docker, ev engines.Event) {
	c := dockerCommitOf(ev)
	var digest string
	if src, err := d.Inspect(ctx, c.SourceContainerId); err == nil {
		c.SourceImageId, digest = src.ImageID, src.ImageDigest
		if c.SourceImageRef == "" {
			c.SourceImageRef = src.ImageRef
		}
	}
	if im, err := d.Image(ctx, c.ImageId); err == nil {
		c.Author, c.ImageDigest = im.Author, im.Digest
		if c.Comment == "" {
			c.Comment = im.Comment
		}
	}
	if changes, err := d.Diff(ctx, c.SourceContainerId); err == nil {
		summarise(c, changes, w.cfg.MaxPaths)
		if upper, err := d.UpperDir(ctx, c.SourceContainerId); err == nil {
			flagModes(c, changes, upper, w.cfg.MaxPaths)
		}
	} else {
		w.log.Warn("commit: container diff unavailable", logEngine, EngineDocker, logImage, c.ImageRef, logErr, err)
	}
	if ims, err := d.Images(ctx); err == nil {
		parent := map[string]string{}
		for _, im := range ims {
			parent[im.ID] = im.ParentID
		}
		c.Lineage = lineage(parent[c.ImageId], parent)
	}
	if len(c.Lineage) == 0 && c.SourceImageId != "" {
		c.Lineage = []string{c.SourceImageId}
	}
	w.emit(ctx, c, digest, ev.TimeNs)
}

// dockerCommitOf reads a docker container "commit" event.
func dockerCommitOf(ev engines.Event) *containv1.Commit {
	a := ev.Attrs
	return &containv1.Commit{
		Engine:              EngineDocker,
		SourceContainerId:   ev.ID,
		SourceContainerName: safe(a["name"]),
		SourceImageRef:      safe(a["image"]),
		ImageId:             safe(a["imageID"]),
		ImageRef:            safe(a["imageRef"]),
		Comment:             safe(a["comment"]),
	}
}
