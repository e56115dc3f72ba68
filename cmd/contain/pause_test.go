package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containsec/contain/internal/testenv"
	"github.com/containsec/contain/schemas/containv1"
)

// TestPauseAfterFloodAndRename: two attacks on the exemptions a collector
// and an analyzer could grant, through the real pipeline at the default
// pause threshold, with the responder really freezing.
//   - flood then exec: a container floods file records past its in-kernel
//     rate limit, then runs an executable its image never ran: the exec is
//     never rate limited, so it is alerted and the container paused.
//   - rename: a container process names itself like runc's init
//     ("runc:[2:INIT]") and mounts a tmpfs: origin comes from lineage, not
//     from the name, so the mount is the container's and it is paused.
func TestPauseAfterFloodAndRename(t *testing.T) {
	testenv.RequireRoot(t)
	natsURL, nc, _ := testenv.NATS(t)
	log := testenv.Logger(t)
	const learning = 5 * time.Second
	host := "pause-host"

	// The impostor: a static program the image runs from the start (so it
	// is learned), which renames itself and mounts once told to.
	impostorDir := t.TempDir()
	impostor := filepath.Join(impostorDir, "impostor")
	build := exec.Command("go", "build", "-o", impostor, "./testdata/impostor")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building the impostor: %v: %s", err, out)
	}

	// What the pipeline said about these containers.
	var mu sync.Mutex
	rateLimited := map[string]uint64{}
	alerts := map[string][]string{}
	watchEvents(t, nc, &mu, func(ev *containv1.Event) {
		if l := ev.GetLoss(); l != nil && l.Reason == "rate_limited" {
			rateLimited[ev.ContainerId] += l.Count
		}
		alerts[ev.ContainerId] = append(alerts[ev.ContainerId], alertLines(ev)...)
	}, containv1.RawSubject(host), containv1.AlertsSubject(host))

	cfg := defaultConfig()
	cfg.Host = host
	cfg.NATS.URL = natsURL
	cfg.Metrics.Listen = "127.0.0.1:0"
	cfg.Analyzer.LearningWindow = learning
	cfg.Enricher.Registry.Enabled = false
	// A low in-kernel rate limit, so that the flood below exceeds it.
	cfg.Collector.RatePerSec = 200
	cfg.Collector.RateBurst = 400
	cfg.propagate()
	stages := []string{stageResponder, stageAnalyzer, stageEnricher, stageCollector}
	t.Cleanup(startStages(t, &cfg, stages, log))
	time.Sleep(time.Second)

	image := func(name string) map[string]string {
		return map[string]string{
			"org.opencontainers.image.ref.name": "attack/" + name + ":1",
			"org.opencontainers.image.digest":   "sha256:" + strings.Repeat(fmt.Sprintf("%02x", len(name)), 32),
		}
	}
	// The flooder learns its writes (a small flood) and its wait, then,
	// told to, floods and runs wget.
	flooder := testenv.RunContainer(t, "flood", testenv.ContainerSpec{
		Args: []string{"/bin/sh", "-c", `flood() { i=0; while [ $i -lt $1 ]; do echo x >/tmp/f$((i % 50)); i=$((i+1)); done; }
flood 100
while [ ! -e /tmp/go ]; do sleep 0.2; done
flood 20000
/bin/wget --help
sleep 1000000`},
		Annotations: image("flooder"),
	})
	renamed := testenv.PrepareContainer(t, "rename", testenv.ContainerSpec{
		Args:        []string{"/bin/impostor"},
		Annotations: image("impostor-app"),
	})
	bin, err := os.ReadFile(impostor)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(renamed.Rootfs, "bin", "impostor"), bin, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := renamed.Start(); err != nil {
		t.Fatal(err)
	}

	time.Sleep(learning + 3*time.Second) // learning is a span of event time
	for _, c := range []*testenv.Container{flooder, renamed} {
		if s, _ := c.FreezerState(); s != "THAWED" {
			t.Fatalf("%s is %s after learning, before any attack", c.ID, s)
		}
	}
	for _, c := range []*testenv.Container{flooder, renamed} {
		if err := os.WriteFile(filepath.Join(c.Rootfs, "tmp", "go"), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range []*testenv.Container{flooder, renamed} {
		testenv.WaitFor(t, 60*time.Second, c.ID+" frozen", func() bool {
			s, _ := c.FreezerState()
			return s == "FROZEN"
		})
	}
	// The rate limit's loss is reported every collector.loss_interval (10s
	// by default), so it may come well after the freeze; the alerts reach
	// the watch apart from the responder.
	for deadline := time.Now().Add(cfg.Collector.LossInterval + 5*time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		mu.Lock()
		seen := rateLimited[flooder.ID] > 0 && anyHas(alerts[flooder.ID], "exec.unseen", "/bin/wget") && anyHas(alerts[renamed.ID], "escape.mount", "")
		mu.Unlock()
		if seen {
			break
		}
	}
	mu.Lock()
	defer mu.Unlock()
	t.Logf("flooder: %d records refused by its rate limit; alerts: %q", rateLimited[flooder.ID], alerts[flooder.ID])
	t.Logf("renamed: alerts: %q", alerts[renamed.ID])
	if rateLimited[flooder.ID] == 0 {
		t.Error("the flood never exceeded the container's rate limit: the test proves nothing")
	}
	if !anyHas(alerts[flooder.ID], "exec.unseen", "/bin/wget") {
		t.Errorf("the flooder's wget after its flood was not alerted: %q", alerts[flooder.ID])
	}
	if !anyHas(alerts[renamed.ID], "escape.mount", "") {
		t.Errorf("the renamed process's mount was not alerted as escape.mount: %q", alerts[renamed.ID])
	}
}

func anyHas(list []string, code, sub string) bool {
	for _, s := range list {
		if strings.HasPrefix(s, code+" ") && strings.Contains(s, sub) {
			return true
		}
	}
	return false
}
