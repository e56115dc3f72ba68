package enricher

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/containsec/contain/schemas/kvdoc"
)

// The declared profile format lives in schemas/kvdoc (the analyzer and the
// store read it); these names keep the enricher's API.
const ProfileSchemaVersion = kvdoc.ProfileSchemaVersion

type (
	// Profile is an image's (or a compose service's) declared profile
	// (kvdoc.Profile; schemas/profile.md).
	Profile = kvdoc.Profile
	// Port is a port and its protocol (kvdoc.Port).
	Port = kvdoc.Port
	// Peer is an expected peer of a compose service (kvdoc.Peer).
	Peer = kvdoc.Peer
)

// DecodeProfile parses a profile from its JSON form (kvdoc.DecodeProfile).
//
// Deprecated: use kvdoc.DecodeProfile.
func DecodeProfile(b []byte) (*Profile, error) { return kvdoc.DecodeProfile(b) }

// OpenProfiles creates or binds the profiles bucket.
func OpenProfiles(ctx context.Context, js jetstream.JetStream, bucket string) (jetstream.KeyValue, error) {
	return openProfiles(ctx, js, bucket, 1)
}

// openProfiles is OpenProfiles with replicas (a clustered JetStream).
func openProfiles(ctx context.Context, js jetstream.JetStream, bucket string, replicas int) (jetstream.KeyValue, error) {
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      bucket,
		Description: "contain: declared profiles by image digest (enricher)",
		History:     1,
		Replicas:    max(replicas, 1),
	})
	if err != nil {
		return nil, fmt.Errorf("kv %s: %w", bucket, err)
	}
	return kv, nil
}

// DigestKey is the KV key of an image digest (kvdoc.DigestKey).
//
// Deprecated: use kvdoc.DigestKey.
func DigestKey(digest string) string { return kvdoc.DigestKey(digest) }

// ProfileKey is the key of one profile version (kvdoc.ProfileKey).
//
// Deprecated: use kvdoc.ProfileKey.
func ProfileKey(digest, version string) string { return kvdoc.ProfileKey(digest, version) }

// ErrNoProfile is returned when no profile is stored for a digest or ref.
var ErrNoProfile = kvdoc.ErrNoProfile

// LoadProfile returns the image profile stored for digest in the
// default bucket (contain_profiles).
func LoadProfile(ctx context.Context, js jetstream.JetStream, digest string) (*Profile, error) {
	return loadProfileKey(ctx, js, DefaultProfilesBucket, kvdoc.DigestKey(digest))
}

// LoadProfileRef returns the profile an event's profile_ref names
// ("<digest>@<version>"), image or compose-service profile alike.
func LoadProfileRef(ctx context.Context, js jetstream.JetStream, ref string) (*Profile, error) {
	digest, version, ok := strings.Cut(ref, "@")
	if !ok || !kvdoc.ValidDigest(digest) || version == "" {
		return nil, fmt.Errorf("profile ref %q: want <digest>@<version>", ref)
	}
	return loadProfileKey(ctx, js, DefaultProfilesBucket, kvdoc.ProfileKey(digest, version))
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
	return kvdoc.DecodeProfile(kve.Value())
}

// storeProfile writes p under its versioned key and, for an image profile,
// under its digest key.
func storeProfile(ctx context.Context, kv jetstream.KeyValue, p *Profile) error {
	data, err := json.Marshal(p)
	if err != nil {
		return fmt.Errorf("encoding profile: %w", err)
	}
	if _, err := kv.Put(ctx, kvdoc.ProfileKey(p.ImageDigest, p.Version), data); err != nil {
		return fmt.Errorf("storing profile %s: %w", p.Ref(), err)
	}
	if p.ComposeService == "" {
		if _, err := kv.Put(ctx, kvdoc.DigestKey(p.ImageDigest), data); err != nil {
			return fmt.Errorf("storing profile %s: %w", p.Ref(), err)
		}
	}
	return nil
}
