package analyzer

import (
	"cmp"
	"errors"
	"fmt"
	"path"
	"strings"

	"github.com/containsec/contain/schemas/containv1"
)

// Policy codes: a commit outside the allowlist, and a write that a
// read-only filesystem refused.
const (
	CodeCommitUnallowed = "commit.unallowed"
	CodeWriteReadonly   = "file.write.readonly"
)

// erofs is -EROFS as a file event's result.
const erofs = -30

// CommitsConfig is the commit policy (analyzer.commits.*): only containers
// or images matching one of these patterns may be committed; any other
// commit raises commit.unallowed. Patterns are path.Match globs; a
// container pattern matches the container's name or id (an id pattern may
// be a prefix of at least 12 characters), an image pattern the source
// image's reference, id or digest. Both empty: every commit alerts.
type CommitsConfig struct {
	// AllowContainers are patterns of containers whose commits are
	// allowed (name or id).
	AllowContainers []string `config:"allow_containers"`
	// AllowImages are patterns of source images whose commits are allowed
	// (reference, id or digest).
	AllowImages []string `config:"allow_images"`
}

// Validate checks every pattern's syntax.
func (c CommitsConfig) Validate() error {
	for key, pats := range map[string][]string{"allow_containers": c.AllowContainers, "allow_images": c.AllowImages} {
		for _, p := range pats {
			if _, err := path.Match(p, ""); err != nil || p == "" {
				return fmt.Errorf("analyzer.commits.%s: %q is not a pattern: %w", key, p, errors.Join(err, errors.New("empty or malformed")))
			}
		}
	}
	return nil
}

func matchAny(pats []string, values ...string) bool {
	for _, p := range pats {
		for _, v := range values {
			if v == "" {
				continue
			}
			if ok, _ := path.Match(p, v); ok {
				return true
			}
		}
	}
	return false
}

// allowsCommit says whether the policy allows committing ev's source.
func (c CommitsConfig) allowsCommit(ev *containv1.Event, cm *containv1.Commit) bool {
	name := cmp.Or(cm.SourceContainerName, ev.ContainerName)
	id := cmp.Or(cm.SourceContainerId, ev.ContainerId)
	if matchAny(c.AllowContainers, name, id) {
		return true
	}
	for _, p := range c.AllowContainers {
		if len(p) >= 12 && !strings.ContainsAny(p, "*?[") && strings.HasPrefix(id, p) {
			return true
		}
	}
	return matchAny(c.AllowImages, cm.SourceImageRef, cm.SourceImageId, ev.ImageRef, ev.ImageDigest)
}

// observeCommit scores a KIND_COMMIT event against the commit policy. A
// commit without a source container (a containerd image creation) is
// traced, not policed.
func (e *Engine) observeCommit(ev *containv1.Event) []*containv1.Event {
	cm := ev.GetCommit()
	if cm == nil || ev.WallNs <= 0 {
		e.stats.Invalid++
		return nil
	}
	if ev.ContainerId == "" {
		e.stats.Host++
		return nil
	}
	if e.cfg.Commits.allowsCommit(ev, cm) {
		return nil
	}
	c := e.container(ev)
	if c == nil {
		return nil
	}
	e.devs = e.devs[:0]
	target := cmp.Or(cm.ImageRef, cm.ImageId)
	name := cmp.Or(ev.ContainerName, ev.ContainerId)
	e.dev(CodeCommitUnallowed, "commit", fmt.Sprintf("%s committed container %s into image %s (%d added, %d changed, %d deleted); it is not on analyzer.commits.allow_containers or allow_images",
		cm.Engine, name, target, cm.FilesAdded, cm.FilesChanged, cm.FilesDeleted), nil)
	return e.raise(c, c.base, ev)
}

// readonlyRefused adds file.write.readonly when a read-only filesystem
// refused f (EROFS), learning or not: the attempt is the signal. It
// reports whether it did: the refused write is then neither learned nor
// tracked as written, though behaviours still name it.
func (e *Engine) readonlyRefused(b *Baseline, f *containv1.File) bool {
	if f.Result != erofs || !isWrite(f.Op) {
		return false
	}
	e.dev(CodeWriteReadonly, pathPrefix(f.Path, 2), fmt.Sprintf("%s of %s refused by a read-only filesystem (EROFS) in image %s",
		strings.ToLower(strings.TrimPrefix(f.Op.String(), "OP_")), f.Path, b.Image), nil)
	return true
}
