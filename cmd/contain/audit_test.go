package main

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/containsec/contain/enricher"
	"github.com/containsec/contain/internal/bus"
	"github.com/containsec/contain/internal/metrics"
	"github.com/containsec/contain/internal/testenv"
	"github.com/containsec/contain/schemas/containv1"
)

// TestAuditRunning: an image in an in-process registry runs in a container
// the real enricher has seen; `contain audit --running` finds it through
// the enricher's containers bucket, audits it and gates on severity.
func TestAuditRunning(t *testing.T) {
	a := deployNATS(t)
	url := a.url
	_, js := a.conn("enricher")
	_, cjs := a.conn("collector-node-a")
	srv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	t.Cleanup(srv.Close)
	regHost := strings.TrimPrefix(srv.URL, "http://")

	img, err := random.Image(256, 1)
	if err != nil {
		t.Fatal(err)
	}
	cf, _ := img.ConfigFile()
	cf = cf.DeepCopy()
	cf.Config = v1.Config{Cmd: []string{"/app"}, ExposedPorts: map[string]struct{}{"22/tcp": {}}}
	cf.History = []v1.History{{CreatedBy: "RUN apt-get install -y openssh-server"}}
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		t.Fatal(err)
	}
	ref := regHost + "/shop/legacy:latest"
	r, _ := name.ParseReference(ref, name.Insecure)
	if err := remote.Write(r, img); err != nil {
		t.Fatal(err)
	}

	// The real enricher learns the container from a collector-style batch.
	ecfg := enricher.DefaultConfig()
	ecfg.Workers = 0
	e, err := enricher.New(ecfg, js, metrics.New(), testenv.Discard())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = e.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	ids := containv1.NewIDGen()
	ev := &containv1.Event{Id: ids.Next(), Host: "node-a", ContainerId: "legacy-1", Kind: containv1.Kind_KIND_CONTAINER,
		WallNs: time.Now().UnixNano(), SchemaVersion: containv1.SchemaVersion,
		Body: &containv1.Event_Container{Container: &containv1.ContainerInfo{Runtime: "runc",
			Labels: map[string]string{"org.opencontainers.image.ref.name": ref}}}}
	if err := bus.Publish(ctx, cjs, containv1.RawSubject("node-a"), bus.NewProducer("node-a", "collector").Batch([]*containv1.Event{ev})); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 10*time.Second, "the enricher to record the container", func() bool {
		recs, _, err := enricher.RunningImages(ctx, js, ecfg.ContainersBucket, "node-a")
		return err == nil && len(recs) == 1
	})

	t.Setenv("CONTAIN_AUDIT_REGISTRY_INSECURE", regHost)
	t.Setenv("CONTAIN_AUDIT_REGISTRY_KEYCHAIN", "false")
	out, err := runCLI(t, "audit", "--running", "--host", "node-a", "--nats-url", url, "--format", "json", "--fail-on", "high")
	var ee exitError
	if !errors.As(err, &ee) || ee.code != 3 {
		t.Fatalf("want exit 3 from the severity gate, got %v\n%s", err, out)
	}
	var findings []enricher.Finding
	if err := json.Unmarshal([]byte(out[:strings.LastIndex(out, "]")+1]), &findings); err != nil {
		t.Fatalf("audit JSON: %v\n%s", err, out)
	}
	rules := map[string]bool{}
	for _, f := range findings {
		if !strings.HasPrefix(f.Image, ref) {
			t.Errorf("finding for %q, want %q", f.Image, ref)
		}
		rules[f.Rule] = true
	}
	for _, want := range []string{"no_user", "latest_tag", "apt_install_without_update", "debug_port_exposed"} {
		if !rules[want] {
			t.Errorf("missing finding %s in %v", want, rules)
		}
	}
	// Nothing running on another host: a clear error, not an empty pass.
	if _, err := runCLI(t, "audit", "--running", "--host", "node-9", "--nats-url", url); err == nil || !strings.Contains(err.Error(), "--running") {
		t.Fatalf("audit --running with no images: %v", err)
	}
}
