package analyzer

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/containsec/contain/enricher"
	"github.com/containsec/contain/internal/auth"
	"github.com/containsec/contain/internal/bus"
	"github.com/containsec/contain/internal/metrics"
	"github.com/containsec/contain/internal/testenv"
	"github.com/containsec/contain/schemas/containv1"
)

func TestAssign(t *testing.T) {
	for _, c := range []struct{ members, n int }{{1, 8}, {2, 8}, {3, 8}, {3, 16}, {5, 3}, {4, 64}} {
		var ms []string
		for i := range c.members {
			ms = append(ms, fmt.Sprintf("an-%d", i))
		}
		got := assign(ms, c.n)
		if again := assign(reversed(ms), c.n); !slices.Equal(got, again) {
			t.Fatalf("%d members: assignment depends on order: %v vs %v", c.members, got, again)
		}
		load := map[string]int{}
		for p, m := range got {
			if m == "" {
				t.Fatalf("%d members, %d partitions: partition %d unassigned", c.members, c.n, p)
			}
			load[m]++
		}
		room := (c.n + c.members - 1) / c.members
		for m, l := range load {
			if l > room {
				t.Fatalf("%d members, %d partitions: %s holds %d > %d", c.members, c.n, m, l, room)
			}
		}
	}
	// A fourth instance joining 3 takes partitions from the others and
	// moves nothing else.
	before := assign([]string{"a", "b", "c"}, 16)
	after := assign([]string{"a", "b", "c", "d"}, 16)
	moved := 0
	for p := range before {
		if before[p] != after[p] {
			moved++
			if after[p] != "d" {
				t.Errorf("partition %d moved %s -> %s, not to the newcomer", p, before[p], after[p])
			}
		}
	}
	if moved == 0 || moved > 6 {
		t.Fatalf("%d of 16 partitions moved to the 4th instance", moved)
	}
}

// instance is one analyzer with its own NATS connection, as if it ran
// in its own process.
type instance struct {
	id   string
	a    *Analyzer
	nc   *nats.Conn
	stop func()
}

func startInstance(t *testing.T, url, id string, cfg Config) *instance {
	t.Helper()
	nc, js, err := bus.Connect(url, id, testenv.Discard())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	cfg.InstanceID, cfg.Host = id, id
	a, err := New(cfg, js, metrics.New(), testenv.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	return &instance{id: id, a: a, nc: nc, stop: testenv.Go(t, 15*time.Second, a.Run)}
}

func partitionedConfig() Config {
	cfg := DefaultConfig()
	cfg.LearningWindow = 3 * time.Second
	cfg.Convergence.NoveltyThreshold = 0
	cfg.GroupWindow, cfg.IncidentWindow, cfg.CombineWindow = 0, 0, 0
	cfg.AbsorbBelow = 0 // a converged baseline stays as stored
	cfg.PersistInterval = 50 * time.Millisecond
	cfg.ProfilesBucket = ""
	cfg.AckWait = 2 * time.Second
	cfg.Partitions = 4
	cfg.LeaseTTL = 2 * time.Second
	return cfg
}

// startEnricher runs a real enricher routing by cfg's partitions.
func startEnricher(t *testing.T, js jetstream.JetStream, cfg Config) {
	t.Helper()
	ec := enricher.DefaultConfig()
	ec.Workers = 0
	ec.AckWait = 2 * time.Second
	ec.KVReplicas = cfg.KVReplicas
	e, err := enricher.New(ec, js, metrics.New(), testenv.Discard())
	if err != nil {
		t.Fatal(err)
	}
	e.SetRouter(NewRouter(cfg))
	testenv.Go(t, 10*time.Second, e.Run)
}

// workload publishes raw events of images (one container each, named
// c<i>) through the collector's subject.
type workload struct {
	t    *testing.T
	js   jetstream.JetStream
	prod *bus.Producer
	n    int
}

func digestOf(i int) string { return fmt.Sprintf("sha256:%064x", i+1) }

func (w *workload) event(i int, ev *containv1.Event) *containv1.Event {
	ev.ContainerId = fmt.Sprintf("c%d", i)
	ev.ImageRef, ev.ImageDigest = "", "" // the enricher sets them
	return ev
}

func (w *workload) publish(evs ...*containv1.Event) {
	w.t.Helper()
	// Long enough to ride out a stream leader's election on a cluster.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := bus.Publish(ctx, w.js, containv1.RawSubject("h1"), w.prod.Batch(evs)); err != nil {
		w.t.Fatal(err)
	}
}

// learn starts every container and teaches its image one executable,
// then moves event time past the learning window.
func (w *workload) learn() {
	var evs []*containv1.Event
	for i := range w.n {
		ctr := base("", sec(0))
		ctr.Kind = containv1.Kind_KIND_CONTAINER
		ctr.Body = &containv1.Event_Container{Container: &containv1.ContainerInfo{
			ImageRef: fmt.Sprintf("app%d:1", i), ImageDigest: digestOf(i)}}
		evs = append(evs, w.event(i, ctr))
		for s := range 4 {
			evs = append(evs, w.event(i, execEv("", sec(float64(s)), "/bin/app", "app")))
		}
	}
	w.publish(evs...)
}

// attack publishes one never-seen executable per image; the ids of the
// deviating events by image.
func (w *workload) attack(round int) map[string]int {
	ids := map[string]int{}
	var evs []*containv1.Event
	for i := range w.n {
		ev := w.event(i, execEv("", sec(float64(5+round)), fmt.Sprintf("/usr/bin/tool%d", round), "tool"))
		ids[string(ev.Id)] = i
		evs = append(evs, ev)
	}
	w.publish(evs...)
	return ids
}

// alertLog collects every alert published, with the instance (batch
// host) that published it.
type alertLog struct {
	mu   sync.Mutex
	by   map[string][]string // alert id -> instances, one per publication
	alrt map[string]*containv1.Event
}

func collectAlerts(t *testing.T, js jetstream.JetStream) *alertLog {
	l := &alertLog{by: map[string][]string{}, alrt: map[string]*containv1.Event{}}
	cons, err := js.OrderedConsumer(context.Background(), containv1.StreamAlerts, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	cc, err := cons.Consume(func(m jetstream.Msg) {
		b, err := bus.Decode(m.Data())
		if err != nil {
			t.Errorf("alert batch: %v", err)
			return
		}
		l.mu.Lock()
		defer l.mu.Unlock()
		for _, ev := range b.Events {
			l.by[string(ev.Id)] = append(l.by[string(ev.Id)], b.Host)
			l.alrt[string(ev.Id)] = ev
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cc.Stop)
	return l
}

// waitFor waits until an alert was published for every trigger id.
func (l *alertLog) waitFor(t *testing.T, timeout time.Duration, triggers map[string]int) {
	t.Helper()
	testenv.WaitFor(t, timeout, "an alert for every deviating event", func() bool {
		l.mu.Lock()
		defer l.mu.Unlock()
		for id := range triggers {
			if len(l.by[string(AlertID([]byte(id)))]) == 0 {
				return false
			}
		}
		return true
	})
}

// duplicates are the alert ids published more than once.
func (l *alertLog) duplicates() (dups []string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for id, hosts := range l.by {
		if len(hosts) > 1 {
			dups = append(dups, fmt.Sprintf("%x by %v", id, hosts))
		}
	}
	return dups
}

// publishers are the instances that published each alert id, in order.
func (l *alertLog) publishers() map[string][]string {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make(map[string][]string, len(l.by))
	for id, hosts := range l.by {
		out[id] = slices.Clone(hosts)
	}
	return out
}

// distinct is the number of alert ids published.
func (l *alertLog) distinct() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.by)
}

func (l *alertLog) get(trigger string) (*containv1.Event, string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	id := string(AlertID([]byte(trigger)))
	return l.alrt[id], l.by[id][0]
}

// waitPartitioned waits until the instances hold every partition, each
// exactly once.
func waitPartitioned(t *testing.T, n int, ins ...*instance) {
	t.Helper()
	testenv.WaitFor(t, 20*time.Second, "every partition held by exactly one instance", func() bool {
		seen := map[int]int{}
		for _, in := range ins {
			for _, p := range in.a.Partitions() {
				seen[p]++
			}
		}
		if len(seen) != n {
			return false
		}
		for _, c := range seen {
			if c != 1 {
				return false
			}
		}
		return true
	})
}

// owner is the instance holding key's partition.
func owner(t *testing.T, key string, ins ...*instance) *instance {
	t.Helper()
	for _, in := range ins {
		if slices.Contains(in.a.Partitions(), containv1.Partition(key, in.a.cfg.Partitions)) {
			return in
		}
	}
	t.Fatalf("no instance holds %s", key)
	return nil
}

// One group's events all reach one analyzer instance: the one holding its
// partition learns its whole baseline and raises its alerts; no other
// instance holds a baseline of it.
func TestPartitionedGroupsOneOwner(t *testing.T) {
	url, _, js := testenv.NATS(t)
	cfg := partitionedConfig()
	cfg.Partitions = 8
	ins := []*instance{startInstance(t, url, "an-a", cfg), startInstance(t, url, "an-b", cfg), startInstance(t, url, "an-c", cfg)}
	waitPartitioned(t, cfg.Partitions, ins...)
	for _, in := range ins {
		testenv.WaitFor(t, 5*time.Second, in.id+" ready", func() bool { return in.a.Ready() == nil })
		if n := len(in.a.Partitions()); n < 2 || n > 3 {
			t.Errorf("%s holds %d of 8 partitions: %v", in.id, n, in.a.Partitions())
		}
	}
	startEnricher(t, js, cfg)
	alerts := collectAlerts(t, js)
	w := &workload{t: t, js: js, prod: bus.NewProducer("h1", metrics.StageCollector), n: 12}
	w.learn()
	triggers := w.attack(0)
	alerts.waitFor(t, 20*time.Second, triggers)
	for i := range w.n {
		key := digestOf(i)
		own := owner(t, key, ins...)
		for _, in := range ins {
			var b *Baseline
			in.a.Engine(func(e *Engine) { b = e.Baseline(key) })
			switch {
			case in == own && (b == nil || b.Observations != 3 || b.Phase != PhaseConverged):
				t.Errorf("%s: its owner %s holds %+v, want the 3 events of its learning window, converged", key, in.id, b)
			case in != own && b != nil:
				t.Errorf("%s: %s, not its owner %s, holds a baseline of it", key, in.id, own.id)
			}
		}
	}
	for trig, i := range triggers {
		if al, by := alerts.get(trig); by != owner(t, digestOf(i), ins...).id || al.GetAlert().GetBaselineVersion() == "" {
			t.Errorf("alert of image %d published by %s, not its partition's owner", i, by)
		}
	}
	if d := alerts.duplicates(); len(d) > 0 {
		t.Fatalf("alert ids published twice: %v", d)
	}
}

func reversed(s []string) []string {
	r := slices.Clone(s)
	slices.Reverse(r)
	return r
}

// A partition's owner stops (handing over) or dies (its connection cut,
// its leases expiring): the other instance takes its partitions over,
// loads each baseline as stored (same revision and learned set) before
// scoring, and the deviations published across the hand-over each raise
// exactly one alert, with the id the old owner would have given it.
// "kill-inflight" cuts the owner right after the next deviations are
// published, whatever it had fetched, published or acknowledged of them:
// none is lost and no id appears but the one per deviating event (an
// alert published and not acknowledged would be raised again by the heir
// under the same id, JetStream's at-least-once; consumers de-duplicate by
// id; the log says how many were). "kill-unacked" cuts the owner after
// it published the alerts of a fetch and before it acknowledged it: the
// heir gets those events again and raises the same alert ids.
func TestPartitionHandover(t *testing.T) {
	for _, mode := range []string{"stop", "kill", "kill-inflight", "kill-unacked"} {
		t.Run(mode, func(t *testing.T) {
			url, _, js := testenv.NATS(t)
			handover(t, handoverEnv{urls: [2]string{url, url}, js: js, cfg: partitionedConfig(), mode: mode})
		})
	}
}

// The same on a 3-node NATS cluster (streams and buckets R3), each
// instance through its own node: the victim dies with its node.
// ~30 s: set CONTAIN_TEST_PARTITION_CLUSTER=1.
func TestPartitionHandoverOnCluster(t *testing.T) {
	if os.Getenv("CONTAIN_TEST_PARTITION_CLUSTER") == "" {
		t.Skip("~30 s on a 3-node cluster: set CONTAIN_TEST_PARTITION_CLUSTER=1")
	}
	cl := testenv.StartNATSCluster(t, 3)
	nc, js, err := bus.Connect(cl.Nodes[2].URL, t.Name(), testenv.Discard())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	if err := bus.EnsureStreams(context.Background(), js, bus.StreamsConfig{Replicas: 3}); err != nil {
		t.Fatal(err)
	}
	cfg := partitionedConfig()
	cfg.KVReplicas = 3
	// KV operations wait out a leader election after the node dies.
	cfg.LeaseTTL = 6 * time.Second
	handover(t, handoverEnv{urls: [2]string{cl.Nodes[0].URL, cl.Nodes[1].URL}, js: js, cfg: cfg, mode: "kill",
		alsoKill: func(victim int) { cl.Nodes[victim].Kill() }})
}

// handoverEnv is where TestPartitionHandover runs: the URLs the two
// instances connect to, the test's own JetStream (enricher, alerts,
// store reads) and what else dies with the victim.
type handoverEnv struct {
	urls [2]string
	js   jetstream.JetStream
	cfg  Config
	mode string
	// alsoKill runs with the victim's kill (its NATS node, on a cluster).
	alsoKill func(victim int)
}

func handover(t *testing.T, env handoverEnv) {
	cfg, js, mode := env.cfg, env.js, env.mode
	a, b := startInstance(t, env.urls[0], "an-a", cfg), startInstance(t, env.urls[1], "an-b", cfg)
	waitPartitioned(t, cfg.Partitions, a, b)
	startEnricher(t, js, cfg)
	alerts := collectAlerts(t, js)
	w := &workload{t: t, js: js, prod: bus.NewProducer("h1", metrics.StageCollector), n: 8}
	w.learn()
	first := w.attack(0)
	alerts.waitFor(t, 20*time.Second, first)

	// The victim owns image 0; what it stored is what the next
	// owner must load.
	victim := owner(t, digestOf(0), a, b)
	heir := a
	if victim == a {
		heir = b
	}
	st, err := openStore(context.Background(), js, cfg.BaselinesBucket, cfg.KVReplicas)
	if err != nil {
		t.Fatal(err)
	}
	var moved []string // keys the victim owns
	for i := range w.n {
		if owner(t, digestOf(i), a, b) == victim {
			moved = append(moved, digestOf(i))
		}
	}
	stored := map[string]*Doc{}
	testenv.WaitFor(t, 10*time.Second, "the victim's baselines written and its partitions acknowledged", func() bool {
		for _, key := range moved {
			var live *Doc
			victim.a.Engine(func(e *Engine) { live, _ = e.Snapshot(key) })
			d, err := st.Get(context.Background(), key)
			if err != nil || live == nil || d.Version != live.Version || d.Phase != PhaseConverged.String() {
				return false
			}
			stored[key] = d
		}
		return acknowledged(t, js, victim.a)
	})
	var second map[string]int
	cut := time.Now()
	switch mode {
	case "stop":
		victim.stop()
	case "kill":
		victim.nc.Close() // no hand-over: its leases expire
	case "kill-inflight":
		second = w.attack(1)
		victim.nc.Close()
	case "kill-unacked":
		victim.a.handleMu.Lock() // no handle in flight while the hook is set
		victim.a.afterPublish = func() { victim.nc.Close() }
		victim.a.handleMu.Unlock()
		second = w.attack(1)
	}
	if env.alsoKill != nil {
		env.alsoKill(map[bool]int{true: 0, false: 1}[victim == a])
	}
	if second == nil {
		second = w.attack(1) // published while the partitions move
	}
	testenv.WaitFor(t, 20*time.Second, "the heir holding every partition", func() bool { return len(heir.a.Partitions()) == cfg.Partitions })
	handover := time.Since(cut)
	alerts.waitFor(t, 20*time.Second, second)
	for trig, i := range second {
		key := digestOf(i)
		al, by := alerts.get(trig)
		d := stored[key]
		if d == nil {
			continue // never the victim's
		}
		if by != heir.id && !strings.HasPrefix(mode, "kill-") {
			t.Errorf("%s: alert after the hand-over published by %s, not %s", key, by, heir.id)
		}
		if v := al.GetAlert().GetBaselineVersion(); v != fmt.Sprint(d.Version) {
			t.Errorf("%s: scored against baseline version %s, stored %d", key, v, d.Version)
		}
		var got *Doc
		heir.a.Engine(func(e *Engine) { got, _ = e.Snapshot(key) })
		if got == nil || got.Version != d.Version || !slices.Equal(sortedKeys(got.Executables), sortedKeys(d.Executables)) {
			t.Errorf("%s: the heir holds %+v, stored %+v", key, got, d)
		}
	}
	if mode == "kill-unacked" {
		// Redelivered after analyzer.ack_wait, once the heir holds the
		// partition.
		testenv.WaitFor(t, 15*time.Second, "an alert raised again by the heir", func() bool { return len(alerts.duplicates()) > 0 })
	}
	dups := alerts.duplicates()
	switch {
	case mode == "kill-unacked" && len(dups) == 0:
		t.Fatal("no alert raised again by the heir: the unacknowledged fetch was not redelivered")
	case mode == "kill-unacked":
		for id, hosts := range alerts.publishers() {
			if len(hosts) > 1 && !slices.Equal(hosts, []string{victim.id, heir.id}) {
				t.Errorf("alert %x published by %v, want the victim then the heir", id, hosts)
			}
		}
	case len(dups) > 0 && mode != "kill-inflight":
		t.Fatalf("alert ids published twice: %v", dups)
	}
	if n := alerts.distinct(); n != len(first)+len(second) {
		t.Fatalf("%d distinct alert ids, want one per deviating event (%d)", n, len(first)+len(second))
	}
	t.Logf("%s: %d baselines moved from %s to %s in %v (lease_ttl %v); %d+%d alerts; ids published again: %d",
		mode, len(moved), victim.id, heir.id, handover.Round(time.Millisecond), cfg.LeaseTTL, len(first), len(second), len(dups))
}

// acknowledged: every partition consumer of a has nothing pending or
// unacknowledged.
func acknowledged(t *testing.T, js jetstream.JetStream, a *Analyzer) bool {
	for _, p := range a.Partitions() {
		c, err := js.Consumer(context.Background(), containv1.StreamEvents, partitionDurable(a.cfg.Durable, p))
		if err != nil {
			return false
		}
		info, err := c.Info(context.Background())
		if err != nil || info.NumPending != 0 || info.NumAckPending != 0 {
			return false
		}
	}
	return true
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// Under the permission table (analyzer.partitions 4) the analyzer user may
// create the leases bucket and its partition consumers, and alerts.
func TestPartitionedUnderPermissions(t *testing.T) {
	names := auth.DefaultNames()
	names.AnalyzerPartitions = 4
	users := auth.Table(names, []string{"h1"})
	keys, creds := map[string]string{}, map[string]*auth.Credentials{}
	for _, u := range users {
		c, err := auth.Generate(u.Name)
		if err != nil {
			t.Fatal(err)
		}
		creds[u.Name], keys[u.Name] = c, c.PublicKey()
	}
	s, err := bus.StartEmbedded(bus.EmbeddedConfig{Port: -1, StoreDir: t.TempDir()}, auth.ServerUsers(users, keys)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Shutdown)
	connect := func(user string) (*nats.Conn, jetstream.JetStream) {
		c := creds[user]
		nc, js, err := bus.Connect(s.ClientURL(), user, testenv.Discard(), nats.Nkey(c.PublicKey(), c.KP.Sign),
			nats.CustomInboxPrefix(auth.InboxPrefix(user)))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		return nc, js
	}
	_, admin := connect(auth.RoleAdmin)
	if err := bus.EnsureStreams(context.Background(), admin, bus.StreamsConfig{}); err != nil {
		t.Fatal(err)
	}
	_, ajs := connect(auth.RoleAnalyzer)
	cfg := partitionedConfig()
	cfg.InstanceID, cfg.Host = "an-1", "an-1"
	a, err := New(cfg, ajs, metrics.New(), testenv.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	testenv.Go(t, 15*time.Second, a.Run)
	testenv.WaitFor(t, 15*time.Second, "the analyzer user holding every partition", func() bool { return len(a.Partitions()) == 4 })

	_, ejs := connect(auth.RoleEnricher)
	prod := bus.NewProducer("h1", metrics.StageEnricher)
	key := digestOf(0)
	var evs []*containv1.Event
	for s := range 4 {
		evs = append(evs, execEv("c0", sec(float64(s)), "/bin/app", "app"))
	}
	attack := execEv("c0", sec(5), "/usr/bin/tool", "tool")
	evs = append(evs, attack)
	for _, ev := range evs {
		ev.ImageDigest = key
	}
	if err := bus.Publish(context.Background(), ejs, containv1.EventsPartitionSubject("h1", containv1.Partition(key, 4)), prod.Batch(evs)); err != nil {
		t.Fatal(err)
	}
	alerts := collectAlerts(t, admin)
	alerts.waitFor(t, 15*time.Second, map[string]int{string(attack.Id): 0})
}

func TestPartitionConfigValidate(t *testing.T) {
	for _, c := range []struct {
		edit func(*Config)
		key  string
	}{
		{func(c *Config) { c.Partitions = -1 }, "analyzer.partitions"},
		{func(c *Config) { c.Partitions = containv1.MaxPartitions + 1 }, "analyzer.partitions"},
		{func(c *Config) { c.InstanceID = "a.b" }, "analyzer.instance_id"},
		{func(c *Config) { c.Partitions, c.LeaseTTL = 4, time.Millisecond }, "analyzer.lease_ttl"},
		{func(c *Config) { c.Partitions, c.FilterSubject = 4, "contain.v1.events.h1" }, "analyzer.filter_subject"},
		{func(c *Config) { c.InstanceID, c.Partitions = "an-1_x", 4 }, ""},
	} {
		cfg := DefaultConfig()
		c.edit(&cfg)
		err := cfg.Validate()
		if c.key == "" && err != nil || c.key != "" && (err == nil || !strings.HasPrefix(err.Error(), c.key+":")) {
			t.Errorf("%+v: %v, want %q", c, err, c.key)
		}
	}
	_, _, js := testenv.NATS(t)
	cfg := DefaultConfig()
	cfg.Partitions, cfg.BaselinesBucket = 4, ""
	if _, err := New(cfg, js, metrics.New(), testenv.Discard()); err == nil || !strings.Contains(err.Error(), "baselines_bucket") {
		t.Errorf("partitions without a baselines bucket: %v", err)
	}
}
