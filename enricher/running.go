package enricher

import (
	"context"
	"errors"
	"fmt"
	"sort"

	"github.com/nats-io/nats.go/jetstream"
)

// RunningImages lists the images of the containers the enricher knows on
// host ("" for every host), one entry per image reference, from the
// containers bucket (records expire after Config.ContainersTTL without a
// new container event). Undecodable records are skipped and counted in
// skipped.
func RunningImages(ctx context.Context, js jetstream.JetStream, bucket, host string) (images []ContainerImage, skipped int, err error) {
	kv, err := js.KeyValue(ctx, bucket)
	if err != nil {
		return nil, 0, fmt.Errorf("containers bucket %s: %w", bucket, err)
	}
	lister, err := kv.ListKeys(ctx)
	if err != nil {
		return nil, 0, fmt.Errorf("listing %s: %w", bucket, err)
	}
	seen := map[string]bool{}
	for key := range lister.Keys() {
		entry, err := kv.Get(ctx, key)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue
		}
		if err != nil {
			return nil, skipped, fmt.Errorf("reading %s/%s: %w", bucket, key, err)
		}
		rec, err := decodeContainerRecord(entry.Value())
		if err != nil {
			skipped++
			continue
		}
		if (host != "" && rec.Host != host) || rec.ImageRef == "" || seen[rec.ImageRef] {
			continue
		}
		seen[rec.ImageRef] = true
		images = append(images, rec)
	}
	sort.Slice(images, func(i, j int) bool { return images[i].ImageRef < images[j].ImageRef })
	return images, skipped, nil
}
