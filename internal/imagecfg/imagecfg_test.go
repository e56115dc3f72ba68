package imagecfg

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io"
	"log"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// TarEntry is a file of a test layer.
type tarEntry struct {
	name string
	mode int64
	dir  bool
}

func tarBytes(t testing.TB, entries ...tarEntry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := &tar.Header{Name: e.name, Mode: e.mode, Typeflag: tar.TypeReg, ModTime: time.Unix(0, 0)}
		if e.dir {
			h.Typeflag = tar.TypeDir
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func layerOf(t testing.TB, entries ...tarEntry) v1.Layer {
	t.Helper()
	b := tarBytes(t, entries...)
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil })
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// testImage builds an image with a base layer, an app layer (with a
// setuid binary and a whiteout) and a config with history.
func testImage(t testing.TB) v1.Image {
	t.Helper()
	base := layerOf(t,
		tarEntry{name: "bin/", mode: 0o755, dir: true},
		tarEntry{name: "bin/sh", mode: 0o755},
		tarEntry{name: "bin/old", mode: 0o755},
		tarEntry{name: "etc/passwd", mode: 0o644},
	)
	app := layerOf(t,
		tarEntry{name: "app/server", mode: 0o755},
		tarEntry{name: "usr/bin/sudo", mode: 0o4755},
		tarEntry{name: "bin/.wh.old", mode: 0o644},
	)
	img, err := mutate.AppendLayers(empty.Image, base, app)
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	created := time.Date(2020, 1, 2, 3, 4, 5, 0, time.UTC)
	cf.Created = v1.Time{Time: created.Add(time.Hour)}
	cf.OS, cf.Architecture = "linux", "amd64"
	cf.Config = v1.Config{
		User:         "app",
		WorkingDir:   "/app",
		Entrypoint:   []string{"/app/server"},
		Cmd:          []string{"--port", "8080"},
		ExposedPorts: map[string]struct{}{"8080/tcp": {}, "22/tcp": {}},
		Volumes:      map[string]struct{}{"/data": {}},
		Env:          []string{"PATH=/bin", "DB_PASSWORD=hunter2", "AWS=AKIAABCDEFGHIJKLMNOP", "MODE=prod"},
		Labels:       map[string]string{"org.opencontainers.image.base.name": "docker.io/library/debian:10", "team": "shop"},
	}
	cf.History = []v1.History{
		{Created: v1.Time{Time: created}, CreatedBy: "/bin/sh -c #(nop) ADD file:abc in / "},
		{Created: v1.Time{Time: created.Add(time.Hour)}, CreatedBy: "RUN /bin/sh -c apt-get install -y curl # buildkit"},
		{Created: v1.Time{Time: created.Add(time.Hour)}, CreatedBy: "USER app", EmptyLayer: true},
	}
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

func checkDeclaration(t *testing.T, d *Declaration, img v1.Image) {
	t.Helper()
	want, _ := img.Digest()
	if d.Digest != want.String() {
		t.Errorf("digest %s, want %s", d.Digest, want)
	}
	if d.User != "app" || d.WorkingDir != "/app" || !slices.Equal(d.Entrypoint, []string{"/app/server"}) {
		t.Errorf("config: user %q wd %q entrypoint %q", d.User, d.WorkingDir, d.Entrypoint)
	}
	if !slices.Equal(d.ExposedPorts, []string{"22/tcp", "8080/tcp"}) || !slices.Equal(d.Volumes, []string{"/data"}) {
		t.Errorf("ports %v volumes %v", d.ExposedPorts, d.Volumes)
	}
	for _, ev := range d.Env {
		switch ev.Name {
		case "DB_PASSWORD", "AWS":
			if !ev.Redacted || ev.Value != "" {
				t.Errorf("env %s not redacted: %+v", ev.Name, ev)
			}
		case "MODE":
			if ev.Redacted || ev.Value != "prod" {
				t.Errorf("env MODE: %+v", ev)
			}
		}
	}
	if d.BaseName != "docker.io/library/debian:10" {
		t.Errorf("base name %q", d.BaseName)
	}
	if len(d.History) != 3 || !strings.Contains(d.History[1].CreatedBy, "apt-get install") {
		t.Errorf("history %+v", d.History)
	}
	if got := d.BaseCreated(); !got.Equal(time.Date(2020, 1, 2, 3, 4, 5, 0, time.UTC)) {
		t.Errorf("base created %v", got)
	}
	if !d.FilesListed || !slices.Equal(d.Executables, []string{"/app/server", "/bin/sh", "/usr/bin/sudo"}) {
		t.Errorf("executables %v (listed %v); /bin/old is whited out", d.Executables, d.FilesListed)
	}
	if len(d.Setuid) != 1 || d.Setuid[0].Path != "/usr/bin/sudo" || d.Setuid[0].Layer != 1 {
		t.Errorf("setuid %+v", d.Setuid)
	}
	if len(d.Layers) != 2 || !strings.Contains(d.Layers[1].CreatedBy, "apt-get") {
		t.Errorf("layers %+v", d.Layers)
	}
}

// TestFetchRegistry pushes an image to an in-process registry and reads its
// declaration back by tag and by digest.
func TestFetchRegistry(t *testing.T) {
	srv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	defer srv.Close()
	host := strings.TrimPrefix(srv.URL, "http://")
	img := testImage(t)
	ref, err := name.ParseReference(host+"/shop/web:1.2", name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(ref, img); err != nil {
		t.Fatal(err)
	}
	digest, _ := img.Digest()
	s := Sources{Registry: true, Insecure: []string{host}}
	for _, tc := range []struct{ ref, digest string }{
		{host + "/shop/web:1.2", ""},
		{host + "/shop/web:1.2", digest.String()},
		{host + "/shop/web@" + digest.String(), ""},
	} {
		got, src, err := s.Fetch(context.Background(), tc.ref, tc.digest)
		if err != nil {
			t.Fatalf("Fetch(%q, %q): %v", tc.ref, tc.digest, err)
		}
		if src != SourceRegistry {
			t.Errorf("source %q", src)
		}
		d, err := Declare(got, Options{ListFiles: true})
		if err != nil {
			t.Fatal(err)
		}
		checkDeclaration(t, d, img)
	}
	// A missing tag and an unreachable registry are errors naming the source.
	if _, _, err := s.Fetch(context.Background(), host+"/shop/web:nope", ""); err == nil {
		t.Error("missing tag: no error")
	}
	dead := Sources{Registry: true, Insecure: []string{"127.0.0.1:1"}}
	_, _, err = dead.Fetch(context.Background(), "127.0.0.1:1/x/y:1", "")
	var se *SourceError
	if !errors.As(err, &se) || se.Source != SourceRegistry {
		t.Errorf("unreachable registry: %v", err)
	}
}

// TestFetchLayoutAndTarball reads the same image from an OCI layout (by
// ref annotation and by digest) and from a docker-save tarball (by tag).
func TestFetchLayoutAndTarball(t *testing.T) {
	img := testImage(t)
	digest, _ := img.Digest()
	dir := filepath.Join(t.TempDir(), "layout")
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.AppendImage(img, layout.WithAnnotations(map[string]string{"org.opencontainers.image.ref.name": "shop/web:1.2"})); err != nil {
		t.Fatal(err)
	}
	tarPath := filepath.Join(t.TempDir(), "web.tar")
	tag, _ := name.NewTag("shop/web:1.2")
	if err := tarball.WriteToFile(tarPath, tag, img); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		s           Sources
		ref, digest string
		src         string
	}{
		{Sources{OCILayouts: []string{dir}}, "shop/web:1.2", "", SourceOCILayout},
		{Sources{OCILayouts: []string{dir}}, "", digest.String(), SourceOCILayout},
		{Sources{Tarballs: []string{tarPath}}, "shop/web:1.2", "", SourceTarball},
		{Sources{Tarballs: []string{tarPath}}, "index.docker.io/shop/web:1.2", "", SourceTarball},
	} {
		got, src, err := tc.s.Fetch(context.Background(), tc.ref, tc.digest)
		if err != nil {
			t.Fatalf("Fetch(%q, %q) from %v: %v", tc.ref, tc.digest, tc.src, err)
		}
		if src != tc.src {
			t.Errorf("source %q, want %q", src, tc.src)
		}
		d, err := Declare(got, Options{ListFiles: true})
		if err != nil {
			t.Fatal(err)
		}
		if tc.src == SourceOCILayout {
			checkDeclaration(t, d, img)
		} else if d.User != "app" || len(d.Executables) != 3 {
			t.Errorf("tarball declaration: user %q executables %v", d.User, d.Executables)
		}
	}
	_, _, err = Sources{OCILayouts: []string{dir}}.Fetch(context.Background(), "other:1", "")
	if !errors.Is(err, ErrNotFound) {
		t.Errorf("unknown image: %v, want ErrNotFound", err)
	}
	_, _, err = Sources{OCILayouts: []string{t.TempDir()}}.Fetch(context.Background(), "other:1", "")
	if err == nil || errors.Is(err, ErrNotFound) {
		t.Errorf("broken layout: %v, want a layout error", err)
	}
}

func TestParseConfigBad(t *testing.T) {
	for _, raw := range []string{"", "{", `{"config":{"ExposedPorts":[1]}}`, `{"history":"x"}`} {
		if _, err := ParseConfig([]byte(raw)); !errors.Is(err, ErrBadConfig) {
			t.Errorf("ParseConfig(%q): %v, want ErrBadConfig", raw, err)
		}
	}
}

func TestSecrets(t *testing.T) {
	for name, want := range map[string]bool{"DB_PASSWORD": true, "API_KEY": true, "GITHUB_TOKEN": true, "SECRET": true,
		"PATH": false, "HOME": false, "GPG_KEY": false, "PORT": false, "LANG": false} {
		if SecretName(name) != want {
			t.Errorf("SecretName(%q) = %v", name, !want)
		}
	}
	if !SecretValue("-----BEGIN RSA PRIVATE KEY-----") || SecretValue("/usr/local/bin") {
		t.Error("SecretValue")
	}
}

func FuzzParseConfig(f *testing.F) {
	img := testImage(f)
	raw, _ := img.RawConfigFile()
	f.Add(raw)
	f.Add([]byte(`{"config":{"Env":["A"]}}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, b []byte) {
		cf, err := ParseConfig(b)
		if err != nil {
			return
		}
		d := FromConfig(cf)
		for _, ev := range d.Env {
			if ev.Redacted && ev.Value != "" {
				t.Fatal("redacted value kept")
			}
		}
	})
}

func FuzzListTar(f *testing.F) {
	f.Add(tarBytes(f, tarEntry{name: "a/b", mode: 0o4755}, tarEntry{name: "a/.wh..wh..opq"}))
	f.Add([]byte("not a tar"))
	f.Fuzz(func(t *testing.T, b []byte) {
		files, _ := ListTar(bytes.NewReader(b))
		var fl flattener
		fl.apply(0, files)
		execs, _ := fl.result()
		for _, e := range execs {
			if !strings.HasPrefix(e, "/") {
				t.Fatalf("relative path %q", e)
			}
		}
	})
}

func TestBoundedReader(t *testing.T) {
	b := &boundedReader{r: strings.NewReader(strings.Repeat("x", 100)), n: 10}
	got, err := io.ReadAll(b)
	if len(got) != 10 || !errors.Is(err, errLayerTooLarge) {
		t.Fatalf("read %d bytes, err %v", len(got), err)
	}
}
