package responder

import (
	"context"
	"errors"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/containsec/contain/internal/auth"
	"github.com/containsec/contain/internal/bus"
	"github.com/containsec/contain/internal/metrics"
	"github.com/containsec/contain/internal/testenv"
	"github.com/containsec/contain/schemas/containv1"
)

// deployNATSConf is the cluster authorization shipped in deploy/nats.
const deployNATSConf = "../deploy/nats/contain.conf"

// authCluster is an embedded server running deploy/nats/contain.conf, with
// a fresh nkey per user.
type authCluster struct {
	t     *testing.T
	srv   *server.Server
	keys  map[string]nkeys.KeyPair
	creds map[string]*auth.Credentials
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
	a := &authCluster{t: t, keys: map[string]nkeys.KeyPair{}, creds: map[string]*auth.Credentials{}}
	// Every user of the permission table the conf is generated from.
	for _, u := range auth.Table(auth.DefaultNames(), []string{"node-a", "node-b"}) {
		c, err := auth.Generate(u.Name)
		if err != nil {
			t.Fatal(err)
		}
		t.Setenv(auth.EnvVar(u.Name), c.PublicKey())
		a.keys[u.Name] = c.KP
		a.creds[u.Name] = c
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

	// The responder, as responder-node-a, obeying the operator's key.
	cfg := DefaultConfig()
	cfg.Host = host
	cfg.OperatorKeys = []string{a.creds["operator"].Trusted()}
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
	testenv.WaitFor(t, 10*time.Second, "responder serving quarantine.list to the operator", func() bool {
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
	testenv.WaitFor(t, 5*time.Second, "permissions violation for the collector's alert", func() bool {
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
	testenv.WaitFor(t, 10*time.Second, "quarantine restored after a restart", func() bool {
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
	testenv.WaitFor(t, 5*time.Second, "permissions violations for node-b's alerts and others' inboxes", func() bool {
		return resp.violation(containv1.AlertsSubject(other)) && resp.violation("_INBOX.>")
	})

	// A collector cannot release; the operator can.
	rctx2, rcancel := context.WithTimeout(ctx, time.Second)
	_, err = Release(rctx2, collector.nc, auth.NewSigner(a.creds["collector-"+host]), host, c.ID, "forged release", "")
	rcancel()
	if err == nil {
		t.Fatal("collector released a container")
	}
	testenv.WaitFor(t, 5*time.Second, "permissions violation for the collector's release", func() bool {
		return collector.violation(containv1.ControlSubject(host, VerbRelease))
	})
	if got := freezerState(t, c); got != "FROZEN" {
		t.Fatalf("container %s after the collector's release request", got)
	}
	// Signed by an unknown key (a collector's, through the operator's
	// connection): refused and counted; the container stays frozen.
	_, err = Release(ctx, operator.nc, auth.NewSigner(a.creds["collector-"+host]), host, c.ID, "forged", "")
	if err == nil || !strings.Contains(err.Error(), auth.ReasonUnknownKey) {
		t.Fatalf("release signed by a collector key: %v", err)
	}
	if n := testutil.ToFloat64(m.Refused.WithLabelValues(metrics.StageResponder, auth.ReasonUnknownKey)); n != 1 {
		t.Fatalf("refused unknown_key = %v, want 1", n)
	}
	signer := auth.NewSigner(a.creds["operator"])
	ev, err = Release(ctx, operator.nc, signer, host, c.ID, "investigated", "alice")
	if err != nil {
		t.Fatalf("operator release: %v", err)
	}
	if got, want := ev.GetAction().GetActor(), signer.Actor(); got != want || !strings.HasPrefix(got, "operator/") {
		t.Fatalf("release actor %q, want %q (the signing credential and OS user)", got, want)
	}
	rel := nextAction()
	ra := wantAction(t, rel, containv1.Action_TYPE_RELEASE, containv1.Action_RESULT_OK, c.ID)
	if ra.Actor != signer.Actor() || !strings.Contains(ra.Reason, "note: alice") {
		t.Fatalf("first RELEASE action by %q (%q), want the operator (a collector's got through?)", ra.Actor, ra.Reason)
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
