package enricher

import (
	"archive/tar"
	"bytes"
	"context"
	"io"
	"log"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/containsec/contain/internal/bus"
	"github.com/containsec/contain/internal/metrics"
	"github.com/containsec/contain/internal/testenv"
	"github.com/containsec/contain/schemas/containv1"
)

// buildImage makes an image with the given files (path -> mode), config
// and history.
func buildImage(t testing.TB, files map[string]int64, cfg v1.Config, history []v1.History) v1.Image {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	paths := make([]string, 0, len(files))
	for p := range files {
		paths = append(paths, p)
	}
	slices.Sort(paths)
	for _, p := range paths {
		if err := tw.WriteHeader(&tar.Header{Name: p, Mode: files[p], Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
	}
	tw.Close()
	b := buf.Bytes()
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil })
	if err != nil {
		t.Fatal(err)
	}
	img, err := mutate.AppendLayers(empty.Image, l)
	if err != nil {
		t.Fatal(err)
	}
	cf, _ := img.ConfigFile()
	cf = cf.DeepCopy()
	cf.Config = cfg
	cf.History = history
	cf.Created = v1.Time{Time: time.Date(2024, 5, 1, 0, 0, 0, 0, time.UTC)}
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

func startRegistry(t testing.TB) string {
	srv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}

func push(t testing.TB, img v1.Image, ref string) string {
	t.Helper()
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(r, img); err != nil {
		t.Fatal(err)
	}
	d, _ := img.Digest()
	return d.String()
}

// TestDeclaredProfile: an image in an in-process registry, a compose file
// where web links to db; the enricher resolves the image in the
// background, stores its profiles in KV and sets profile_ref on the
// container's events, while events of an image behind an unreachable
// registry still flow (counted) and a bad compose file is counted.
func TestDeclaredProfile(t *testing.T) {
	_, _, js := testenv.NATS(t)
	host := startRegistry(t)
	img := buildImage(t, map[string]int64{"app/web": 0o755, "bin/sh": 0o755, "etc/motd": 0o644}, v1.Config{
		User: "1000", Entrypoint: []string{"/app/web"}, Cmd: []string{"--listen", ":8080"},
		ExposedPorts: map[string]struct{}{"8080/tcp": {}}, Volumes: map[string]struct{}{"/data": {}},
		Env: []string{"API_TOKEN=s3cr3t", "MODE=prod"},
	}, []v1.History{{CreatedBy: "COPY web /app/web"}})
	ref := host + "/shop/web:1.2"
	digest := push(t, img, ref)

	dir := t.TempDir()
	composeFile := filepath.Join(dir, "compose.yaml")
	os.WriteFile(composeFile, []byte("services:\n  web:\n    image: "+ref+"\n    links: [db]\n    read_only: true\n    tmpfs: [/tmp]\n  db:\n    image: postgres:16\n"), 0o644)
	badCompose := filepath.Join(dir, "bad.yaml")
	os.WriteFile(badCompose, []byte("services: ["), 0o644)

	cfg := testConfig()
	cfg.Workers = 1
	cfg.ResolveTimeout = 5 * time.Second
	cfg.Registry.Insecure = []string{host, "127.0.0.1:1"}
	cfg.Registry.Keychain = false
	cfg.ComposeFiles = []string{composeFile, badCompose}
	m := metrics.New()
	startEnricher(t, cfg, js, m)
	if n := testutil.ToFloat64(m.Errors.WithLabelValues(metrics.StageEnricher, errCompose)); n != 1 {
		t.Errorf("compose errors %v, want 1", n)
	}
	out := newEventsReader(t, js)
	p := bus.NewProducer("h1", metrics.StageCollector)
	publishRaw(t, js, p,
		containerEvent("h1", "web1", map[string]string{"io.contain.image.ref": ref, LabelComposeService: "web"}),
		containerEvent("h1", "dead1", map[string]string{"io.contain.image.ref": "127.0.0.1:1/x/y:1"}),
		execEvent("h1", "web1", 1), execEvent("h1", "dead1", 2))
	first := out.next(1)[0]
	if ev := first.Events[2]; ev.ImageRef != ref {
		t.Errorf("first events not enriched with the ref at once: %+v", ev)
	}

	// Events keep flowing; the profile reference appears once resolved.
	var profileRef string
	deadline := time.Now().Add(10 * time.Second)
	for mono := uint64(3); profileRef == "" && time.Now().Before(deadline); mono += 2 {
		publishRaw(t, js, p, execEvent("h1", "web1", mono), execEvent("h1", "dead1", mono+1))
		b := out.next(1)[0]
		if b.Events[1].ImageRef != "127.0.0.1:1/x/y:1" || b.Events[1].ProfileRef != "" {
			t.Fatalf("dead1 event: %+v", b.Events[1])
		}
		profileRef = b.Events[0].ProfileRef
		if profileRef != "" && b.Events[0].ImageDigest != digest {
			t.Errorf("digest learnt by resolution %q, want %q", b.Events[0].ImageDigest, digest)
		}
	}
	if !strings.HasPrefix(profileRef, digest+"@p1-") {
		t.Fatalf("profile_ref %q, want %s@p1-...", profileRef, digest)
	}
	ctx := context.Background()
	sp, err := LoadProfileRef(ctx, js, profileRef)
	if err != nil {
		t.Fatal(err)
	}
	if sp.ComposeService != "web" || len(sp.Peers) != 1 || sp.Peers[0].Service != "db" || !slices.Contains(sp.Peers[0].Via, "link") {
		t.Errorf("service profile peers %+v (service %q)", sp.Peers, sp.ComposeService)
	}
	if !sp.ReadOnlyRootfs || !slices.Equal(sp.WritablePaths, []string{"/data", "/tmp"}) || sp.UID != 1000 {
		t.Errorf("service profile: read_only %v writable %v uid %d", sp.ReadOnlyRootfs, sp.WritablePaths, sp.UID)
	}
	if !slices.Equal(sp.ListenPorts, []Port{{Port: 8080, Protocol: "tcp"}}) || !slices.Equal(sp.MainProcess, []string{"/app/web", "--listen", ":8080"}) {
		t.Errorf("service profile: ports %v main %q", sp.ListenPorts, sp.MainProcess)
	}
	if !slices.Equal(sp.Executables, []string{"/app/web", "/bin/sh"}) {
		t.Errorf("executables %v", sp.Executables)
	}
	testenv.WaitFor(t, 10*time.Second, "resolve error counted", func() bool {
		return testutil.ToFloat64(m.Errors.WithLabelValues(metrics.StageEnricher, errResolve)) >= 1
	})
	// The image declaration is stored once, without the secret's value.
	kv, err := js.KeyValue(ctx, DefaultImagesBucket)
	if err != nil {
		t.Fatal(err)
	}
	kve, err := kv.Get(ctx, DigestKey(digest))
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(kve.Value(), []byte("s3cr3t")) || !bytes.Contains(kve.Value(), []byte("API_TOKEN")) {
		t.Errorf("declaration leaks or lacks the secret env: %s", kve.Value())
	}
	ip, err := LoadProfile(ctx, js, digest)
	if err != nil {
		t.Fatal(err)
	}
	if ip.ComposeService != "" || ip.ReadOnlyRootfs || len(ip.Peers) != 0 || ip.Ref() == profileRef {
		t.Errorf("image profile carries the service's declarations: %+v", ip)
	}
	if _, err := LoadProfileRef(ctx, js, digest+"@nope"); err != ErrNoProfile {
		t.Errorf("unknown version: %v", err)
	}
	_ = containv1.SchemaVersion
}
