package commits

import (
	"context"

	"github.com/containsec/contain/internal/engines"
	"github.com/containsec/contain/schemas/containv1"
)

// watchContainerd reports image creations in every namespace. containerd
// does not say whether an image came from a pull, an import, a tag or a
// commit, nor from which container: the event carries no source.
func (w *Watcher) watchContainerd(ctx context.Context, c *engines.Containerd, subscribed func()) error {
	if _, err := c.Version(ctx); err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	evs, errs := c.ImageEvents(ctx)
	subscribed()
	return forEach(ctx, evs, errs, func(ev engines.Event) {
		cm := &containv1.Commit{Engine: EngineContainerd, Namespace: safe(ev.Namespace), ImageRef: safe(ev.ID)}
		if im, err := c.Image(ctx, ev.Namespace, ev.ID); err == nil {
			cm.ImageDigest, cm.ImageId = im.Digest, im.ID
		}
		w.emit(ctx, cm, "", ev.TimeNs)
	})
}
