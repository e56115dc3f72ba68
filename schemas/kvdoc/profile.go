package kvdoc

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"time"
)

// ProfileSchemaVersion is the version of the Profile JSON format
// (schemas/profile.md).
const ProfileSchemaVersion = 1

// Profile is an image's (or a compose service's) declared profile: what
// the container is expected to do, derived before it does anything from
// the image config and history, its Dockerfile and its compose service.
// The enricher writes it; the analyzer seeds baselines from it. Format:
// schemas/profile.md.
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

// Seal sets SchemaVersion and computes Version from the content.
func (p *Profile) Seal() {
	p.SchemaVersion = ProfileSchemaVersion
	p.Version = ""
	b, _ := json.Marshal(p)
	sum := sha256.Sum256(b)
	p.Version = "p1-" + hex.EncodeToString(sum[:8])
}

// ErrNoProfile is returned when no profile is stored for a digest or ref.
var ErrNoProfile = errors.New("no declared profile")

// DecodeProfile parses a profile from its JSON form. It is pure and safe
// on any input.
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
