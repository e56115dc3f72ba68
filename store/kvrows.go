package store

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/containsec/contain/internal/imagecfg"
	"github.com/containsec/contain/schemas/kvdoc"
)

// Sources of declaration and baseline rows copied from NATS KV.
const (
	SourceImage    = "enricher:image"   // contain_images: imagecfg.Declaration
	SourceProfile  = "enricher:profile" // contain_profiles: kvdoc.Profile
	SourceBaseline = "analyzer"         // contain_baselines: kvdoc.Baseline
)

// errSkip marks a KV entry that is valid but makes no row (a copy of
// another entry).
var errSkip = errors.New("not stored")

// maxKVValue bounds a KV value the store decodes (NATS's default max
// payload is 1 MiB; declarations listing many files can be larger).
const maxKVValue = 64 << 20

// profileRow turns a declared profile (schemas/profile.md) stored under
// key into a declarations row. Only the versioned keys
// ("<alg>_<hex>.<version>") make rows: the enricher writes an image profile
// under its digest key too, with the same content.
func profileRow(key string, raw []byte, at time.Time) (DeclarationRow, error) {
	if !strings.Contains(key, ".") {
		return DeclarationRow{}, errSkip
	}
	if len(raw) > maxKVValue {
		return DeclarationRow{}, fmt.Errorf("profile %s: %d bytes", key, len(raw))
	}
	p, err := kvdoc.DecodeProfile(raw)
	if err != nil {
		return DeclarationRow{}, err
	}
	r := DeclarationRow{Time: at, ImageRef: p.ImageRef, ImageDigest: p.ImageDigest, ProfileVersion: p.Version,
		Source: SourceProfile, User: p.User, Doc: string(raw)}
	add := func(kind string, items ...string) {
		for _, it := range items {
			r.ItemKinds = append(r.ItemKinds, kind)
			r.Items = append(r.Items, it)
		}
	}
	if p.ComposeService != "" {
		add("compose_service", p.ComposeProject+"/"+p.ComposeService)
	}
	if !p.Created.IsZero() {
		add("created", p.Created.UTC().Format(time.RFC3339))
	}
	add("main_process", p.MainProcess...)
	if p.WorkingDir != "" {
		add("working_dir", p.WorkingDir)
	}
	add("uid", strconv.Itoa(p.UID))
	for _, lp := range p.ListenPorts {
		add("listen_port", fmt.Sprintf("%d/%s", lp.Port, strings.ToLower(lp.Protocol)))
	}
	add("writable_path", p.WritablePaths...)
	if p.ReadOnlyRootfs {
		add("read_only_rootfs", "true")
	}
	for _, peer := range p.Peers {
		add("peer", peer.Service)
	}
	add("cap_add", p.CapAdd...)
	add("cap_drop", p.CapDrop...)
	add("executable", p.Executables...)
	add("source", p.Sources...)
	return r, nil
}

// imageRow turns an image declaration (internal/imagecfg.Declaration,
// the contain_images bucket) into a declarations row. A declaration has
// no version of its own: profile_version is "d1-" and the first 8 bytes of
// the value's SHA-256, so a changed declaration adds a row and the same one
// stored again replaces its row.
func imageRow(key string, raw []byte, at time.Time) (DeclarationRow, error) {
	if len(raw) > maxKVValue {
		return DeclarationRow{}, fmt.Errorf("image declaration %s: %d bytes", key, len(raw))
	}
	var d imagecfg.Declaration
	if err := json.Unmarshal(raw, &d); err != nil {
		return DeclarationRow{}, fmt.Errorf("image declaration %s: %w", key, err)
	}
	if !kvdoc.ValidDigest(d.Digest) {
		return DeclarationRow{}, fmt.Errorf("image declaration %s: bad digest %q", key, d.Digest)
	}
	if kvdoc.DigestKey(d.Digest) != key {
		return DeclarationRow{}, fmt.Errorf("image declaration %s: digest %s belongs under another key", key, d.Digest)
	}
	sum := sha256.Sum256(raw)
	r := DeclarationRow{Time: at, ImageRef: d.Ref, ImageDigest: d.Digest, ProfileVersion: "d1-" + hex.EncodeToString(sum[:8]),
		Source: SourceImage, User: d.User, Doc: string(raw)}
	add := func(kind string, items ...string) {
		for _, it := range items {
			r.ItemKinds = append(r.ItemKinds, kind)
			r.Items = append(r.Items, it)
		}
	}
	if d.Source != "" {
		add("fetched_from", d.Source)
	}
	if !d.Created.IsZero() {
		add("created", d.Created.UTC().Format(time.RFC3339))
	}
	for _, kv := range [][2]string{{"os", d.OS}, {"architecture", d.Architecture}, {"working_dir", d.WorkingDir},
		{"stop_signal", d.StopSignal}, {"base_name", d.BaseName}, {"base_digest", d.BaseDigest}} {
		if kv[1] != "" {
			add(kv[0], kv[1])
		}
	}
	add("entrypoint", d.Entrypoint...)
	add("cmd", d.Cmd...)
	add("exposed_port", d.ExposedPorts...)
	add("volume", d.Volumes...)
	for _, e := range d.Env {
		v := e.Value
		if e.Redacted {
			v = "<redacted>"
		}
		add("env", e.Name+"="+v)
	}
	labels := make([]string, 0, len(d.Labels))
	for k, v := range d.Labels {
		labels = append(labels, k+"="+v)
	}
	sort.Strings(labels)
	add("label", labels...)
	for _, h := range d.History {
		add("history", h.CreatedBy)
	}
	for _, l := range d.Layers {
		add("layer", l.Digest)
	}
	add("files_listed", strconv.FormatBool(d.FilesListed))
	add("executable", d.Executables...)
	for _, f := range d.Setuid {
		add("setuid", f.Path)
	}
	return r, nil
}

// baselineRow turns a baseline version (kvdoc.Baseline, the
// contain_baselines bucket) into a baselines row. The document is verified
// (checksum and every item, kvdoc.UnmarshalBaseline). Items are
// sorted by kind, then item; counts are how often each was seen.
func baselineRow(raw []byte, at time.Time) (BaselineRow, error) {
	if len(raw) > maxKVValue {
		return BaselineRow{}, fmt.Errorf("baseline: %d bytes", len(raw))
	}
	d, err := kvdoc.UnmarshalBaseline(raw)
	if err != nil {
		return BaselineRow{}, err
	}
	r := BaselineRow{Time: at, Key: d.Key, ImageRef: d.Image, Version: d.Version, Phase: d.Phase,
		Observations: d.Observations, Novelty: d.Novelty, Source: SourceBaseline, Doc: string(raw)}
	if kvdoc.ValidDigest(d.Key) {
		r.ImageDigest = d.Key
	}
	if d.Op != "" {
		r.Source += ":" + d.Op
	}
	for _, set := range []struct {
		kind string
		m    map[string]uint32
	}{
		{"argv_shape", d.ArgvShapes},
		{"edge", d.Edges},
		{"exec", d.Executables},
		{"peer", d.Peers},
		{"port", d.ListenPorts},
		{"sensitive_read", d.SensitiveReads},
		{"syscall", d.Syscalls},
		{"syscall_ngram", d.SyscallNGrams},
		{"uid", d.UIDs},
		{"write", d.WritePrefixes},
	} {
		items := make([]string, 0, len(set.m))
		for it := range set.m {
			items = append(items, it)
		}
		sort.Strings(items)
		for _, it := range items {
			r.ItemKinds = append(r.ItemKinds, set.kind)
			r.Items = append(r.Items, it)
			r.Counts = append(r.Counts, uint64(set.m[it]))
		}
	}
	return r, nil
}
