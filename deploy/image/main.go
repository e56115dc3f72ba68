// Command image builds contain's container image offline, the way ko does:
// a static (CGO_ENABLED=0) binary in one layer on no base image, written as
// a tarball that `docker load` (or `podman load`, `ctr image import`)
// reads. Nothing is pulled.
//
//	go run ./deploy/image [-o contain-image.tar] [-tag contain:dev] [-binary path] [-arch amd64]
//
// The image holds /usr/bin/contain (entrypoint, default command `run`),
// the sample config at /etc/contain/contain.yaml (the default config path),
// the build host's CA bundle when it has one (registry lookups), and an
// empty /var/lib/contain and /tmp.
package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// caBundles are looked for in this order on the build host.
var caBundles = []string{"/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt"}

// options say what to build.
type options struct {
	out, tag, binary, arch, repo string
}

func main() {
	var o options
	flag.StringVar(&o.out, "o", "contain-image.tar", "write the image tarball here")
	flag.StringVar(&o.tag, "tag", "contain:dev", "image name and tag recorded in the tarball")
	flag.StringVar(&o.binary, "binary", "", "a static contain binary to package; empty builds one (CGO_ENABLED=0)")
	flag.StringVar(&o.arch, "arch", runtime.GOARCH, "GOARCH of the binary and the image (amd64, arm64)")
	flag.StringVar(&o.repo, "repo", ".", "the contain repository (for building and deploy/contain.yaml)")
	flag.Parse()
	digest, err := build(o)
	if err != nil {
		fmt.Fprintln(os.Stderr, "image:", err)
		os.Exit(1)
	}
	fmt.Printf("wrote %s (%s, %s)\n", o.out, o.tag, digest)
}

// build writes the image tarball and returns the image's digest.
func build(o options) (v1.Hash, error) {
	bin := o.binary
	if bin == "" {
		dir, err := os.MkdirTemp("", "contain-image")
		if err != nil {
			return v1.Hash{}, err
		}
		defer os.RemoveAll(dir)
		bin = filepath.Join(dir, "contain")
		if err := goBuild(o.repo, o.arch, bin); err != nil {
			return v1.Hash{}, err
		}
	}
	config, err := os.ReadFile(filepath.Join(o.repo, "deploy", "contain.yaml"))
	if err != nil {
		return v1.Hash{}, fmt.Errorf("sample config: %w", err)
	}
	binary, err := os.ReadFile(bin)
	if err != nil {
		return v1.Hash{}, err
	}
	files := []file{
		{name: "etc/contain/", mode: 0o755},
		{name: "etc/contain/contain.yaml", mode: 0o644, body: config},
		{name: "usr/bin/", mode: 0o755},
		{name: "usr/bin/contain", mode: 0o755, body: binary},
		{name: "var/lib/contain/", mode: 0o700},
		{name: "tmp/", mode: 0o1777},
	}
	for _, ca := range caBundles {
		if b, err := os.ReadFile(ca); err == nil {
			files = append(files, file{name: "etc/ssl/certs/", mode: 0o755}, file{name: "etc/ssl/certs/ca-certificates.crt", mode: 0o644, body: b})
			break
		}
	}
	layerTar, err := tarOf(files)
	if err != nil {
		return v1.Hash{}, err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerTar)), nil
	}, tarball.WithCompressionLevel(gzip.BestSpeed))
	if err != nil {
		return v1.Hash{}, fmt.Errorf("layer: %w", err)
	}
	img, err := mutate.AppendLayers(empty.Image, layer)
	if err != nil {
		return v1.Hash{}, fmt.Errorf("layer: %w", err)
	}
	version := strings.TrimSpace(runOut(bin, "version"))
	img, err = mutate.ConfigFile(img, &v1.ConfigFile{
		Architecture: o.arch,
		OS:           "linux",
		RootFS:       v1.RootFS{Type: "layers", DiffIDs: mustDiffIDs(img)},
		Config: v1.Config{
			Entrypoint: []string{"/usr/bin/contain"},
			Cmd:        []string{"run"},
			Env:        []string{"PATH=/usr/bin:/bin", "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt"},
			WorkingDir: "/var/lib/contain",
			Labels: map[string]string{
				"org.opencontainers.image.title":       "contain",
				"org.opencontainers.image.description": "Runtime security for declarative, immutable containers",
				"org.opencontainers.image.version":     version,
			},
		},
	})
	if err != nil {
		return v1.Hash{}, fmt.Errorf("config: %w", err)
	}
	img, err = mutate.CreatedAt(img, v1.Time{Time: time.Unix(0, 0)})
	if err != nil {
		return v1.Hash{}, err
	}
	tag, err := name.NewTag(o.tag)
	if err != nil {
		return v1.Hash{}, fmt.Errorf("tag %q: %w", o.tag, err)
	}
	if err := tarball.WriteToFile(o.out, tag, img); err != nil {
		return v1.Hash{}, fmt.Errorf("writing %s: %w", o.out, err)
	}
	return img.Digest()
}

func mustDiffIDs(img v1.Image) []v1.Hash {
	cf, err := img.ConfigFile()
	if err != nil {
		return nil
	}
	return cf.RootFS.DiffIDs
}

// goBuild builds a static contain for arch.
func goBuild(repo, arch, out string) error {
	// The tests' static builds compile alike (-ldflags changes only the
	// link), so the build cache serves both; -s -w drops the symbol table
	// and DWARF (a third of the size).
	cmd := exec.Command("go", "build", "-ldflags", "-s -w", "-o", out, "./cmd/contain")
	cmd.Dir = repo
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+arch)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("go build: %w", err)
	}
	return nil
}

// runOut runs the binary (when it runs here) and returns its output.
func runOut(bin string, args ...string) string {
	out, err := exec.Command(bin, args...).Output()
	if err != nil {
		return ""
	}
	return string(out)
}

type file struct {
	name string
	mode int64
	body []byte
}

// tarOf writes files (directories end in /) with fixed owners and times,
// so the same inputs give the same layer digest.
func tarOf(files []file) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, f := range files {
		h := &tar.Header{Name: f.name, Mode: f.mode, ModTime: time.Unix(0, 0), Format: tar.FormatPAX}
		if strings.HasSuffix(f.name, "/") {
			h.Typeflag = tar.TypeDir
		} else {
			h.Typeflag = tar.TypeReg
			h.Size = int64(len(f.body))
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, err
		}
		if _, err := tw.Write(f.body); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
