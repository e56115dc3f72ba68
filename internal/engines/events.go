package engines

import (
	"context"
	"fmt"
	"strings"

	eventsapi "github.com/containerd/containerd/api/events"
	eventsvc "github.com/containerd/containerd/api/services/events/v1"
	images "github.com/containerd/containerd/api/services/images/v1"
	namespaces "github.com/containerd/containerd/api/services/namespaces/v1"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"
	"google.golang.org/protobuf/proto"
)

// Event is one engine event: docker's Type/Action/Actor, or a containerd
// envelope (Type "image", Action "create", ID the image name, Namespace).
type Event struct {
	Type      string
	Action    string
	ID        string
	Attrs     map[string]string
	Namespace string
	TimeNs    int64
}

// Events streams the engine's events of type typ (container, image, ...)
// and actions until ctx ends or the stream fails; the error channel then
// carries the reason (io.EOF when the engine closed the stream).
func (d *Docker) Events(ctx context.Context, typ string, actions ...string) (<-chan Event, <-chan error) {
	f := client.Filters{}.Add("type", typ)
	if len(actions) > 0 {
		f = f.Add("event", actions...)
	}
	res := d.c.Events(ctx, client.EventsListOptions{Filters: f})
	out := make(chan Event)
	errs := make(chan error, 1)
	go func() {
		defer close(out)
		for {
			select {
			case m, ok := <-res.Messages:
				if !ok {
					errs <- fmt.Errorf("docker %s events: stream closed", d.host)
					return
				}
				ev := Event{Type: string(m.Type), Action: string(m.Action), ID: m.Actor.ID, Attrs: m.Actor.Attributes, TimeNs: m.TimeNano}
				select {
				case out <- ev:
				case <-ctx.Done():
					return
				}
			case err := <-res.Err:
				if err != nil {
					errs <- fmt.Errorf("docker %s events: %w", d.host, err)
				}
				return
			case <-ctx.Done():
				return
			}
		}
	}()
	return out, errs
}

// Change is one path of a container's writable layer against its image:
// Kind 'A' (added), 'C' (changed) or 'D' (deleted).
type Change struct {
	Kind byte
	Path string
}

// Diff is the container's writable layer against its image (docker diff).
func (d *Docker) Diff(ctx context.Context, id string) ([]Change, error) {
	ctx, cancel := context.WithTimeout(ctx, d.timeout)
	defer cancel()
	r, err := d.c.ContainerDiff(ctx, id, client.ContainerDiffOptions{})
	if err != nil {
		return nil, d.err("diff", id, err)
	}
	out := make([]Change, 0, len(r.Changes))
	for _, c := range r.Changes {
		k := byte('C')
		switch c.Kind {
		case container.ChangeAdd:
			k = 'A'
		case container.ChangeDelete:
			k = 'D'
		}
		out = append(out, Change{Kind: k, Path: c.Path})
	}
	return out, nil
}

// ImageInfo is what an engine says about one image.
type ImageInfo struct {
	ID       string
	ParentID string
	Refs     []string // tags, else repo digests
	Digest   string   // a repo digest's digest, when the image has one
	Author   string
	Comment  string
	Created  int64 // Unix seconds
}

// Images lists every image (intermediate ones too: the parent chain of a
// committed image goes through them).
func (d *Docker) Images(ctx context.Context) ([]ImageInfo, error) {
	ctx, cancel := context.WithTimeout(ctx, d.timeout)
	defer cancel()
	r, err := d.c.ImageList(ctx, client.ImageListOptions{All: true})
	if err != nil {
		return nil, d.err("image list", "", err)
	}
	out := make([]ImageInfo, 0, len(r.Items))
	for _, s := range r.Items {
		im := ImageInfo{ID: s.ID, ParentID: s.ParentID, Created: s.Created}
		for _, t := range s.RepoTags {
			if t != "<none>:<none>" {
				im.Refs = append(im.Refs, t)
			}
		}
		for _, rd := range s.RepoDigests {
			if _, dg, ok := strings.Cut(rd, "@"); ok && im.Digest == "" {
				im.Digest = dg
			}
			if len(s.RepoTags) == 0 {
				im.Refs = append(im.Refs, rd)
			}
		}
		out = append(out, im)
	}
	return out, nil
}

// Image reads one image's author and comment (docker image inspect).
func (d *Docker) Image(ctx context.Context, id string) (ImageInfo, error) {
	ctx, cancel := context.WithTimeout(ctx, d.timeout)
	defer cancel()
	r, err := d.c.ImageInspect(ctx, id)
	if err != nil {
		return ImageInfo{}, d.err("image inspect", id, err)
	}
	im := ImageInfo{ID: r.ID, Author: r.Author, Comment: r.Comment, Refs: r.RepoTags}
	for _, rd := range r.RepoDigests {
		if _, dg, ok := strings.Cut(rd, "@"); ok {
			im.Digest = dg
			break
		}
	}
	return im, nil
}

// ImageEvents streams containerd's image creations in every namespace
// (topic /images/create: a pull, import, tag or commit by any client).
func (c *Containerd) ImageEvents(ctx context.Context) (<-chan Event, <-chan error) {
	out := make(chan Event)
	errs := make(chan error, 1)
	go func() {
		defer close(out)
		cl, err := eventsvc.NewEventsClient(c.conn).Subscribe(ctx, &eventsvc.SubscribeRequest{Filters: []string{`topic=="/images/create"`}})
		if err != nil {
			errs <- fmt.Errorf("containerd %s: events subscribe: %w", c.address, err)
			return
		}
		for {
			env, err := cl.Recv()
			if err != nil {
				if ctx.Err() == nil {
					errs <- fmt.Errorf("containerd %s: events: %w", c.address, err)
				}
				return
			}
			ev, ok := imageCreate(env.GetNamespace(), env.GetEvent().GetValue(), env.GetTimestamp().AsTime().UnixNano())
			if !ok {
				continue
			}
			select {
			case out <- ev:
			case <-ctx.Done():
				return
			}
		}
	}()
	return out, errs
}

// imageCreate decodes an /images/create event's payload.
func imageCreate(ns string, b []byte, ts int64) (Event, bool) {
	var ic eventsapi.ImageCreate
	if err := proto.Unmarshal(b, &ic); err != nil || ic.Name == "" {
		return Event{}, false
	}
	return Event{Type: "image", Action: "create", ID: ic.Name, Attrs: ic.Labels, Namespace: ns, TimeNs: ts}, true
}

// Namespaces lists containerd's namespaces.
func (c *Containerd) Namespaces(ctx context.Context) ([]string, error) {
	cctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	r, err := namespaces.NewNamespacesClient(c.conn).List(cctx, &namespaces.ListNamespacesRequest{})
	if err != nil {
		return nil, fmt.Errorf("containerd %s: namespaces: %w", c.address, err)
	}
	var out []string
	for _, n := range r.GetNamespaces() {
		out = append(out, n.GetName())
	}
	return out, nil
}

// ImageNames lists the image names of namespace ns.
func (c *Containerd) ImageNames(ctx context.Context, ns string) ([]string, error) {
	cctx, cancel := c.ctx(ctx, ns)
	defer cancel()
	r, err := images.NewImagesClient(c.conn).List(cctx, &images.ListImagesRequest{})
	if err != nil {
		return nil, c.err("image list", ns, "", err)
	}
	var out []string
	for _, im := range r.GetImages() {
		out = append(out, im.GetName())
	}
	return out, nil
}

// UpperDir is the host directory of the container's writable layer
// (overlay's upper directory), or "" when the storage driver names none.
func (d *Docker) UpperDir(ctx context.Context, id string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, d.timeout)
	defer cancel()
	r, err := d.c.ContainerInspect(ctx, id, client.ContainerInspectOptions{})
	if err != nil {
		return "", d.err("inspect", id, err)
	}
	if g := r.Container.GraphDriver; g != nil {
		return g.Data["UpperDir"], nil
	}
	return "", nil
}
