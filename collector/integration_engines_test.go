package collector

import (
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/containsec/contain/internal/metrics"
	"github.com/containsec/contain/internal/runtime"
	"github.com/containsec/contain/internal/testenv"
	"github.com/containsec/contain/schemas/containv1"
)

// enginesContainerdState is the test containerd's --state directory:
// deploy/engines/start.sh keeps it beside the socket.
func enginesContainerdState(t *testing.T, e testenv.Engines) string {
	t.Helper()
	dir := filepath.Join(filepath.Dir(e.Containerd), "containerd-state")
	if _, err := os.Stat(filepath.Join(dir, "io.containerd.runtime.v2.task")); err != nil {
		testenv.Unavailable(t, "the test containerd's state directory beside its socket (deploy/engines/start.sh): "+err.Error())
	}
	return dir
}

func engineCgroupID(t *testing.T, cgroupRoot string, c *testenv.EngineContainer) uint64 {
	t.Helper()
	fi, err := os.Stat(filepath.Join(cgroupRoot, c.Cgroup))
	if err != nil {
		t.Fatal(err)
	}
	return fi.Sys().(*syscall.Stat_t).Ino
}

// engineCmd runs two execs at the container's start (its first events,
// emitted while its metadata is looked up), then sleeps.
var engineCmd = []string{"/bin/sh", "-c", "/bin/true first; exec /bin/sleep 1000000"}

// ofContainer waits for the container's KIND_CONTAINER event and its
// first exec (/bin/true) and returns its events in order; it checks that
// every event of the container comes after its first KIND_CONTAINER
// and is stamped with its id.
func ofContainer(t *testing.T, raw *rawEvents, cgid uint64, id string) (info *containv1.Event, evs []*containv1.Event) {
	t.Helper()
	raw.waitFor(t, 15*time.Second, "KIND_CONTAINER and the first exec of "+id, func(all []*containv1.Event) bool {
		var sawInfo, sawExec bool
		for _, ev := range all {
			if ev.CgroupId != cgid {
				continue
			}
			sawInfo = sawInfo || ev.Kind == containv1.Kind_KIND_CONTAINER
			sawExec = sawExec || (ev.Kind == containv1.Kind_KIND_EXEC && ev.GetExec().GetFilename() == "/bin/true")
		}
		return sawInfo && sawExec
	})
	for _, ev := range raw.snapshot() {
		if ev.CgroupId != cgid {
			continue
		}
		if ev.ContainerId != id {
			t.Fatalf("event of cgroup %d stamped %q, want %q: %v", cgid, ev.ContainerId, id, ev)
		}
		if info == nil {
			if ev.Kind != containv1.Kind_KIND_CONTAINER {
				t.Fatalf("%s event of %s before its KIND_CONTAINER: %v", ev.Kind, id, ev)
			}
			info = ev
		}
		evs = append(evs, ev)
	}
	return info, evs
}

// hasExec reports whether evs hold the exec of filename with argv.
func hasExec(evs []*containv1.Event, filename string, argv ...string) bool {
	return slices.ContainsFunc(evs, func(ev *containv1.Event) bool {
		x := ev.GetExec()
		return ev.Kind == containv1.Kind_KIND_EXEC && x.GetFilename() == filename && slices.Equal(x.Argv, argv)
	})
}

func metadataErrors(m *metrics.Metrics, engine, reason string) float64 {
	return testutil.ToFloat64(m.Errors.WithLabelValues(metrics.StageCollector, "metadata_"+engine+"_"+reason))
}

// TestIntegrationEngineMetadata: a real docker container and a real
// containerd container (ctr run at /<namespace>/<id>) are announced with
// what their engines' APIs say (name, image reference, id and digest,
// labels, Kubernetes pod, namespace and container name from the OCI
// annotations), and their first execs, which ran while the engine was
// asked, are all published after the announcement.
// fakeDigest is what a spoofing image label or annotation claims.
var fakeDigest = "sha256:" + strings.Repeat("f", 64)

func TestIntegrationEngineMetadata(t *testing.T) {
	e := testenv.RequireEngines(t)
	state := enginesContainerdState(t, e)
	cfgRoot := testenv.Cgroup2Root
	_, js, m := startCollector(t, func(c *Config) {
		c.DockerHost = e.DockerHost
		c.DockerRoot = e.DockerRoot
		c.ContainerdAddress = e.Containerd
		c.ContainerdState = state
	})
	raw := consumeRaw(t, js)
	imageID, err := e.Docker("image", "inspect", "-f", "{{.Id}}", testenv.EnginesImage)
	if err != nil {
		t.Fatal(err)
	}

	t.Run("docker", func(t *testing.T) {
		d := e.DockerRun(t, "col-eng-docker", []string{"--label", "team=payments", "--label", "com.docker.compose.service=web",
			"--label", runtime.LabelImageDigest + "=" + fakeDigest, "--label", runtime.LabelImageRef + "=evil:1"}, engineCmd...)
		info, evs := ofContainer(t, raw, engineCgroupID(t, cfgRoot, d), d.ID)
		ci := info.GetContainer()
		if ci.ImageRef != testenv.EnginesImage || ci.ImageId != imageID || ci.Name != "col-eng-docker" ||
			ci.ImageDigest == fakeDigest || ci.Labels[runtime.LabelImageDigest] == fakeDigest {
			t.Fatalf("identity of %s: ref %q id %q digest %q name %q, labels %v: want the engine's, never a label's", d.ID, ci.ImageRef, ci.ImageId, ci.ImageDigest, ci.Name, ci.Labels)
		}
		if ci.Runtime != runtime.Docker || info.ContainerName != "col-eng-docker" || ci.CgroupPath != d.Cgroup ||
			ci.Labels["team"] != "payments" || ci.Labels["com.docker.compose.service"] != "web" ||
			ci.Labels[runtime.LabelImageRef] != testenv.EnginesImage || ci.Labels[runtime.LabelImageID] != imageID ||
			ci.Labels[runtime.LabelContainerName] != "col-eng-docker" || ci.InitPid != uint32(d.Pid) {
			t.Fatalf("KIND_CONTAINER of %s: %v (name %q), want pid %d image id %s", d.ID, ci, info.ContainerName, d.Pid, imageID)
		}
		if !hasExec(evs, "/bin/sh", engineCmd...) || !hasExec(evs, "/bin/true", "/bin/true", "first") {
			t.Fatalf("first execs of %s missing: %v", d.ID, evs)
		}
	})

	t.Run("containerd", func(t *testing.T) {
		c := e.ContainerdRun(t, "col-eng-ctd", []string{
			"--label", "team=payments",
			"--label", runtime.LabelImageDigest + "=" + fakeDigest,
			"--annotation", runtime.LabelImageID + "=" + fakeDigest,
			"--annotation", "io.kubernetes.cri.sandbox-name=web-0",
			"--annotation", "io.kubernetes.cri.sandbox-namespace=shop",
			"--annotation", "io.kubernetes.cri.container-name=nginx",
		}, engineCmd...)
		if c.Cgroup != "/"+testenv.EnginesNamespace+"/"+c.ID {
			t.Fatalf("ctr's cgroup %q: not /<namespace>/<id>", c.Cgroup)
		}
		info, evs := ofContainer(t, raw, engineCgroupID(t, cfgRoot, c), c.ID)
		ci := info.GetContainer()
		if ci.Runtime != runtime.Containerd || info.ContainerName != "nginx" || ci.Pod != "web-0" || ci.Namespace != "shop" ||
			ci.Labels["team"] != "payments" || ci.Labels[runtime.LabelImageRef] != "docker.io/"+testenv.EnginesImage ||
			ci.Labels[runtime.LabelImageID] != imageID || !strings.HasPrefix(ci.Labels[runtime.LabelImageDigest], "sha256:") ||
			ci.InitPid != uint32(c.Pid) || ci.Bundle == "" {
			t.Fatalf("KIND_CONTAINER of %s: %v (name %q), want pid %d image id %s", c.ID, ci, info.ContainerName, c.Pid, imageID)
		}
		if ci.ImageRef != "docker.io/"+testenv.EnginesImage || ci.ImageId != imageID || !strings.HasPrefix(ci.ImageDigest, "sha256:") ||
			ci.ImageDigest == fakeDigest || ci.Labels[runtime.LabelImageDigest] == fakeDigest {
			t.Fatalf("identity of %s: ref %q id %q digest %q: want the engine's, never a label's", c.ID, ci.ImageRef, ci.ImageId, ci.ImageDigest)
		}
		if !hasExec(evs, "/bin/sh", engineCmd...) || !hasExec(evs, "/bin/true", "/bin/true", "first") {
			t.Fatalf("first execs of %s missing: %v", c.ID, evs)
		}
	})
	for _, eng := range []string{runtime.EngineDocker, runtime.EngineContainerd} {
		for _, r := range []string{"unreachable", "timeout", "error", "queue_full"} {
			if n := metadataErrors(m, eng, r); n != 0 {
				t.Errorf("%s lookups failed (%s): %v", eng, r, n)
			}
		}
	}
}

// TestIntegrationEngineUnreachable: with both engines' sockets missing,
// docker and containerd containers are still identified from what the
// engines keep on disk, and the failed lookups are counted.
func TestIntegrationEngineUnreachable(t *testing.T) {
	e := testenv.RequireEngines(t)
	state := enginesContainerdState(t, e)
	cfgRoot := testenv.Cgroup2Root
	bad := filepath.Join(t.TempDir(), "gone.sock")
	_, js, m := startCollector(t, func(c *Config) {
		c.DockerHost = "unix://" + bad
		c.DockerRoot = e.DockerRoot
		c.ContainerdAddress = bad
		c.ContainerdState = state
	})
	raw := consumeRaw(t, js)

	d := e.DockerRun(t, "col-eng-down", []string{"--label", "team=payments"}, engineCmd...)
	info, evs := ofContainer(t, raw, engineCgroupID(t, cfgRoot, d), d.ID)
	ci := info.GetContainer()
	if ci.Runtime != runtime.Docker || info.ContainerName != "col-eng-down" || ci.Labels["team"] != "payments" ||
		ci.Labels[runtime.LabelImageRef] != testenv.EnginesImage || !strings.HasPrefix(ci.Labels[runtime.LabelImageID], "sha256:") {
		t.Fatalf("docker container from disk: %v (name %q)", ci, info.ContainerName)
	}
	if !hasExec(evs, "/bin/true", "/bin/true", "first") {
		t.Fatalf("first exec of %s missing", d.ID)
	}

	c := e.ContainerdRun(t, "col-eng-ctd-down", []string{"--annotation", "io.kubernetes.cri.sandbox-name=web-1"}, engineCmd...)
	info, evs = ofContainer(t, raw, engineCgroupID(t, cfgRoot, c), c.ID)
	ci = info.GetContainer()
	if ci.Runtime != runtime.Containerd || ci.Pod != "web-1" || ci.InitPid != uint32(c.Pid) {
		t.Fatalf("containerd container from disk: %v", ci)
	}
	if !hasExec(evs, "/bin/true", "/bin/true", "first") {
		t.Fatalf("first exec of %s missing", c.ID)
	}
	for _, eng := range []string{runtime.EngineDocker, runtime.EngineContainerd} {
		if n := metadataErrors(m, eng, "unreachable") + metadataErrors(m, eng, "backoff"); n < 1 {
			t.Errorf("%s: no failed lookup counted", eng)
		}
	}
}

// hangingSocket listens on a unix socket, accepts and never answers: an
// engine that hangs (a stalling proxy never released).
func hangingSocket(t *testing.T) string {
	t.Helper()
	return newStallingProxy(t, "").path
}

// TestIntegrationEngineHangs: engines that accept and never answer do not
// block the collector: another container's exec is published while the
// lookups hang, the docker container is announced from disk once the
// lookup times out (collector.engine_timeout), and the timeout is counted.
func TestIntegrationEngineHangs(t *testing.T) {
	e := testenv.RequireEngines(t)
	cfgRoot := testenv.Cgroup2Root
	sock := hangingSocket(t)
	const timeout = 1500 * time.Millisecond
	_, js, m := startCollector(t, func(c *Config) {
		c.DockerHost = "unix://" + sock
		c.DockerRoot = e.DockerRoot
		c.ContainerdAddress = sock
		c.ContainerdState = ""
		c.EngineTimeout = timeout
	})
	raw := consumeRaw(t, js)
	other := testenv.RunContainer(t, "col-eng-other", testenv.ContainerSpec{})

	d := e.DockerRun(t, "col-eng-hang", []string{"--label", "team=payments"}, engineCmd...)
	started := time.Now()
	if out, err := other.Exec(10*time.Second, "/bin/echo", "while-hanging"); err != nil {
		t.Fatalf("runc exec: %v: %s", err, out)
	}
	raw.waitFor(t, 10*time.Second, "the other container's exec", func(evs []*containv1.Event) bool {
		return slices.ContainsFunc(evs, func(ev *containv1.Event) bool {
			return hasExec([]*containv1.Event{ev}, "/bin/echo", "/bin/echo", "while-hanging")
		})
	})
	if waited := time.Since(started); waited >= timeout {
		t.Fatalf("another container's exec took %v to publish while the engine hung (timeout %v)", waited, timeout)
	}

	info, evs := ofContainer(t, raw, engineCgroupID(t, cfgRoot, d), d.ID)
	ci := info.GetContainer()
	if ci.Runtime != runtime.Docker || info.ContainerName != "col-eng-hang" || ci.Labels["team"] != "payments" {
		t.Fatalf("docker container from disk: %v (name %q)", ci, info.ContainerName)
	}
	if !hasExec(evs, "/bin/true", "/bin/true", "first") {
		t.Fatalf("first exec of %s missing", d.ID)
	}
	if n := metadataErrors(m, runtime.EngineDocker, "timeout"); n < 1 {
		t.Fatalf("docker lookup timeout not counted (%v)", n)
	}
}

// TestIntegrationEngineLateAnswer: with no wait for metadata
// (collector.metadata_wait 0) and no on-disk docker state, a docker
// container is announced at once with what its cgroup path tells, and
// announced again with the engine's answer on its next event.
func TestIntegrationEngineLateAnswer(t *testing.T) {
	e := testenv.RequireEngines(t)
	cfgRoot := testenv.Cgroup2Root
	_, js, _ := startCollector(t, func(c *Config) {
		c.DockerHost = e.DockerHost
		c.DockerRoot = ""
		c.ContainerdAddress = ""
		c.MetadataWait = 0
	})
	raw := consumeRaw(t, js)
	d := e.DockerRun(t, "col-eng-late", []string{"--label", "team=payments"}, engineCmd...)
	cgid := engineCgroupID(t, cfgRoot, d)
	first, _ := ofContainer(t, raw, cgid, d.ID)
	if l := first.GetContainer().Labels; l["team"] != "" {
		t.Logf("the engine answered before the first event was handled; labels %v", l)
	}
	// The next events of the container carry the answer.
	deadline := time.Now().Add(10 * time.Second)
	for n := 0; ; n++ {
		if _, err := e.Docker("exec", d.ID, "/bin/true", "again"); err != nil {
			t.Fatal(err)
		}
		evs := raw.snapshot()
		if slices.ContainsFunc(evs, func(ev *containv1.Event) bool {
			ci := ev.GetContainer()
			return ev.CgroupId == cgid && ev.Kind == containv1.Kind_KIND_CONTAINER && ci.Labels["team"] == "payments" &&
				ci.Runtime == runtime.Docker && ev.ContainerName == "col-eng-late" && ci.Labels[runtime.LabelImageRef] == testenv.EnginesImage
		}) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no KIND_CONTAINER with the engine's answer after %d execs", n)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// The exec that carried the answer may still be on its way.
	raw.waitFor(t, 10*time.Second, "an exec again of "+d.ID, func(all []*containv1.Event) bool {
		return slices.ContainsFunc(all, func(ev *containv1.Event) bool {
			return ev.CgroupId == cgid && hasExec([]*containv1.Event{ev}, "/bin/true", "/bin/true", "again")
		})
	})
	_, evs := ofContainer(t, raw, cgid, d.ID)
	if !hasExec(evs, "/bin/true", "/bin/true", "first") || !hasExec(evs, "/bin/true", "/bin/true", "again") {
		t.Fatal("execs of the container missing")
	}
}

// stallingProxy is a unix socket in front of the real docker socket
// (target) that accepts and never answers while stalled (a dockerd busy
// starting replicas holds their containers' locks), and forwards once
// released.
type stallingProxy struct {
	path    string
	stalled atomic.Bool
	held    atomic.Int32 // connections accepted while stalled
}

func newStallingProxy(t *testing.T, target string) *stallingProxy {
	t.Helper()
	p := &stallingProxy{path: filepath.Join(t.TempDir(), "stall.sock")}
	p.stalled.Store(true)
	l, err := net.Listen("unix", p.path)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	keep := func(c ...net.Conn) {
		mu.Lock()
		defer mu.Unlock()
		conns = append(conns, c...)
	}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			keep(c)
			if p.stalled.Load() {
				p.held.Add(1)
				continue
			}
			up, err := net.Dial("unix", target)
			if err != nil {
				c.Close()
				continue
			}
			keep(up)
			go func() { _, _ = io.Copy(up, c) }()
			go func() { _, _ = io.Copy(c, up) }()
		}
	}()
	t.Cleanup(func() {
		l.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	return p
}

// TestIntegrationEngineRetry: a docker lookup that times out (dockerd
// answers inspect of a starting container only once its start returned,
// which takes longer than collector.engine_timeout on a host starting
// many replicas at once) is asked again, and the container, with no
// on-disk docker state to name its image meanwhile, is announced again
// with the image the engine names: its replicas share their image's
// baseline instead of each learning its own.
func TestIntegrationEngineRetry(t *testing.T) {
	e := testenv.RequireEngines(t)
	cfgRoot := testenv.Cgroup2Root
	proxy := newStallingProxy(t, strings.TrimPrefix(e.DockerHost, "unix://"))
	_, js, m := startCollector(t, func(c *Config) {
		c.DockerHost = "unix://" + proxy.path
		c.DockerRoot = ""
		c.ContainerdAddress = ""
		c.EngineTimeout = 500 * time.Millisecond
	})
	raw := consumeRaw(t, js)
	d := e.DockerRun(t, "col-eng-retry", []string{"--label", "team=payments"}, engineCmd...)
	cgid := engineCgroupID(t, cfgRoot, d)
	first, _ := ofContainer(t, raw, cgid, d.ID)
	if ref := first.GetContainer().ImageRef; ref != "" {
		t.Fatalf("first announcement names image %q while the engine was stalled", ref)
	}
	deadline := time.Now().Add(10 * time.Second)
	for metadataErrors(m, runtime.EngineDocker, "timeout") < 1 {
		if time.Now().After(deadline) {
			t.Fatal("no docker lookup timed out while the engine was stalled")
		}
		time.Sleep(20 * time.Millisecond)
	}
	proxy.stalled.Store(false)
	for n := 0; ; n++ {
		if _, err := e.Docker("exec", d.ID, "/bin/true", "again"); err != nil {
			t.Fatal(err)
		}
		if slices.ContainsFunc(raw.snapshot(), func(ev *containv1.Event) bool {
			ci := ev.GetContainer()
			return ev.CgroupId == cgid && ci != nil && ci.ImageRef == testenv.EnginesImage && ci.Labels["team"] == "payments"
		}) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no KIND_CONTAINER naming the engine's image after %d execs (retries %v, timeouts %v, errors %v, unreachable %v)", n, metadataErrors(m, runtime.EngineDocker, "retry"), metadataErrors(m, runtime.EngineDocker, "timeout"), metadataErrors(m, runtime.EngineDocker, "error"), metadataErrors(m, runtime.EngineDocker, "unreachable"))
		}
		time.Sleep(100 * time.Millisecond)
	}
	if n := metadataErrors(m, runtime.EngineDocker, "retry"); n < 1 {
		t.Fatalf("the retried lookup is not counted (%v)", n)
	}
	if proxy.held.Load() < 1 {
		t.Fatal("the proxy held no connection: the stall was not exercised")
	}
}
