package analyzer

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/containsec/contain/collector"
	"github.com/containsec/contain/enricher"
	"github.com/containsec/contain/internal/imagecfg"
	"github.com/containsec/contain/internal/metrics"
	"github.com/containsec/contain/internal/testenv"
	"github.com/containsec/contain/schemas/containv1"
)

// peerNetns makes the test's network: web's namespace joined by veth
// pairs to db's (10.231.0.2 <-> 10.231.0.3) and to a third namespace with
// no container (10.231.1.2 <-> 10.231.1.4). Only namespaces it creates.
func peerNetns(t *testing.T) (web, db string) {
	t.Helper()
	ip := testenv.RequireCommand(t, "ip")
	run := func(args ...string) {
		t.Helper()
		if out, err := exec.Command(ip, args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %v: %v: %s", args, err, out)
		}
	}
	suffix := strconv.Itoa(os.Getpid())
	web, db, other := "cpw-"+suffix, "cpd-"+suffix, "cpo-"+suffix
	for _, ns := range []string{web, db, other} {
		run("netns", "add", ns)
		t.Cleanup(func() { _ = exec.Command(ip, "netns", "del", ns).Run() })
		run("-n", ns, "link", "set", "lo", "up")
	}
	link := func(a, aIf, aAddr, b, bIf, bAddr string) {
		run("-n", a, "link", "add", aIf, "type", "veth", "peer", "name", bIf, "netns", b)
		run("-n", a, "addr", "add", aAddr, "dev", aIf)
		run("-n", b, "addr", "add", bAddr, "dev", bIf)
		run("-n", a, "link", "set", aIf, "up")
		run("-n", b, "link", "set", bIf, "up")
	}
	link(web, "todb", "10.231.0.2/24", db, "toweb", "10.231.0.3/24")
	link(web, "toother", "10.231.1.2/24", other, "toweb", "10.231.1.4/24")
	return web, db
}

// TestComposePeersEndToEnd: two runc containers labelled as compose
// services web and db of project "peers" (web depends_on db), each in a
// network namespace of the test; the real collector, enricher (compose
// file, registry disabled, the image declaration already in KV) and
// analyzer over embedded NATS. web connecting to db raises nothing; web
// connecting to a third address raises net.peer.undeclared while the
// baseline is still learning.
func TestComposePeersEndToEnd(t *testing.T) {
	testenv.RequireRoot(t)
	testenv.RequireCommand(t, "runc")
	webNS, dbNS := peerNetns(t)
	_, _, js := testenv.NATS(t)
	ctx := context.Background()
	const ref = "shop/app:1"
	digest := "sha256:" + strings.Repeat("ab", 32)

	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: enricher.DefaultImagesBucket, History: 1})
	if err != nil {
		t.Fatal(err)
	}
	decl, _ := json.Marshal(&imagecfg.Declaration{Digest: digest, Ref: ref, Source: "oci_layout"})
	if _, err := kv.Put(ctx, enricher.DigestKey(digest), decl); err != nil {
		t.Fatal(err)
	}
	composeFile := filepath.Join(t.TempDir(), "compose.yaml")
	if err := os.WriteFile(composeFile, []byte("name: peers\nservices:\n  web:\n    image: "+ref+"\n    depends_on: [db]\n  db:\n    image: "+ref+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}

	ecfg := enricher.DefaultConfig()
	ecfg.Workers = 1
	ecfg.FetchWait = 50 * time.Millisecond
	ecfg.Registry.Enabled = false
	ecfg.ComposeFiles = []string{composeFile}
	enr, err := enricher.New(ecfg, js, metrics.New(), testenv.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	testenv.Go(t, 10*time.Second, enr.Run)

	acfg := DefaultConfig()
	acfg.LearningWindow = time.Hour // still learning: peers are declarations
	acfg.BaselinesBucket = ""
	// The connects below run through `runc exec`: exec sessions, scored as
	// the container's own here.
	acfg.ExecSessions = ExecSessionsContainer
	an, _, _ := startAnalyzer(t, js, acfg)
	alerts := newAlertsReader(t, js)

	ccfg := collector.DefaultConfig()
	ccfg.Host = "peers-host"
	ccfg.FlushInterval = 20 * time.Millisecond
	col, err := collector.New(ccfg, js, metrics.New(), testenv.Logger(t))
	if err != nil {
		if errors.Is(err, ebpf.ErrNotSupported) {
			testenv.Unavailable(t, "eBPF hooks: "+err.Error())
		}
		t.Fatal(err)
	}
	testenv.Go(t, 10*time.Second, col.Run)

	spec := func(service, netns string, args ...string) testenv.ContainerSpec {
		return testenv.ContainerSpec{
			Args: args,
			Annotations: map[string]string{"org.opencontainers.image.ref.name": ref, "org.opencontainers.image.digest": digest,
				enricher.LabelComposeProject: "peers", enricher.LabelComposeService: service},
			Edit: func(cfg map[string]any) {
				linux := cfg["linux"].(map[string]any)
				for _, ns := range linux["namespaces"].([]any) {
					if m := ns.(map[string]any); m["type"] == "network" {
						m["path"] = "/var/run/netns/" + netns
					}
				}
			},
		}
	}
	testenv.RunContainer(t, "db", spec("db", dbNS, "/bin/sh", "-c", "while true; do nc -l -p 5432 </dev/null; done"))
	web := testenv.RunContainer(t, "web", spec("web", webNS))

	// The enricher publishes web's service profile with db's address.
	pkv, err := js.KeyValue(ctx, enricher.DefaultProfilesBucket)
	deadline := time.Now().Add(20 * time.Second)
	for found := false; !found; {
		if time.Now().After(deadline) {
			t.Fatal("timed out waiting for web's profile with peer_addresses [10.231.0.3]")
		}
		time.Sleep(50 * time.Millisecond)
		if err != nil {
			pkv, err = js.KeyValue(ctx, enricher.DefaultProfilesBucket)
			continue
		}
		keys, _ := pkv.ListKeys(ctx)
		if keys == nil {
			continue
		}
		for k := range keys.Keys() {
			e, gerr := pkv.Get(ctx, k)
			if gerr != nil {
				continue
			}
			p, derr := enricher.DecodeProfile(e.Value())
			if derr == nil && p.ComposeService == "web" && slices.Equal(p.PeerAddresses, []string{"10.231.0.3"}) {
				found = true
			}
		}
	}

	if out, err := web.Exec(10*time.Second, "nc", "-w", "2", "10.231.0.3", "5432"); err != nil {
		t.Logf("nc to db: %v: %s", err, out)
	}
	_, _ = web.Exec(10*time.Second, "nc", "-w", "2", "10.231.1.4", "5432") // refused: nobody listens
	undeclared := func(evs []*containv1.Event, addr string) bool {
		for _, ev := range evs {
			for _, r := range ev.GetAlert().GetReasons() {
				if r.Code == CodePeerUndeclared && strings.Contains(r.Message, addr+":") {
					return true
				}
			}
		}
		return false
	}
	alerts.waitFor(20*time.Second, "net.peer.undeclared for 10.231.1.4", func(evs []*containv1.Event) bool {
		return undeclared(evs, "10.231.1.4")
	})
	// The connect to db was seen (learned as a peer) and raised nothing:
	// alerts are read in stream order, up to the later 10.231.1.4 one.
	deadline = time.Now().Add(10 * time.Second)
	for learned := false; !learned; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("web's connect to db 10.231.0.3:5432 never reached the analyzer")
		}
		an.Engine(func(e *Engine) {
			if b := e.images[digest]; b != nil {
				_, learned = b.Peers["10.231.0.3:5432"]
			}
		})
	}
	if undeclared(alerts.got, "10.231.0.3") {
		t.Error("connecting to the declared peer db raised net.peer.undeclared")
	}
	for _, ev := range alerts.got {
		if undeclared([]*containv1.Event{ev}, "10.231.1.4") && !strings.HasPrefix(ev.ContainerId, "web-") {
			t.Errorf("alert on container %s, want web's", ev.ContainerId)
		}
	}
}
