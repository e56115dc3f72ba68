package imagecfg

import (
	"archive/tar"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path"
	"regexp"
	"slices"
	"sort"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// Declaration is what an image declares about itself.
type Declaration struct {
	Digest       string            `json:"digest"`
	Ref          string            `json:"ref,omitempty"`
	Source       string            `json:"source,omitempty"`
	Created      time.Time         `json:"created,omitzero"`
	OS           string            `json:"os,omitempty"`
	Architecture string            `json:"architecture,omitempty"`
	User         string            `json:"user,omitempty"`
	WorkingDir   string            `json:"working_dir,omitempty"`
	Entrypoint   []string          `json:"entrypoint,omitempty"`
	Cmd          []string          `json:"cmd,omitempty"`
	ExposedPorts []string          `json:"exposed_ports,omitempty"` // "80/tcp", sorted
	Volumes      []string          `json:"volumes,omitempty"`       // sorted
	Env          []EnvVar          `json:"env,omitempty"`
	Labels       map[string]string `json:"labels,omitempty"`
	StopSignal   string            `json:"stop_signal,omitempty"`
	// BaseName and BaseDigest come from the OCI base-image annotations
	// (or labels) when the builder wrote them.
	BaseName   string    `json:"base_name,omitempty"`
	BaseDigest string    `json:"base_digest,omitempty"`
	History    []History `json:"history,omitempty"`
	Layers     []Layer   `json:"layers,omitempty"`
	// Executables are the regular files with an execute bit in the
	// flattened filesystem; nil when layers were not listed.
	Executables []string `json:"executables,omitempty"`
	// Setuid lists setuid/setgid regular files in the flattened filesystem.
	Setuid []File `json:"setuid,omitempty"`
	// FilesListed says whether every layer's files were read.
	FilesListed bool `json:"files_listed"`
}

// EnvVar is an environment variable of the config. Value is "" and
// Redacted true when the name or the value looks like a secret.
type EnvVar struct {
	Name     string `json:"name"`
	Value    string `json:"value,omitempty"`
	Redacted bool   `json:"redacted,omitempty"`
}

// History is one history entry; CreatedBy is the build step.
type History struct {
	Created    time.Time `json:"created,omitzero"`
	CreatedBy  string    `json:"created_by,omitempty"`
	Comment    string    `json:"comment,omitempty"`
	EmptyLayer bool      `json:"empty_layer,omitempty"`
}

// Layer describes one layer.
type Layer struct {
	Digest string `json:"digest"`
	Size   int64  `json:"size"`
	Files  int    `json:"files"`
	// Skipped says why files were not listed (e.g. "too large").
	Skipped string `json:"skipped,omitempty"`
	// CreatedBy is the history step that made this layer, if known.
	CreatedBy string `json:"created_by,omitempty"`
}

// File is an entry of a layer.
type File struct {
	Path  string `json:"path"`
	Mode  int64  `json:"mode"`
	Layer int    `json:"layer"`
}

// ErrBadConfig wraps every image config parsing failure.
var ErrBadConfig = errors.New("bad image config")

// Limits bound what is read from hostile input.
const (
	maxConfigBytes = 4 << 20
	maxHistory     = 1000
	maxFilesPerTar = 1_000_000
	maxStringLen   = 4096
)

// ParseConfig parses and checks a raw image config. It is pure.
func ParseConfig(raw []byte) (*v1.ConfigFile, error) {
	if len(raw) > maxConfigBytes {
		return nil, fmt.Errorf("%w: %d bytes", ErrBadConfig, len(raw))
	}
	var cf v1.ConfigFile
	if err := json.Unmarshal(raw, &cf); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadConfig, err)
	}
	if len(cf.History) > maxHistory {
		return nil, fmt.Errorf("%w: %d history entries", ErrBadConfig, len(cf.History))
	}
	return &cf, nil
}

// FromConfig builds the config part of a Declaration (no layers).
func FromConfig(cf *v1.ConfigFile) *Declaration {
	c := cf.Config
	d := &Declaration{
		Created:      cf.Created.Time,
		OS:           clip(cf.OS),
		Architecture: clip(cf.Architecture),
		User:         clip(c.User),
		WorkingDir:   clip(c.WorkingDir),
		Entrypoint:   clipAll(c.Entrypoint),
		Cmd:          clipAll(c.Cmd),
		StopSignal:   clip(c.StopSignal),
	}
	for p := range c.ExposedPorts {
		d.ExposedPorts = append(d.ExposedPorts, clip(p))
	}
	sort.Strings(d.ExposedPorts)
	for v := range c.Volumes {
		d.Volumes = append(d.Volumes, clip(v))
	}
	sort.Strings(d.Volumes)
	for _, kv := range c.Env {
		name, value, _ := strings.Cut(kv, "=")
		ev := EnvVar{Name: clip(name)}
		if SecretName(name) || SecretValue(value) {
			ev.Redacted = true
		} else {
			ev.Value = clip(value)
		}
		d.Env = append(d.Env, ev)
	}
	if len(c.Labels) > 0 {
		d.Labels = make(map[string]string, len(c.Labels))
		for k, v := range c.Labels {
			if SecretName(k) || SecretValue(v) {
				v = "<redacted>"
			}
			d.Labels[clip(k)] = clip(v)
		}
	}
	d.BaseName = c.Labels["org.opencontainers.image.base.name"]
	d.BaseDigest = c.Labels["org.opencontainers.image.base.digest"]
	for _, h := range cf.History {
		d.History = append(d.History, History{
			Created: h.Created.Time, CreatedBy: clip(h.CreatedBy), Comment: clip(h.Comment), EmptyLayer: h.EmptyLayer,
		})
	}
	return d
}

var (
	secretNameRE  = regexp.MustCompile(`(?i)(pass(wd|word)?|secret|token|api_?key|access_?key|private_?key|credential|auth|session_?key|signing_?key|_key$|^key$)`)
	secretValueRE = regexp.MustCompile(`(AKIA[0-9A-Z]{16}|-----BEGIN [A-Z ]*PRIVATE KEY|gh[pousr]_[A-Za-z0-9]{30,}|xox[abpr]-[A-Za-z0-9-]{10,}|eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}\.)`)
)

// SecretName reports whether an env or label name looks like it holds a
// secret (PASSWORD, API_KEY, TOKEN, ...). Well-known harmless names are not.
func SecretName(name string) bool {
	switch strings.ToUpper(name) {
	case "GPG_KEY", "PATH", "HOME", "PYTHON_GPG_KEY", "NGINX_GPG_KEY", "NODE_GPG_KEY":
		// GPG_KEY holds a public key fingerprint in official images.
		return false
	}
	return secretNameRE.MatchString(name)
}

// SecretValue reports whether a value looks like a credential (cloud keys,
// private keys, tokens, JWTs).
func SecretValue(v string) bool { return secretValueRE.MatchString(v) }

// flattener applies layers in order, honouring whiteouts.
type flattener struct {
	files map[string]File
}

// ListTar reads a layer tar and returns its entries (whiteouts included,
// as they appear). It is pure: it reads only r.
func ListTar(r io.Reader) ([]File, error) {
	tr := tar.NewReader(r)
	var out []File
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return out, fmt.Errorf("reading layer tar: %w", err)
		}
		if len(out) >= maxFilesPerTar {
			return out, fmt.Errorf("reading layer tar: more than %d entries", maxFilesPerTar)
		}
		p := cleanPath(h.Name)
		if p == "" {
			continue
		}
		mode := h.Mode & 0o7777
		switch h.Typeflag {
		case tar.TypeReg:
			mode |= 0o100000
		case tar.TypeDir:
			mode |= 0o040000
		case tar.TypeSymlink:
			mode |= 0o120000
		case tar.TypeLink:
			mode |= 0o100000
		default:
			mode |= 0o010000 // other
		}
		out = append(out, File{Path: p, Mode: mode})
	}
}

func cleanPath(p string) string {
	p = path.Clean("/" + p)
	if p == "/" || len(p) > maxStringLen {
		return ""
	}
	return p
}

func (f *flattener) apply(layer int, files []File) {
	if f.files == nil {
		f.files = make(map[string]File)
	}
	// Whiteouts first apply to lower layers only.
	for _, fl := range files {
		dir, base := path.Split(fl.Path)
		switch {
		case base == ".wh..wh..opq":
			prefix := strings.TrimSuffix(dir, "/") + "/"
			for p := range f.files {
				if strings.HasPrefix(p, prefix) {
					delete(f.files, p)
				}
			}
		case strings.HasPrefix(base, ".wh."):
			victim := dir + strings.TrimPrefix(base, ".wh.")
			delete(f.files, victim)
			for p := range f.files {
				if strings.HasPrefix(p, victim+"/") {
					delete(f.files, p)
				}
			}
		}
	}
	for _, fl := range files {
		if strings.HasPrefix(path.Base(fl.Path), ".wh.") {
			continue
		}
		fl.Layer = layer
		f.files[fl.Path] = fl
	}
}

func (f *flattener) result() (execs []string, setuid []File) {
	for p, fl := range f.files {
		if fl.Mode&0o170000 != 0o100000 {
			continue
		}
		if fl.Mode&0o111 != 0 {
			execs = append(execs, p)
		}
		if fl.Mode&0o6000 != 0 {
			setuid = append(setuid, fl)
		}
	}
	slices.Sort(execs)
	slices.SortFunc(setuid, func(a, b File) int { return strings.Compare(a.Path, b.Path) })
	if execs == nil {
		execs = []string{}
	}
	return execs, setuid
}

// Options bound layer reading.
type Options struct {
	// ListFiles reads every layer to list its files.
	ListFiles bool
	// MaxLayerBytes skips listing a layer larger than this (compressed);
	// 0 means no bound.
	MaxLayerBytes int64
}

// Declare reads img's config and, with opts.ListFiles, its layers.
func Declare(img v1.Image, opts Options) (*Declaration, error) {
	digest, err := img.Digest()
	if err != nil {
		return nil, fmt.Errorf("image digest: %w", err)
	}
	raw, err := img.RawConfigFile()
	if err != nil {
		return nil, fmt.Errorf("image config: %w", err)
	}
	cf, err := ParseConfig(raw)
	if err != nil {
		return nil, err
	}
	d := FromConfig(cf)
	d.Digest = digest.String()
	if m, err := img.Manifest(); err == nil && m != nil {
		if d.BaseName == "" {
			d.BaseName = m.Annotations["org.opencontainers.image.base.name"]
		}
		if d.BaseDigest == "" {
			d.BaseDigest = m.Annotations["org.opencontainers.image.base.digest"]
		}
	}
	layers, err := img.Layers()
	if err != nil {
		return nil, fmt.Errorf("image layers: %w", err)
	}
	// Non-empty history entries map to layers in order.
	var steps []string
	for _, h := range d.History {
		if !h.EmptyLayer {
			steps = append(steps, h.CreatedBy)
		}
	}
	var fl flattener
	listed := opts.ListFiles
	for i, l := range layers {
		ld, err := l.Digest()
		if err != nil {
			return nil, fmt.Errorf("layer %d digest: %w", i, err)
		}
		size, _ := l.Size()
		info := Layer{Digest: ld.String(), Size: size}
		if i < len(steps) && len(steps) == len(layers) {
			info.CreatedBy = steps[i]
		}
		switch {
		case !opts.ListFiles:
		case opts.MaxLayerBytes > 0 && size > opts.MaxLayerBytes:
			info.Skipped = "too large"
			listed = false
		default:
			files, err := listLayer(l)
			if err != nil {
				return nil, fmt.Errorf("layer %d (%s): %w", i, ld, err)
			}
			info.Files = len(files)
			fl.apply(i, files)
		}
		d.Layers = append(d.Layers, info)
	}
	d.FilesListed = listed
	if listed {
		d.Executables, d.Setuid = fl.result()
	}
	return d, nil
}

// maxUncompressedBytes bounds what one layer may decompress to while its
// headers are listed (a gzip bomb would otherwise burn CPU without end).
// Layers are never extracted to disk: only their tar headers are read.
const maxUncompressedBytes = 8 << 30

// errLayerTooLarge: a layer decompressed past maxUncompressedBytes.
var errLayerTooLarge = fmt.Errorf("layer decompresses to more than %d bytes", maxUncompressedBytes)

// boundedReader fails once more than n bytes were read.
type boundedReader struct {
	r io.Reader
	n int64
}

func (b *boundedReader) Read(p []byte) (int, error) {
	if b.n <= 0 {
		return 0, errLayerTooLarge
	}
	if int64(len(p)) > b.n {
		p = p[:b.n]
	}
	n, err := b.r.Read(p)
	b.n -= int64(n)
	return n, err
}

func listLayer(l v1.Layer) ([]File, error) {
	rc, err := l.Uncompressed()
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	return ListTar(&boundedReader{r: rc, n: maxUncompressedBytes})
}

// BaseCreated is the creation time of the oldest history entry: the base
// image's build time when the image was built FROM another.
func (d *Declaration) BaseCreated() time.Time {
	var t time.Time
	for _, h := range d.History {
		if !h.Created.IsZero() && (t.IsZero() || h.Created.Before(t)) {
			t = h.Created
		}
	}
	return t
}

func clip(s string) string {
	if len(s) > maxStringLen {
		return s[:maxStringLen]
	}
	return s
}

func clipAll(ss []string) []string {
	if ss == nil {
		return nil
	}
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = clip(s)
	}
	return out
}
