package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/containsec/contain/internal/auth"
	"github.com/containsec/contain/internal/bus"
	"github.com/containsec/contain/internal/testenv"
	"github.com/containsec/contain/responder"
	"github.com/containsec/contain/schemas/containv1"
)

// TestDeployConfMatchesTable: deploy/nats/contain.conf is exactly what
// `contain nats-conf --hosts node-a,node-b` makes from the permission table
// the embedded server enforces, so the shipped file cannot drift from it.
func TestDeployConfMatchesTable(t *testing.T) {
	var want bytes.Buffer
	if err := writeNATSConf(&want, deployConfHosts, 1); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(testenv.RepoRoot(t), deployConf)
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want.Bytes()) {
		t.Fatalf("%s differs from the permission table; regenerate it:\n  go run ./cmd/contain nats-conf --hosts %s > %s",
			deployConf, strings.Join(deployConfHosts, ","), deployConf)
	}
	// The CLI prints the same, and refuses a host that is no subject token.
	out, err := runCLI(t, "nats-conf", "--hosts", strings.Join(deployConfHosts, ","))
	if err != nil || out != want.String() {
		t.Fatalf("contain nats-conf: %v", err)
	}
	if _, err := runCLI(t, "nats-conf", "--hosts", "a.b"); err == nil || !strings.Contains(err.Error(), "--hosts") {
		t.Fatalf("nats-conf accepted host a.b: %v", err)
	}
	// Every user of the table is in the file, with its key variable.
	for _, u := range auth.Table(auth.DefaultNames(), deployConfHosts) {
		if !strings.Contains(string(got), "nkey: $"+auth.EnvVar(u.Name)+"\n") {
			t.Errorf("%s: no user %s", deployConf, u.Name)
		}
	}
}

// freePort is a TCP port nothing listens on right now.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// TestAuthByDefault runs the real binary's `contain run` with contain's
// defaults (only paths and ports moved into the test): it creates the
// per-user credentials root-only, its embedded NATS refuses an anonymous
// client, an unprivileged user's `contain release` fails naming the
// credentials it cannot read, root's release of a container the analyzer's
// alert froze records the operator credential and OS user as the actor
// (--actor only as a note), and an unsigned release is refused and counted.
func TestAuthByDefault(t *testing.T) {
	testenv.RequireRoot(t)
	bin := buildContain(t)
	base, err := os.MkdirTemp("", "contain-auth-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	if err := os.Chmod(base, 0o755); err != nil {
		t.Fatal(err)
	}
	creds := filepath.Join(base, "creds")
	natsPort, metricsPort := freePort(t), freePort(t)
	url := fmt.Sprintf("nats://127.0.0.1:%d", natsPort)
	const host = "authhost"
	common := []string{"--host", host, "--creds-dir", creds}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var logs syncBuffer
	run := exec.CommandContext(ctx, bin, append([]string{"run", "--stages", "responder", "--nats-store-dir", filepath.Join(base, "nats"),
		"--metrics-listen", fmt.Sprintf("127.0.0.1:%d", metricsPort)}, common...)...)
	run.Env = append(os.Environ(), fmt.Sprintf("CONTAIN_NATS_EMBEDDED_PORT=%d", natsPort))
	run.Stdout, run.Stderr = &logs, &logs
	run.Cancel = func() error { return run.Process.Signal(os.Interrupt) }
	run.WaitDelay = 10 * time.Second
	if err := run.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		_ = run.Wait()
		if t.Failed() {
			t.Logf("contain run said:\n%s", logs.String())
		}
	})
	testenv.WaitFor(t, 20*time.Second, "contain run up", func() bool { return strings.Contains(logs.String(), "contain running") })

	// The credentials: one per user, root-only (no contain-operators group
	// here), in a directory operators can traverse.
	for _, u := range auth.Table(auth.DefaultNames(), []string{host}) {
		st, err := os.Stat(auth.SeedPath(creds, u.Name))
		if err != nil {
			t.Fatalf("credentials of %s: %v", u.Name, err)
		}
		if sys := st.Sys().(*syscall.Stat_t); st.Mode().Perm() != 0o600 || sys.Uid != 0 {
			t.Errorf("%s: mode %v uid %d, want 0600 root", u.Name, st.Mode().Perm(), sys.Uid)
		}
	}

	// An anonymous client is refused.
	if nc, err := nats.Connect(url, nats.MaxReconnects(0)); err == nil {
		nc.Close()
		t.Fatal("an anonymous client connected to contain run's NATS")
	} else if !strings.Contains(strings.ToLower(err.Error()), "authorization") {
		t.Fatalf("anonymous client: %v, want an authorization violation", err)
	}

	// A container the analyzer's alert freezes.
	c := testenv.RunContainer(t, "authdefault", testenv.ContainerSpec{})
	aseed, err := auth.LoadSeed(auth.SeedPath(creds, auth.RoleAnalyzer))
	if err != nil {
		t.Fatal(err)
	}
	_, ajs, err := bus.Connect(url, "analyzer", testenv.Logger(t), nats.Nkey(aseed.PublicKey(), aseed.KP.Sign), nats.CustomInboxPrefix(auth.InboxPrefix("analyzer")))
	if err != nil {
		t.Fatal(err)
	}
	ids := containv1.NewIDGen()
	alert := &containv1.Event{Id: ids.Next(), Host: host, ContainerId: c.ID, Kind: containv1.Kind_KIND_ALERT, WallNs: time.Now().UnixNano(),
		SchemaVersion: containv1.SchemaVersion, Body: &containv1.Event_Alert{Alert: &containv1.Alert{Score: 1, Rule: "exec.unseen",
			Reasons: []*containv1.Reason{{Code: "exec.unseen", Message: "test", Score: 1}}}}}
	if err := bus.Publish(ctx, ajs, containv1.AlertsSubject(host), bus.NewProducer("central", "analyzer").Batch([]*containv1.Event{alert})); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 15*time.Second, "container frozen", func() bool { s, _ := c.FreezerState(); return s == "FROZEN" })

	// nobody cannot read the operator credentials, and is told so.
	rel := exec.Command(bin, append([]string{"release", c.ID, "--reason", "not mine", "--nats-url", url}, common...)...)
	asNobody(rel)
	out, err := rel.CombinedOutput()
	want := "no operator credentials readable at " + auth.SeedPath(creds, auth.RoleOperator) + ": permission denied (are you in group contain-operators?)"
	if err == nil || !strings.Contains(string(out), want) {
		t.Fatalf("release as nobody: %v\n%s\nwant %q", err, out, want)
	}
	t.Logf("release as nobody: %s", strings.TrimSpace(string(out)))
	if s, _ := c.FreezerState(); s != "FROZEN" {
		t.Fatalf("container %s after nobody's release", s)
	}

	// An unsigned release, on a connection allowed to send it (the
	// operator's), is refused and counted.
	oseed, err := auth.LoadSeed(auth.SeedPath(creds, auth.RoleOperator))
	if err != nil {
		t.Fatal(err)
	}
	onc, _, err := bus.Connect(url, "operator", testenv.Logger(t), nats.Nkey(oseed.PublicKey(), oseed.KP.Sign), nats.CustomInboxPrefix(auth.InboxPrefix("operator")))
	if err != nil {
		t.Fatal(err)
	}
	reply, err := onc.Request(containv1.ControlSubject(host, responder.VerbRelease), []byte(`{"container_id":"`+c.ID+`","actor":"root","reason":"forged"}`), 5*time.Second)
	if err != nil || !strings.Contains(string(reply.Data), auth.ReasonUnsigned) {
		t.Fatalf("unsigned release: %v %s", err, reply.Data)
	}
	metric := `contain_refused_total{reason="unsigned",stage="responder"} 1`
	testenv.WaitFor(t, 5*time.Second, metric, func() bool { return strings.Contains(scrape(t, metricsPort), metric) })

	// root's release: the actor is the credential and the OS user.
	out, err = exec.Command(bin, append([]string{"release", c.ID, "--reason", "checked", "--actor", "I am alice", "--nats-url", url}, common...)...).CombinedOutput()
	actor := "operator/" + auth.LocalOSUser()
	if err != nil || !strings.Contains(string(out), "by "+actor) {
		t.Fatalf("release as root: %v\n%s\nwant by %s", err, out, actor)
	}
	t.Logf("release as root: %s", strings.TrimSpace(string(out)))
	if s, _ := c.FreezerState(); s != "THAWED" {
		t.Fatalf("container %s after root's release", s)
	}
	// The recorded action, read back with the reader's credentials.
	out, err = exec.Command(bin, append([]string{"alerts", "--nats-url", url}, common...)...).CombinedOutput()
	if err != nil || !strings.Contains(string(out), c.ID) {
		t.Fatalf("alerts as reader: %v\n%s", err, out)
	}
	rseed, err := auth.LoadSeed(auth.SeedPath(creds, auth.RoleReader))
	if err != nil {
		t.Fatal(err)
	}
	_, rjs, err := bus.Connect(url, "reader", testenv.Logger(t), nats.Nkey(rseed.PublicKey(), rseed.KP.Sign), nats.CustomInboxPrefix(auth.InboxPrefix("reader")))
	if err != nil {
		t.Fatal(err)
	}
	var release *containv1.Action
	if err := readStream(ctx, rjs, containv1.StreamActions, containv1.ActionsSubject(host), time.Now().Add(-time.Hour), time.Time{}, false,
		func(b *containv1.Batch) error {
			for _, ev := range b.Events {
				if a := ev.GetAction(); a.GetType() == containv1.Action_TYPE_RELEASE {
					release = a
				}
			}
			return nil
		}, func(string, error) {}); err != nil {
		t.Fatal(err)
	}
	if release == nil || release.Actor != actor || !strings.Contains(release.Reason, "note: I am alice") {
		t.Fatalf("recorded release %+v, want actor %q and the --actor text only as a note", release, actor)
	}
}

func scrape(t *testing.T, port int) string {
	t.Helper()
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/metrics", port))
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// TestSecurityDocRoles: docs/security.md lists every user of the
// permission table in its roles table.
func TestSecurityDocRoles(t *testing.T) {
	doc, err := os.ReadFile(filepath.Join(testenv.RepoRoot(t), "docs", "security.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range auth.Table(auth.DefaultNames(), []string{"HOST"}) {
		if name := strings.Replace(u.Name, "HOST", "<host>", 1); !strings.Contains(string(doc), "\n| `"+name+"` |") {
			t.Errorf("docs/security.md: no row for %s in the roles table", name)
		}
	}
}
