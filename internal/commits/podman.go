package commits

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"strings"
	"time"

	"github.com/containsec/contain/internal/engines"
	"github.com/containsec/contain/schemas/containv1"
)

// podmanEvent is one line of `podman events --format json`.
type podmanEvent struct {
	ID     string `json:"ID"`
	Image  string `json:"Image"`
	Name   string `json:"Name"`
	Status string `json:"Status"`
	Type   string `json:"Type"`
	Time   string `json:"Time"`
}

// ParsePodmanEvent decodes one line of `podman events --format json`; ok
// is false for anything but a container commit.
func ParsePodmanEvent(line []byte) (ev podmanEvent, ok bool, err error) {
	if err := json.Unmarshal(line, &ev); err != nil {
		return ev, false, fmt.Errorf("podman event: %w", err)
	}
	return ev, ev.Type == "container" && ev.Status == "commit" && ev.ID != "", nil
}

// podmanImage is one entry of `podman images --format json`.
type podmanImage struct {
	ID       string   `json:"Id"`
	ParentID string   `json:"ParentId"`
	Names    []string `json:"Names"`
	Digest   string   `json:"Digest"`
	Created  int64    `json:"Created"`
}

// ParsePodmanDiff decodes `podman diff --format json`.
func ParsePodmanDiff(b []byte) ([]engines.Change, error) {
	var d struct {
		Changed []string `json:"changed"`
		Added   []string `json:"added"`
		Deleted []string `json:"deleted"`
	}
	if err := json.Unmarshal(b, &d); err != nil {
		return nil, fmt.Errorf("podman diff: %w", err)
	}
	out := make([]engines.Change, 0, len(d.Added)+len(d.Changed)+len(d.Deleted))
	for _, p := range d.Added {
		out = append(out, engines.Change{Kind: 'A', Path: p})
	}
	for _, p := range d.Changed {
		out = append(out, engines.Change{Kind: 'C', Path: p})
	}
	for _, p := range d.Deleted {
		out = append(out, engines.Change{Kind: 'D', Path: p})
	}
	return out, nil
}

func (w *Watcher) podman(ctx context.Context, args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, w.cfg.Timeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, w.cfg.PodmanBinary, args...).Output()
	if err != nil {
		return nil, fmt.Errorf("podman %s: %w", strings.Join(args, " "), err)
	}
	return out, nil
}

// watchPodman follows `podman events` for container commits.
func (w *Watcher) watchPodman(ctx context.Context, subscribed func()) error {
	if _, err := exec.LookPath(w.cfg.PodmanBinary); err != nil {
		return fmt.Errorf("podman: %w", err)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	cmd := exec.CommandContext(ctx, w.cfg.PodmanBinary, "events", "--format", "json",
		"--filter", "type=container", "--filter", "event=commit")
	cmd.WaitDelay = time.Second
	out, err := cmd.StdoutPipe()
	if err != nil {
		return fmt.Errorf("podman events: %w", err)
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("podman events: %w", err)
	}
	defer func() { cancel(); _ = cmd.Wait() }()
	// podman events reads its log from the end once started; give it the
	// moment it takes to open it before saying the stream is up.
	time.Sleep(300 * time.Millisecond)
	subscribed()
	sc := bufio.NewScanner(out)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		ev, ok, err := ParsePodmanEvent(sc.Bytes())
		if err != nil || !ok {
			continue
		}
		w.podmanCommit(ctx, ev)
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("podman events: %w", err)
	}
	return fmt.Errorf("podman events: exited")
}

func (w *Watcher) podmanCommit(ctx context.Context, ev podmanEvent) {
	at, _ := time.Parse(time.RFC3339Nano, ev.Time)
	c := &containv1.Commit{Engine: EnginePodman, SourceContainerId: safe(ev.ID), SourceContainerName: safe(ev.Name), SourceImageRef: safe(ev.Image)}
	if b, err := w.podman(ctx, "inspect", "--type", "container", "--format", "{{.Image}}", ev.ID); err == nil {
		c.SourceImageId = "sha256:" + strings.TrimPrefix(strings.TrimSpace(string(b)), "sha256:")
	}
	if b, err := w.podman(ctx, "diff", "--format", "json", ev.ID); err == nil {
		if ch, err := ParsePodmanDiff(b); err == nil {
			summarise(c, ch, w.cfg.MaxPaths)
			if up, err := w.podman(ctx, "inspect", "--type", "container", "--format", "{{.GraphDriver.Data.UpperDir}}", ev.ID); err == nil {
				flagModes(c, ch, strings.TrimSpace(string(up)), w.cfg.MaxPaths)
			}
		}
	}
	var ims []podmanImage
	if b, err := w.podman(ctx, "images", "--all", "--format", "json"); err == nil {
		_ = json.Unmarshal(b, &ims)
	}
	// The new image: the newest whose parent is the container's image,
	// created at the commit (podman's event does not name it).
	parent := map[string]string{}
	var best *podmanImage
	src := strings.TrimPrefix(c.SourceImageId, "sha256:")
	for i := range ims {
		im := &ims[i]
		parent[im.ID] = im.ParentID
		if im.ParentID == src && src != "" && (at.IsZero() || im.Created >= at.Unix()-5) && (best == nil || im.Created > best.Created) {
			best = im
		}
	}
	if best != nil {
		c.ImageId, c.ImageDigest = "sha256:"+best.ID, best.Digest
		if len(best.Names) > 0 {
			c.ImageRef = safe(best.Names[0])
		}
		if b, err := w.podman(ctx, "image", "inspect", "--format", "{{.Author}}\x1f{{.Comment}}", best.ID); err == nil {
			a, cm, _ := strings.Cut(strings.TrimRight(string(b), "\n"), "\x1f")
			c.Author, c.Comment = safe(a), safe(cm)
		}
	}
	for _, id := range lineage(src, parent) {
		c.Lineage = append(c.Lineage, "sha256:"+id)
	}
	w.emit(ctx, c, "", at.UnixNano())
}
