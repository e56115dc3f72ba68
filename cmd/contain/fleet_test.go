package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containsec/contain/internal/testenv"
	"github.com/containsec/contain/schemas/containv1"
)

// fleetWorkload is a service-like program, everything an operator's
// healthy service does that the held-out precision audit names (design
// 028): an entrypoint that writes its caches and content at start; a web
// server forking a worker per request (busybox httpd), hit by a client
// loop; temp files created and removed on a tmpfs; a log appended and
// rotated by rename, another by copytruncate below /var/log; a periodic
// job (every other round) whose helper shell runs an interpreter (awk);
// a cleaner deleting 60 temp files at once (the other rounds), which
// file.bulk_delete counts and the baseline learns. Everything it does is
// learned during the learning window: its whole cycle (a copytruncate
// over the previous copy comes at round 6) takes under half of it even
// on a loaded CI machine.
const fleetWorkload = `mkdir -p /var/cache/app /srv/www /var/log/app /scratch; echo ok > /srv/www/index.html
cp /etc/hostname /var/cache/app/host
httpd -p 8080 -h /srv/www
i=0; while true; do
  cat /etc/hostname >/dev/null; date >>/tmp/app.log; ls /var/www >/dev/null
  wget -q -O /dev/null http://127.0.0.1:8080/ 2>/dev/null
  t=$(mktemp /scratch/job.XXXXXX); echo $i > $t; rm -f $t
  echo "$i GET /" >> /var/log/app/access.log
  i=$((i+1)); if [ $((i % 3)) = 0 ]; then mv /tmp/app.log /tmp/app.log.1; fi
  if [ $((i % 3)) = 0 ]; then cp /var/log/app/access.log /var/log/app/access.log.1; : > /var/log/app/access.log; fi
  if [ $((i % 2)) = 0 ]; then sh -c 'awk "{n++} END {print n}" /var/log/app/access.log > /var/cache/app/count'; fi
  if [ $((i % 2)) = 1 ]; then for j in $(seq 1 60); do echo > /scratch/c.$j; done; rm -f /scratch/c.*; fi
  sleep 0.4
done`

// fleetHealth is an operator's health check, run by exec.
const fleetHealth = "wget -q -O /dev/null http://127.0.0.1:8080/ && ps >/dev/null"

// fleetWatch collects, from the alerts and actions subjects, what the
// pipeline decided about the test's containers.
type fleetWatch struct {
	mu     sync.Mutex
	prefix string
	high   []string // alerts at or above 0.5
	pauses []string // pause decisions (dry run or real)
	low    int      // alerts below 0.5 (exec sessions are recorded so)
}

// onEvent is called with w.mu held.
func (w *fleetWatch) onEvent(ev *containv1.Event) {
	if !strings.HasPrefix(ev.ContainerId, w.prefix) && !strings.HasPrefix(ev.ContainerName, w.prefix) {
		return
	}
	switch {
	case ev.GetAlert() != nil:
		a := ev.GetAlert()
		if a.Score < 0.5 {
			w.low++
			return
		}
		var codes []string
		for _, r := range a.Reasons {
			codes = append(codes, r.Code+": "+r.Message)
		}
		w.high = append(w.high, fmt.Sprintf("%s score %.2f: %s", ev.ContainerId, a.Score, strings.Join(codes, "; ")))
	case ev.GetAction() != nil && ev.GetAction().Type == containv1.Action_TYPE_PAUSE &&
		ev.GetAction().Result != containv1.Action_RESULT_SKIPPED:
		// A skipped action is the responder deciding not to pause
		// (below threshold); a dry run, a pause or a failed one is a
		// decision to pause.
		w.pauses = append(w.pauses, fmt.Sprintf("%s %s: %s", ev.ContainerId, ev.GetAction().Result, ev.GetAction().Reason))
	}
}

func (w *fleetWatch) report(t *testing.T, phase string) {
	t.Helper()
	w.mu.Lock()
	defer w.mu.Unlock()
	t.Logf("after %s: %d alerts >= 0.5, %d pause decisions, %d alerts < 0.5", phase, len(w.high), len(w.pauses), w.low)
}

// TestFleetLifecycleNoFalsePause runs the lifecycle of a fleet through a
// real pipeline (eBPF collector, enricher, analyzer, responder in dry run,
// counting its decisions): a container already running when contain
// starts, learning, 20 replicas started at the same instant, operator exec
// sessions, restarts and re-creates, freezes and releases, a restart of
// contain itself, a rolling update to a new image version, scale down and
// up, and the same for docker and podman containers (where they run; CI
// installs both). None
// of it may raise an alert at or above 0.5 or a pause decision.
//
// CONTAIN_FLEET_MINUTES=30 repeats the lifecycle rounds for that long.
func TestFleetLifecycleNoFalsePause(t *testing.T) {
	testenv.RequireRoot(t)
	natsURL, nc, _ := testenv.NATS(t)
	log := testenv.Logger(t)
	const learning = 8 * time.Second
	host := "fleet-host"
	prefix := fmt.Sprintf("fleet%d", os.Getpid())

	w := &fleetWatch{prefix: prefix}
	watchEvents(t, nc, &w.mu, w.onEvent, containv1.AlertsSubject(host), containv1.ActionsSubject(host))

	cfg := defaultConfig()
	cfg.Host = host
	cfg.NATS.URL = natsURL
	cfg.Metrics.Listen = "127.0.0.1:0"
	cfg.Analyzer.LearningWindow = learning
	cfg.Responder.DryRun = true
	cfg.Enricher.Registry.Enabled = false
	// The engines are configured as on a user's host, so docker's
	// containers are known by their image, not each its own baseline.
	var engines *testenv.Engines
	if os.Getenv("CONTAIN_TEST_DOCKER_HOST") != "" {
		e := testenv.RequireEngines(t)
		engines = &e
		cfg.Collector.DockerHost = e.DockerHost
		cfg.Collector.DockerRoot = e.DockerRoot
		cfg.Collector.ContainerdAddress = e.Containerd
	}
	cfg.propagate()
	stages := []string{stageResponder, stageAnalyzer, stageEnricher, stageCollector}
	var stop func()
	start := func() { stop = startStages(t, &cfg, stages, log) }

	image := func(version string) testenv.ContainerSpec {
		return testenv.ContainerSpec{
			Args: []string{"/bin/sh", "-c", fleetWorkload},
			// A writable tmpfs for the workload's temp files.
			Edit: func(cfg map[string]any) {
				cfg["mounts"] = append(cfg["mounts"].([]any), map[string]any{
					"destination": "/scratch", "type": "tmpfs", "source": "tmpfs", "options": []any{"nosuid", "nodev", "size=16m"},
				})
			},
			Annotations: map[string]string{
				"org.opencontainers.image.ref.name": "fleet/app:" + version,
				"org.opencontainers.image.digest":   "sha256:" + strings.Repeat(version[:2], 32),
			},
		}
	}
	v1, v2 := image("a1"), image("b2")
	n := 0
	name := func() string { n++; return fmt.Sprintf("%s-%d", prefix, n) }
	startAll := func(cs []*testenv.Container) {
		t.Helper()
		var wg sync.WaitGroup
		gate := make(chan struct{})
		errs := make(chan error, len(cs))
		for _, c := range cs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-gate
				errs <- c.Start()
			}()
		}
		close(gate) // every replica starts at the same instant
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Fatal(err)
			}
		}
	}
	replicas := func(spec testenv.ContainerSpec, k int) []*testenv.Container {
		cs := make([]*testenv.Container, k)
		for i := range cs {
			cs[i] = testenv.PrepareContainer(t, name(), spec)
		}
		startAll(cs)
		return cs
	}

	// A container (and an exec session in it) already running when contain
	// first starts.
	early := testenv.RunContainer(t, name(), v1)
	go func() { _, _ = early.Exec(learning*3, "/bin/sleep", strconv.Itoa(int(learning.Seconds()*2))) }()
	time.Sleep(500 * time.Millisecond)
	start()
	defer func() { stop() }()

	// Learning: two replicas of v1 run through the learning window, with
	// everything their lifecycle does (start, a restart, an exec session).
	seed := replicas(v1, 2)
	time.Sleep(learning / 2)
	seed[1].Remove()
	if err := seed[1].Start(); err != nil {
		t.Fatal(err)
	}
	_, _ = seed[0].Exec(10*time.Second, "/bin/ls", "/")
	time.Sleep(learning/2 + 3*time.Second)
	w.report(t, "learning")

	var pod *testenv.Podman
	if _, err := exec.LookPath("podman"); err == nil || os.Getenv("CI") != "" {
		p := testenv.RequirePodman(t)
		pod = &p
	}
	var dockerSeed, podmanSeed *testenv.EngineContainer
	if engines != nil {
		dockerSeed = engines.DockerRun(t, name(), []string{"--tmpfs", "/scratch"}, "/bin/sh", "-c", fleetWorkload)
	}
	if pod != nil {
		podmanSeed = pod.PodmanRun(t, name(), []string{"--tmpfs", "/scratch"}, "/bin/sh", "-c", fleetWorkload)
	}
	if engines != nil || pod != nil {
		time.Sleep(learning + 2*time.Second)
	}

	minutes, _ := strconv.Atoi(os.Getenv("CONTAIN_FLEET_MINUTES"))
	deadline := time.Now().Add(time.Duration(minutes) * time.Minute)
	for round := 1; ; round++ {
		// 20 replicas of the learned image, started at the same instant.
		fleet := replicas(v1, 20)
		time.Sleep(3 * time.Second)
		w.report(t, fmt.Sprintf("round %d: 20 concurrent replicas", round))

		// Operator exec sessions and health checks.
		for _, c := range fleet[:4] {
			if out, err := c.Exec(10*time.Second, "/bin/sh", "-c", "ps; cat /etc/passwd; ls -la /tmp; id"); err != nil {
				t.Errorf("runc exec: %v: %s", err, out)
			}
			if out, err := c.Exec(10*time.Second, "/bin/sh", "-c", fleetHealth); err != nil {
				t.Errorf("runc exec health check: %v: %s", err, out)
			}
		}
		// Kill and re-create under the same id; stop and start.
		for _, c := range fleet[4:7] {
			c.Remove()
			if err := c.Start(); err != nil {
				t.Fatal(err)
			}
		}
		// Freeze and release (a human's runc pause, a long stop).
		for _, c := range fleet[7:9] {
			_ = runCmd("runc", "pause", c.ID)
		}
		time.Sleep(2 * time.Second)
		for _, c := range fleet[7:9] {
			_ = runCmd("runc", "resume", c.ID)
		}
		time.Sleep(2 * time.Second)
		w.report(t, fmt.Sprintf("round %d: exec sessions, re-creates, freezes", round))

		// A restart of contain itself (an upgrade) with the fleet running.
		stop()
		time.Sleep(time.Second)
		start()
		time.Sleep(5 * time.Second)
		w.report(t, fmt.Sprintf("round %d: contain restarted", round))

		// A rolling update: v2 replicas start while v1 keeps running, then
		// v1 scales down; then scale up again.
		next := replicas(v2, 5)
		time.Sleep(3 * time.Second)
		for _, c := range fleet[10:] {
			c.Remove()
		}
		more := replicas(v1, 5)
		time.Sleep(3 * time.Second)
		w.report(t, fmt.Sprintf("round %d: rolling update, scale down and up", round))

		// A replica started long after its siblings, the baseline
		// converged rounds ago.
		late := replicas(v1, 1)
		time.Sleep(3 * time.Second)
		w.report(t, fmt.Sprintf("round %d: a late replica", round))
		more = append(more, late...)

		if engines != nil {
			var ds []*testenv.EngineContainer
			var mu sync.Mutex
			var wg sync.WaitGroup
			for i := 0; i < 5; i++ {
				nm := name()
				wg.Add(1)
				go func() {
					defer wg.Done()
					c := engines.DockerRun(t, nm, []string{"--tmpfs", "/scratch"}, "/bin/sh", "-c", fleetWorkload)
					mu.Lock()
					ds = append(ds, c)
					mu.Unlock()
				}()
			}
			wg.Wait()
			_, _ = engines.Docker("exec", dockerSeed.ID, "/bin/sh", "-c", "ps; ls /")
			_, _ = engines.Docker("exec", dockerSeed.ID, "/bin/sh", "-c", fleetHealth)
			_, _ = engines.Docker("restart", "-t", "1", ds[0].ID)
			_, _ = engines.Docker("pause", ds[1].ID)
			time.Sleep(time.Second)
			_, _ = engines.Docker("unpause", ds[1].ID)
			time.Sleep(3 * time.Second)
			for _, c := range ds {
				_, _ = engines.Docker("rm", "-f", c.ID)
			}
			w.report(t, fmt.Sprintf("round %d: docker replicas, exec, restart, pause", round))
		}
		if pod != nil {
			var ps []*testenv.EngineContainer
			for i := 0; i < 3; i++ {
				ps = append(ps, pod.PodmanRun(t, name(), []string{"--tmpfs", "/scratch"}, "/bin/sh", "-c", fleetWorkload))
			}
			_, _ = pod.Run("exec", podmanSeed.ID, "/bin/sh", "-c", "ps; ls /")
			_, _ = pod.Run("restart", "-t", "1", ps[0].ID)
			time.Sleep(3 * time.Second)
			for _, c := range ps {
				_, _ = pod.Run("rm", "-f", "-t", "0", c.ID)
			}
			w.report(t, fmt.Sprintf("round %d: podman replicas, exec, restart", round))
		}
		for _, c := range append(append(fleet, next...), more...) {
			c.Remove()
		}
		if !time.Now().Before(deadline) {
			break
		}
	}

	time.Sleep(2 * time.Second) // let the last decisions arrive
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, a := range w.high {
		t.Errorf("lifecycle alert >= 0.5: %s", a)
	}
	for _, p := range w.pauses {
		t.Errorf("lifecycle pause decision: %s", p)
	}
}

func runCmd(name string, args ...string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	return exec.CommandContext(ctx, name, args...).Run()
}
