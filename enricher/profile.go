package enricher

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// ProfileSchemaVersion is the version of the Profile JSON format
// (schemas/profile.md).
const ProfileSchemaVersion = 1

// Profile is an image's (or a compose service's) declared profile: what
// the container is expected to do, derived before it does anything from
// the image config and history, its Dockerfile and its compose service.
// The analyzer seeds baselines from it. Format: schemas/profile.md.
type Profile struct {
	SchemaVersion int `json:"schema_version"`
	// Version is a content hash ("p1-<16 hex>"); profile_ref on events is
	// "<image digest>@<version>".
	Version     string    `json:"version"`
	ImageDigest string    `json:"image_digest"`
	ImageRef    string    `json:"image_ref,omitempty"`
	Created     time.Time `json:"created,omitzero"`
	// ComposeProject and ComposeService are set for a service profile.
	ComposeProject string `json:"compose_project,omitempty"`
	ComposeService string `json:"compose_service,omitempty"`

	// ListenPorts are the ports the container is expected to listen on
	// (EXPOSE, compose ports/expose).
	ListenPorts []Port `json:"listen_ports,omitempty"`
	// MainProcess is the expected argv of process 1 (entrypoint + cmd).
	MainProcess []string `json:"main_process,omitempty"`
	WorkingDir  string   `json:"working_dir,omitempty"`
	// User as declared (USER, compose user); UID is its numeric uid when
	// known (-1 when not numeric or unknown; 0 when nothing is declared).
	User string `json:"user,omitempty"`
	UID  int    `json:"uid"`
	// WritablePaths are volumes and tmpfs mounts; with ReadOnlyRootfs the
	// rest of the filesystem is meant to be read-only.
	WritablePaths  []string `json:"writable_paths,omitempty"`
	ReadOnlyRootfs bool     `json:"read_only_rootfs,omitempty"`
	// Peers are the compose services this one is expected to talk to.
	Peers []Peer `json:"peers,omitempty"`
	// PeerAddresses are the IP addresses of the peer services' known
	// containers (a service profile that declares peers; a new version
	// whenever they change). Empty, not absent, when no peer container is
	// known yet: then no connection is declared.
	PeerAddresses []string `json:"peer_addresses,omitzero"`
	CapAdd        []string `json:"cap_add,omitempty"`
	CapDrop       []string `json:"cap_drop,omitempty"`
	// Executables are the regular files with an execute bit that the
	// image's layers ship (absolute paths, sorted); an exec of any other
	// path is drift. Empty when layer files were not listed.
	Executables []string `json:"executables,omitempty"`
	// Sources says what the profile was derived from, e.g.
	// "image:registry", "dockerfile:/src/Dockerfile", "compose:/src/compose.yaml".
	Sources []string `json:"sources,omitempty"`
}

// Port is a port and its protocol ("tcp" or "udp").
type Port struct {
	Port     uint16 `json:"port"`
	Protocol string `json:"protocol"`
}

// Peer is an expected peer of a compose service.
type Peer struct {
	Service string `json:"service"`
	// Via is how the compose file declares the peer: "link",
	// "depends_on" or "network:<name>".
	Via []string `json:"via"`
}

// Ref is the profile reference set on events: "<image digest>@<version>".
func (p *Profile) Ref() string { return p.ImageDigest + "@" + p.Version }

// seal computes Version from the content.
func (p *Profile) seal() {
	p.SchemaVersion = ProfileSchemaVersion
	p.Version = ""
	b, _ := json.Marshal(p)
	sum := sha256.Sum256(b)
	p.Version = "p1-" + hex.EncodeToString(sum[:8])
}

// DecodeProfile parses a profile from its JSON form.
func DecodeProfile(b []byte) (*Profile, error) {
	var p Profile
	if err := json.Unmarshal(b, &p); err != nil {
		return nil, fmt.Errorf("profile: %w", err)
	}
	if p.SchemaVersion == 0 || p.SchemaVersion > ProfileSchemaVersion {
		return nil, fmt.Errorf("profile: unsupported schema_version %d", p.SchemaVersion)
	}
	if !ValidDigest(p.ImageDigest) {
		return nil, fmt.Errorf("profile: bad image_digest %q", p.ImageDigest)
	}
	if p.Version == "" {
		return nil, errors.New("profile: no version")
	}
	for _, a := range p.PeerAddresses {
		if _, err := netip.ParseAddr(a); err != nil {
			return nil, fmt.Errorf("profile: peer_addresses: %w", err)
		}
	}
	return &p, nil
}

// OpenProfiles creates or binds the profiles bucket.
func OpenProfiles(ctx context.Context, js jetstream.JetStream, bucket string) (jetstream.KeyValue, error) {
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      bucket,
		Description: "contain: declared profiles by image digest (enricher)",
		History:     1,
	})
	if err != nil {
		return nil, fmt.Errorf("kv %s: %w", bucket, err)
	}
	return kv, nil
}

// DigestKey is the KV key of an image digest: "sha256:ab.." becomes
// "sha256_ab..".
func DigestKey(digest string) string { return strings.Replace(digest, ":", "_", 1) }

// ProfileKey is the key of one profile version: "<DigestKey>.<version>".
func ProfileKey(digest, version string) string { return DigestKey(digest) + "." + escapeKey(version) }

// ErrNoProfile is returned when no profile is stored for a digest or ref.
var ErrNoProfile = errors.New("no declared profile")

// LoadProfile returns the image profile stored for digest in the
// default bucket (contain_profiles).
func LoadProfile(ctx context.Context, js jetstream.JetStream, digest string) (*Profile, error) {
	return loadProfileKey(ctx, js, DefaultProfilesBucket, DigestKey(digest))
}

// LoadProfileRef returns the profile an event's profile_ref names
// ("<digest>@<version>"), image or compose-service profile alike.
func LoadProfileRef(ctx context.Context, js jetstream.JetStream, ref string) (*Profile, error) {
	digest, version, ok := strings.Cut(ref, "@")
	if !ok || !ValidDigest(digest) || version == "" {
		return nil, fmt.Errorf("profile ref %q: want <digest>@<version>", ref)
	}
	return loadProfileKey(ctx, js, DefaultProfilesBucket, ProfileKey(digest, version))
}

func loadProfileKey(ctx context.Context, js jetstream.JetStream, bucket, key string) (*Profile, error) {
	kv, err := js.KeyValue(ctx, bucket)
	if err != nil {
		if errors.Is(err, jetstream.ErrBucketNotFound) {
			return nil, ErrNoProfile
		}
		return nil, fmt.Errorf("kv %s: %w", bucket, err)
	}
	kve, err := kv.Get(ctx, key)
	if err != nil {
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			return nil, ErrNoProfile
		}
		return nil, fmt.Errorf("loading profile %s: %w", key, err)
	}
	return DecodeProfile(kve.Value())
}

// storeProfile writes p under its versioned key and, for an image profile,
// under its digest key.
func storeProfile(ctx context.Context, kv jetstream.KeyValue, p *Profile) error {
	data, err := json.Marshal(p)
	if err != nil {
		return fmt.Errorf("encoding profile: %w", err)
	}
	if _, err := kv.Put(ctx, ProfileKey(p.ImageDigest, p.Version), data); err != nil {
		return fmt.Errorf("storing profile %s: %w", p.Ref(), err)
	}
	if p.ComposeService == "" {
		if _, err := kv.Put(ctx, DigestKey(p.ImageDigest), data); err != nil {
			return fmt.Errorf("storing profile %s: %w", p.Ref(), err)
		}
	}
	return nil
}
