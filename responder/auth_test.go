package responder

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/containsec/contain/internal/bus"
	"github.com/containsec/contain/internal/metrics"
	"github.com/containsec/contain/internal/testenv"
	"github.com/containsec/contain/schemas/containv1"
)

// deployNATSConf is the cluster authorization shipped in deploy/nats.
const deployNATSConf = "../deploy/nats/contain.conf"

// authUsers are the users of deploy/nats/contain.conf, by the environment
// variable holding each one's public nkey.
var authUsers = map[string]string{
	"collector-node-a": "CONTAIN_NKEY_COLLECTOR_NODE_A",
	"responder-node-a": "CONTAIN_NKEY_RESPONDER_NODE_A",
	"collector-node-b": "CONTAIN_NKEY_COLLECTOR_NODE_B",
	"responder-node-b": "CONTAIN_NKEY_RESPONDER_NODE_B",
	"enricher":         "CONTAIN_NKEY_ENRICHER",
	"analyzer":         "CONTAIN_NKEY_ANALYZER",
	"store":            "CONTAIN_NKEY_STORE",
	"operator":         "CONTAIN_NKEY_OPERATOR",
	"admin":            "CONTAIN_NKEY_ADMIN",
}

// authCluster is an embedded server running deploy/nats/contain.conf, with
// a fresh nkey per user.
type authCluster struct {
	t    *testing.T
	srv  *server.Server
	keys map[string]nkeys.KeyPair
}

// client is a connection as one user, recording the asynchronous errors
// the server sends it (permission violations).
type client struct {
	nc *nats.Conn
	js jetstream.JetStream

	mu   sync.Mutex
	errs []error
}

func (c *client) violation(subject string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, err := range c.errs {
		if errors.Is(err, nats.ErrPermissionViolation) && strings.Contains(err.Error(), `"`+subject+`"`) {
			return true
		}
	}
	return false
}

func startAuthCluster(t *testing.T) *authCluster {
	t.Helper()
	if _, err := os.Stat(deployNATSConf); err != nil {
		t.Fatalf("deploy config: %v", err)
	}
	a := &authCluster{t: t, keys: map[string]nkeys.KeyPair{}}
	for user, env := range authUsers {
		kp, err := nkeys.CreateUser()
		if err != nil {
			t.Fatal(err)
		}
		pub, err := kp.PublicKey()
		if err != nil {
			t.Fatal(err)
		}
		t.Setenv(env, pub)
		a.keys[user] = kp
	}
	// The real file, with the test's store dir and a random port.
	srv, err := bus.StartEmbedded(bus.EmbeddedConfig{Port: -1, StoreDir: t.TempDir(), ConfigFile: deployNATSConf})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Shutdown(); srv.WaitForShutdown() })
	a.srv = srv
	return a
}

// connect dials as user, with the inbox prefix its permissions allow.
func (a *authCluster) connect(user string) *client {
	a.t.Helper()
	kp := a.keys[user]
	pub, _ := kp.PublicKey()
	c := &client{}
	nc, js, err := bus.Connect(a.srv.ClientURL(), user, testenv.Logger(a.t),
		nats.Nkey(pub, kp.Sign),
		nats.CustomInboxPrefix("_INBOX."+user),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			c.mu.Lock()
			c.errs = append(c.errs, err)
			c.mu.Unlock()
		}))
	if err != nil {
		a.t.Fatalf("connecting as %s: %v", user, err)
	}
	a.t.Cleanup(nc.Close)
	c.nc, c.js = nc, js
	return c
}

// TestAuthorisedPublishers runs a responder for node-a with its own
// credentials against deploy/nats/contain.conf: only the analyzer's alerts
// freeze, a collector can neither publish alerts nor release, the responder
// cannot reach node-b's alerts, and an operator releases.
func TestAuthorisedPublishers(t *testing.T) {
	testenv.RequireRoot(t)
	if _, err := os.Stat("/sys/fs/cgroup/freezer"); err != nil {
		if _, err2 := os.Stat("/sys/fs/cgroup/unified"); err2 != nil {
			testenv.Unavailable(t, "a cgroup v1 freezer or cgroup2 mount under /sys/fs/cgroup")
		}
	}
	const host, other = "node-a", "node-b"
	a := startAuthCluster(t)
	ctx := context.Background()

	admin := a.connect("admin")
	if err := bus.EnsureStreams(ctx, admin.js, bus.StreamsConfig{Memory: true}); err != nil {
		t.Fatalf("admin creating streams: %v", err)
	}
	acts, err := admin.js.OrderedConsumer(ctx, containv1.StreamActions, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{containv1.ActionsSubject(host)},
	})
	if err != nil {
		t.Fatal(err)
	}
	nextAction := func() *containv1.Event {
		t.Helper()
		msg, err := acts.Next(jetstream.FetchMaxWait(10 * time.Second))
		if err != nil {
			t.Fatalf("no action published: %v", err)
		}
		b, err := bus.Decode(msg.Data())
		if err != nil || len(b.Events) != 1 {
			t.Fatalf("action batch: %v, %d events", err, len(b.GetEvents()))
		}
		return b.Events[0]
	}

	// The responder, as responder-node-a.
	cfg := DefaultConfig()
	cfg.Host = host
	var (
		resp *client
		m    *metrics.Metrics
	)
	startResponder := func() (stop func()) {
		t.Helper()
		resp = a.connect("responder-" + host)
		m = metrics.New()
		r, err := New(cfg, resp.nc, resp.js, m, testenv.Logger(t))
		if err != nil {
			t.Fatal(err)
		}
		stopRun := testenv.Go(t, 5*time.Second, r.Run)
		var once sync.Once
		stop = func() { once.Do(func() { stopRun(); resp.nc.Close() }) }
		t.Cleanup(stop)
		return stop
	}
	stop := startResponder()

	operator := a.connect("operator")
	waitFor(t, 10*time.Second, "responder serving quarantine.list to the operator", func() bool {
		_, err := ListQuarantined(ctx, operator.nc, host)
		return err == nil
	})
	resp.mu.Lock()
	if len(resp.errs) > 0 {
		t.Fatalf("the responder's own permissions refused something: %v", resp.errs)
	}
	resp.mu.Unlock()

	c := testenv.RunContainer(t, "authz", testenv.ContainerSpec{})
	ids := containv1.NewIDGen()
	alert := func(h string, score float64) *containv1.Event {
		return &containv1.Event{
			Id: ids.Next(), Host: h, ContainerId: c.ID, Kind: containv1.Kind_KIND_ALERT,
			WallNs: time.Now().UnixNano(), SchemaVersion: containv1.SchemaVersion,
			Body: &containv1.Event_Alert{Alert: &containv1.Alert{Score: score, Rule: "exec.unseen",
				Reasons: []*containv1.Reason{{Code: "exec.unseen", Message: "test", Score: score}}}},
		}
	}

	// A collector forging an alert (and claiming the analyzer's stage) is
	// refused by the server.
	collector := a.connect("collector-" + host)
	forged := alert(host, 1)
	pctx, pcancel := context.WithTimeout(ctx, time.Second)
	err = bus.Publish(pctx, collector.js, containv1.AlertsSubject(host), bus.NewProducer(host, "analyzer").Batch([]*containv1.Event{forged}))
	pcancel()
	if err == nil {
		t.Fatal("collector published an alert")
	}
	waitFor(t, 5*time.Second, "permissions violation for the collector's alert", func() bool {
		return collector.violation(containv1.AlertsSubject(host))
	})

	// The analyzer addresses node-b first: node-a's responder never gets it.
	analyzer := a.connect("analyzer")
	prod := bus.NewProducer("central", metrics.StageAnalyzer)
	if err := bus.Publish(ctx, analyzer.js, containv1.AlertsSubject(other), prod.Batch([]*containv1.Event{alert(other, 1)})); err != nil {
		t.Fatalf("analyzer publishing to %s: %v", other, err)
	}
	real := alert(host, 0.95)
	if err := bus.Publish(ctx, analyzer.js, containv1.AlertsSubject(host), prod.Batch([]*containv1.Event{real})); err != nil {
		t.Fatalf("analyzer publishing to %s: %v", host, err)
	}
	ev := nextAction()
	act := wantAction(t, ev, containv1.Action_TYPE_PAUSE, containv1.Action_RESULT_OK, c.ID)
	if got := containv1.FormatID(act.AlertId); got != containv1.FormatID(real.Id) {
		t.Fatalf("first action answers alert %s, want the analyzer's %s (forged %s)", got, containv1.FormatID(real.Id), containv1.FormatID(forged.Id))
	}
	if got := freezerState(t, c); got != "FROZEN" {
		t.Fatalf("container %s after the analyzer's alert", got)
	}
	if n := testutil.ToFloat64(m.Dropped.WithLabelValues(metrics.StageResponder, "wrong_host")); n != 0 {
		t.Fatalf("node-b's alert reached node-a's responder (%v wrong_host drops)", n)
	}

	// Restart: the quarantine is rebuilt from CONTAIN_ACTIONS through the
	// restore consumer the responder's permissions allow.
	stop()
	startResponder()
	waitFor(t, 10*time.Second, "quarantine restored after a restart", func() bool {
		qs, err := ListQuarantined(ctx, operator.nc, host)
		return err == nil && len(qs) == 1 && qs[0].ContainerID == c.ID && qs[0].State == "frozen"
	})
	if n := testutil.ToFloat64(m.Errors.WithLabelValues(metrics.StageResponder, "restore")); n != 0 {
		t.Fatalf("restore failed under the responder's permissions (%v errors)", n)
	}

	// node-a's credentials cannot reach node-b's alerts, neither through a
	// consumer nor a core subscription.
	cctx, ccancel := context.WithTimeout(ctx, time.Second)
	_, err = resp.js.CreateOrUpdateConsumer(cctx, containv1.StreamAlerts, jetstream.ConsumerConfig{
		Durable: cfg.durable(), FilterSubject: containv1.AlertsSubject(other), AckPolicy: jetstream.AckExplicitPolicy,
	})
	ccancel()
	if err == nil {
		t.Fatal("responder-node-a made a consumer on node-b's alerts")
	}
	if _, err := resp.nc.Subscribe(containv1.AlertsSubject(other), func(*nats.Msg) {}); err != nil {
		t.Fatal(err)
	}
	if _, err := resp.nc.Subscribe("_INBOX.>", func(*nats.Msg) {}); err != nil {
		t.Fatal(err)
	}
	_ = resp.nc.Flush()
	waitFor(t, 5*time.Second, "permissions violations for node-b's alerts and others' inboxes", func() bool {
		return resp.violation(containv1.AlertsSubject(other)) && resp.violation("_INBOX.>")
	})

	// A collector cannot release; the operator can.
	rctx2, rcancel := context.WithTimeout(ctx, time.Second)
	_, err = Release(rctx2, collector.nc, host, c.ID, "collector", "forged release")
	rcancel()
	if err == nil {
		t.Fatal("collector released a container")
	}
	waitFor(t, 5*time.Second, "permissions violation for the collector's release", func() bool {
		return collector.violation(containv1.ControlSubject(host, VerbRelease))
	})
	if got := freezerState(t, c); got != "FROZEN" {
		t.Fatalf("container %s after the collector's release request", got)
	}
	ev, err = Release(ctx, operator.nc, host, c.ID, "alice", "investigated")
	if err != nil {
		t.Fatalf("operator release: %v", err)
	}
	if ev.GetAction().GetActor() != "alice" {
		t.Fatalf("release actor %q", ev.GetAction().GetActor())
	}
	rel := nextAction()
	ra := wantAction(t, rel, containv1.Action_TYPE_RELEASE, containv1.Action_RESULT_OK, c.ID)
	if ra.Actor != "alice" {
		t.Fatalf("first RELEASE action by %q, want the operator (a collector's got through?)", ra.Actor)
	}
	if got := freezerState(t, c); got != "THAWED" {
		t.Fatalf("container %s after the operator's release", got)
	}
	resp.mu.Lock()
	defer resp.mu.Unlock()
	for _, err := range resp.errs {
		if s := err.Error(); !strings.Contains(s, other) && !strings.Contains(s, `"_INBOX.>"`) {
			t.Errorf("responder refused something it needs: %v", err)
		}
	}
}

// TestHostUsersScript: deploy/nats/host-users.sh prints exactly the users
// that deploy/nats/contain.conf holds for node-a and node-b, so the tested
// permissions are the ones the script gives a new host.
func TestHostUsersScript(t *testing.T) {
	conf, err := os.ReadFile(deployNATSConf)
	if err != nil {
		t.Fatal(err)
	}
	for _, host := range []string{"node-a", "node-b"} {
		out, err := exec.Command("sh", "../deploy/nats/host-users.sh", host).Output()
		if err != nil {
			t.Fatalf("host-users.sh %s: %v", host, err)
		}
		start := strings.Index(string(conf), "# ---- host "+host+" ----")
		end := strings.Index(string(conf[start+1:]), "# ---- ")
		if start < 0 || end < 0 {
			t.Fatalf("no block for %s in %s", host, deployNATSConf)
		}
		if got, want := confLines(string(out)), confLines(string(conf[start:start+1+end])); got != want {
			t.Errorf("host-users.sh %s differs from %s:\n%s\nwant:\n%s", host, deployNATSConf, got, want)
		}
	}
	if err := exec.Command("sh", "../deploy/nats/host-users.sh", "a.b").Run(); err == nil {
		t.Error("host-users.sh accepted a host that is not one subject token")
	}
}

// confLines drops comments and blank lines.
func confLines(s string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if i := strings.Index(l, "#"); i >= 0 {
			l = l[:i]
		}
		if l = strings.TrimSpace(l); l != "" {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// TestPipelineRolesUnderAuthorization: every central role of
// deploy/nats/contain.conf can do its job with bus.Consume and bus.Publish
// (collector → enricher → analyzer → store), with no permission refused.
func TestPipelineRolesUnderAuthorization(t *testing.T) {
	a := startAuthCluster(t)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	admin := a.connect("admin")
	if err := bus.EnsureStreams(ctx, admin.js, bus.StreamsConfig{Memory: true}); err != nil {
		t.Fatal(err)
	}
	log := testenv.Logger(t)
	m := metrics.New()
	consume := func(c *client, cfg bus.ConsumerConfig, h bus.Handler) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cfg.FetchWait = 100 * time.Millisecond
			if err := bus.Consume(ctx, c.js, cfg, h, m, log); err != nil {
				t.Errorf("%s: %v", cfg.Durable, err)
			}
		}()
	}
	relay := func(c *client, subject, stage string) bus.Handler {
		prod := bus.NewProducer("central", stage)
		return func(ctx context.Context, bs []*containv1.Batch) error {
			for _, b := range bs {
				if err := bus.Publish(ctx, c.js, subject, prod.Batch(b.Events)); err != nil {
					return err
				}
			}
			return nil
		}
	}
	enricher, analyzer, store := a.connect("enricher"), a.connect("analyzer"), a.connect("store")
	consume(enricher, bus.ConsumerConfig{Stream: containv1.StreamRaw, Durable: "enricher", FilterSubject: containv1.SubjectPrefix + ".raw.>", Stage: "enricher"},
		relay(enricher, containv1.EventsSubject("node-a"), metrics.StageEnricher))
	consume(analyzer, bus.ConsumerConfig{Stream: containv1.StreamEvents, Durable: "analyzer", Stage: "analyzer"},
		relay(analyzer, containv1.AlertsSubject("node-a"), metrics.StageAnalyzer))
	var mu sync.Mutex
	stored := map[string]int{}
	for stream, durable := range map[string]string{containv1.StreamEvents: "store-events", containv1.StreamAlerts: "store-alerts", containv1.StreamActions: "store-actions"} {
		consume(store, bus.ConsumerConfig{Stream: stream, Durable: durable, Stage: "store"}, func(_ context.Context, bs []*containv1.Batch) error {
			mu.Lock()
			stored[stream] += len(bs)
			mu.Unlock()
			return nil
		})
	}
	collector := a.connect("collector-node-a")
	ev := &containv1.Event{Id: containv1.NewIDGen().Next(), Host: "node-a", Kind: containv1.Kind_KIND_EXEC, SchemaVersion: containv1.SchemaVersion}
	if err := bus.Publish(ctx, collector.js, containv1.RawSubject("node-a"), bus.NewProducer("node-a", metrics.StageCollector).Batch([]*containv1.Event{ev})); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the event stored as an event and an alert", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return stored[containv1.StreamEvents] == 1 && stored[containv1.StreamAlerts] == 1
	})
	// Acks are allowed: nothing is redelivered.
	waitFor(t, 5*time.Second, "every consumer fully acknowledged", func() bool {
		for stream, durable := range map[string]string{containv1.StreamRaw: "enricher", containv1.StreamEvents: "analyzer", containv1.StreamAlerts: "store-alerts"} {
			info, err := admin.js.Consumer(ctx, stream, durable)
			if err != nil {
				return false
			}
			ci, err := info.Info(ctx)
			if err != nil || ci.NumAckPending != 0 || ci.NumPending != 0 {
				return false
			}
		}
		return true
	})
	for name, c := range map[string]*client{"collector": collector, "enricher": enricher, "analyzer": analyzer, "store": store} {
		c.mu.Lock()
		if len(c.errs) > 0 {
			t.Errorf("%s was refused: %v", name, c.errs)
		}
		c.mu.Unlock()
	}
}
