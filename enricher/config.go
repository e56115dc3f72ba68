package enricher

import (
	"errors"
	"fmt"
	"time"

	"github.com/containsec/contain/schemas/containv1"
	"github.com/containsec/contain/schemas/kvdoc"
)

// Default NATS KV bucket names (schemas/kvdoc).
const (
	DefaultContainersBucket = kvdoc.ContainersBucket
	DefaultProfilesBucket   = kvdoc.ProfilesBucket
	DefaultImagesBucket     = kvdoc.ImagesBucket
)

// Config configures an Enricher. The cmd/ owner fills it from viper under
// the "enricher" key; Validate names the offending key.
type Config struct {
	// Workers resolve image declarations in the background (registry,
	// OCI layout, tarball). 0 turns image resolution off: events are still
	// enriched with the image reference and digest from the runtime.
	Workers int `config:"workers"`
	// Durable is the JetStream durable consumer name on CONTAIN_RAW.
	Durable string `config:"durable"`
	// FilterSubject narrows CONTAIN_RAW; the default takes every host.
	FilterSubject string `config:"filter_subject"`
	// Fetch is the number of raw batches taken per fetch. A fetch is held
	// decoded while it is enriched and republished, and a batch holds up
	// to collector.batch_max_events events: 16 batches of 1,024 events
	// are ~16 MB in memory (docs/benchmarks.md, "Bounded memory").
	Fetch int `config:"fetch"`
	// FetchWait bounds one fetch.
	FetchWait time.Duration `config:"fetch_wait"`
	// AckWait is how long NATS waits for a fetched batch's ack before
	// redelivering it: after a NATS node dies, the batches of a fetch
	// whose reply died with it wait this long (docs/scaling.md).
	AckWait time.Duration `config:"ack_wait"`
	// MaxContainers bounds the in-memory container cache.
	MaxContainers int `config:"max_containers"`
	// ContainersBucket persists container id -> image (NATS KV).
	ContainersBucket string `config:"containers_bucket"`
	// ContainersTTL expires container records nobody refreshed; 0 keeps them.
	ContainersTTL time.Duration `config:"containers_ttl"`
	// ProfilesBucket holds declared profiles keyed by image digest.
	ProfilesBucket string `config:"profiles_bucket"`
	// ImagesBucket holds image declarations keyed by image digest.
	ImagesBucket string `config:"images_bucket"`
	// KVReplicas is the number of replicas of the buckets above in a
	// clustered JetStream (docs/scaling.md, "NATS cluster"); 0 takes
	// nats.streams.replicas.
	KVReplicas int `config:"kv_replicas"`
	// MissRecheck is how long an unknown container is remembered as
	// unknown before the KV bucket is asked again.
	MissRecheck time.Duration `config:"miss_recheck"`
	// ResolveQueue bounds the images waiting for a worker; when full a
	// request is dropped and counted (it is asked again on the next
	// container event of that image).
	ResolveQueue int `config:"resolve_queue"`
	// ResolveTimeout bounds the resolution of one image.
	ResolveTimeout time.Duration `config:"resolve_timeout"`
	// ResolveRetry is how long a failed image is left alone before the
	// next attempt.
	ResolveRetry time.Duration `config:"resolve_retry"`
	// Registry configures pulls from OCI registries.
	Registry RegistryConfig `config:"registry"`
	// ImageSources lists local image stores tried before the registry.
	ImageSources ImageSourcesConfig `config:"image_sources"`
	// Compose files whose services give expected peers, ports, volumes.
	ComposeFiles []string `config:"compose_files"`
	// Dockerfiles maps an image reference (as seen by the runtime,
	// e.g. "shop/web:1.2") to the path of the Dockerfile that built it.
	// An image may also name its Dockerfile with the label
	// io.contain.dockerfile (a path readable by the enricher).
	Dockerfiles map[string]string `config:"dockerfiles"`
	// ContainerDictionary writes each enriched batch's containers once, in
	// a dictionary its events refer to (schema_version 2), instead of
	// repeating the container id, name, image and profile in every event:
	// fewer bytes for NATS and every consumer to copy and read. Consumers
	// older than this build refuse such batches: turn it off while they
	// are upgraded.
	ContainerDictionary bool `config:"container_dictionary"`
	// FleetBatches publishes a fetch's output batches of one partition,
	// from many hosts, as the parts of one fleet batch (schema_version 3,
	// contain.v1.events.@fleet.p<n>) instead of one message per host per
	// partition: ten times fewer messages for NATS to store and replicate,
	// and for every consumer to fetch and acknowledge. Off by default: at
	// the fleet load test it saved no CPU (the stages' and NATS's costs
	// follow events and bytes, not messages) and cost the enricher ~0.17
	// µs/event (docs/design/036-fleet-batches.md). Consumers read each part as
	// the batch it used to be. Consumers older than this build refuse
	// fleet batches: turn it off while they are upgraded, and for
	// consumers that select a host by subject (analyzer.filter_subject
	// naming a host, a tool's filter on contain.v1.events.<host>).
	FleetBatches bool `config:"fleet_batches"`
	// FleetLinger is how long a busy enricher waits after a fetch's first
	// raw batch for more, so that its fleet batches hold more hosts
	// (with fleet_batches). Busy: raw batches come at a rate that brings
	// two or more within it; a quiet enricher (one host, a lone event)
	// relays at once. 0: never waits.
	FleetLinger time.Duration `config:"fleet_linger"`
}

// RegistryConfig configures registry access.
type RegistryConfig struct {
	// Enabled allows pulls from registries (manifests, configs and layers).
	Enabled bool `config:"enabled"`
	// Insecure registries are reached over plain HTTP (host[:port]).
	Insecure []string `config:"insecure"`
	// Keychain uses the default keychain (docker config.json, credential
	// helpers); anonymous access otherwise.
	Keychain bool `config:"keychain"`
	// LayerFiles lists each layer's files (downloads layers); needed for
	// drift detection and the setuid audit.
	LayerFiles bool `config:"layer_files"`
	// MaxLayerBytes skips file listing of larger layers.
	MaxLayerBytes int64 `config:"max_layer_bytes"`
}

// ImageSourcesConfig names local image stores.
type ImageSourcesConfig struct {
	// OCILayouts are directories in the OCI image layout.
	OCILayouts []string `config:"oci_layouts"`
	// Tarballs are `docker save` tarballs.
	Tarballs []string `config:"tarballs"`
	// Daemon would ask the Docker daemon; not supported by this build
	// (Validate rejects it): export with `docker save` or to an OCI layout.
	Daemon bool `config:"daemon"`
}

// DefaultConfig returns a config that validates.
func DefaultConfig() Config {
	return Config{
		Workers:             2,
		Durable:             "enricher",
		FilterSubject:       containv1.SubjectPrefix + ".raw.>",
		Fetch:               16,
		FetchWait:           200 * time.Millisecond,
		AckWait:             30 * time.Second,
		MaxContainers:       100_000,
		ContainersBucket:    DefaultContainersBucket,
		ContainersTTL:       30 * 24 * time.Hour,
		ProfilesBucket:      DefaultProfilesBucket,
		ImagesBucket:        DefaultImagesBucket,
		MissRecheck:         10 * time.Second,
		ResolveQueue:        256,
		ResolveTimeout:      60 * time.Second,
		ResolveRetry:        5 * time.Minute,
		ContainerDictionary: true,
		FleetBatches:        false, // measured: no CPU gain at the fleet load test (design 036)
		FleetLinger:         20 * time.Millisecond,
		Registry: RegistryConfig{
			Enabled:       true,
			Keychain:      true,
			LayerFiles:    true,
			MaxLayerBytes: 512 << 20,
		},
	}
}

// Validate reports the first invalid field by its config key.
func (c Config) Validate() error {
	switch {
	case c.Workers < 0:
		return errors.New("enricher.workers: must be >= 0")
	case c.Durable == "":
		return errors.New("enricher.durable: must be set")
	case c.FilterSubject == "":
		return errors.New("enricher.filter_subject: must be set")
	case c.Fetch <= 0:
		return errors.New("enricher.fetch: must be > 0")
	case c.FetchWait <= 0:
		return errors.New("enricher.fetch_wait: must be > 0")
	case c.AckWait < 0:
		return errors.New("enricher.ack_wait: must be >= 0 (0: 30s)")
	case c.KVReplicas < 0 || c.KVReplicas > 5:
		return fmt.Errorf("enricher.kv_replicas: %d out of range 0..5", c.KVReplicas)
	case c.MaxContainers <= 0:
		return errors.New("enricher.max_containers: must be > 0")
	case c.ContainersBucket == "":
		return errors.New("enricher.containers_bucket: must be set")
	case c.ContainersTTL < 0:
		return errors.New("enricher.containers_ttl: must be >= 0")
	case c.ProfilesBucket == "":
		return errors.New("enricher.profiles_bucket: must be set")
	case c.ImagesBucket == "":
		return errors.New("enricher.images_bucket: must be set")
	case c.MissRecheck < 0:
		return errors.New("enricher.miss_recheck: must be >= 0")
	case c.FleetLinger < 0 || c.FleetLinger > time.Second:
		return fmt.Errorf("enricher.fleet_linger: %s out of range 0..1s (it adds to every event's latency on a busy enricher)", c.FleetLinger)
	case c.Workers > 0 && c.ResolveQueue <= 0:
		return errors.New("enricher.resolve_queue: must be > 0")
	case c.Workers > 0 && c.ResolveTimeout <= 0:
		return errors.New("enricher.resolve_timeout: must be > 0")
	case c.ResolveRetry < 0:
		return errors.New("enricher.resolve_retry: must be >= 0")
	case c.Registry.MaxLayerBytes < 0:
		return errors.New("enricher.registry.max_layer_bytes: must be >= 0")
	}
	for _, b := range []struct{ key, v string }{
		{"enricher.containers_bucket", c.ContainersBucket},
		{"enricher.profiles_bucket", c.ProfilesBucket},
		{"enricher.images_bucket", c.ImagesBucket},
	} {
		if !validBucket(b.v) {
			return fmt.Errorf("%s: %q is not a valid bucket name ([A-Za-z0-9_-]+)", b.key, b.v)
		}
	}
	if c.ImageSources.Daemon {
		return errors.New("enricher.image_sources.daemon: not supported by this build; use image_sources.tarballs (docker save) or oci_layouts")
	}
	for i, p := range c.ImageSources.OCILayouts {
		if p == "" {
			return fmt.Errorf("enricher.image_sources.oci_layouts[%d]: empty path", i)
		}
	}
	for i, p := range c.ImageSources.Tarballs {
		if p == "" {
			return fmt.Errorf("enricher.image_sources.tarballs[%d]: empty path", i)
		}
	}
	for i, p := range c.ComposeFiles {
		if p == "" {
			return fmt.Errorf("enricher.compose_files[%d]: empty path", i)
		}
	}
	for ref, p := range c.Dockerfiles {
		if ref == "" || p == "" {
			return fmt.Errorf("enricher.dockerfiles: empty image reference or path (%q: %q)", ref, p)
		}
	}
	return nil
}

func validBucket(s string) bool {
	if s == "" {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '-') {
			return false
		}
	}
	return true
}
