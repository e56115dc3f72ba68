package bus_test

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/containsec/contain/internal/bus"
	"github.com/containsec/contain/internal/testenv"
)

// TestStartEmbeddedConfigFile: the file's authorization applies; its listen
// address and store dir are replaced by the EmbeddedConfig's.
func TestStartEmbeddedConfigFile(t *testing.T) {
	dir := t.TempDir()
	conf := filepath.Join(dir, "nats.conf")
	err := os.WriteFile(conf, []byte(`
listen: 0.0.0.0:4222
max_payload: 1MB
jetstream { store_dir: /nonexistent/never-used }
authorization {
  users: [
    { user: a, password: pa, permissions: { publish: { allow: ["x"] }, subscribe: { allow: ["_INBOX.>"] } } }
  ]
}
`), 0o600)
	if err != nil {
		t.Fatal(err)
	}
	store := filepath.Join(dir, "js")
	srv, err := bus.StartEmbedded(bus.EmbeddedConfig{Port: -1, StoreDir: store, ConfigFile: conf})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Shutdown(); srv.WaitForShutdown() })
	if o := srv.JetStreamConfig(); o == nil || o.StoreDir != filepath.Join(store, "jetstream") {
		t.Fatalf("JetStream store dir %+v, want %s", o, store)
	}
	if got := srv.Addr().String(); got == "0.0.0.0:4222" {
		t.Fatalf("listening on the file's address %s", got)
	}
	if _, err := nats.Connect(srv.ClientURL()); err == nil {
		t.Fatal("connected without credentials")
	}
	log := testenv.Logger(t)
	if _, _, err := bus.Connect(srv.ClientURL(), "wrong", log, nats.UserInfo("a", "nope"), nats.MaxReconnects(0)); err == nil {
		t.Fatal("connected with a wrong password")
	}
	nc, _, err := bus.Connect(srv.ClientURL(), "ok", log, nats.UserInfo("a", "pa"))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if mp := nc.MaxPayload(); mp < bus.MaxPayload {
		t.Fatalf("max payload %d, want >= %d", mp, bus.MaxPayload)
	}
	if err := nc.Publish("x", nil); err != nil {
		t.Fatal(err)
	}
	errs := make(chan error, 1)
	nc.SetErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
		select {
		case errs <- err:
		default:
		}
	})
	_ = nc.Publish("y", nil)
	_ = nc.Flush()
	if err := <-errs; !errors.Is(err, nats.ErrPermissionViolation) {
		t.Fatalf("publishing on y: %v, want a permissions violation", err)
	}
}

func TestStartEmbeddedBadConfigFile(t *testing.T) {
	dir := t.TempDir()
	conf := filepath.Join(dir, "nats.conf")
	if err := os.WriteFile(conf, []byte("authorization { users: [ { nkey: $UNDEFINED_CONTAIN_VAR } ] }\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := bus.StartEmbedded(bus.EmbeddedConfig{Port: -1, StoreDir: filepath.Join(dir, "js"), ConfigFile: conf})
	if err == nil {
		t.Fatal("started with an undefined variable in the config file")
	}
	t.Log(err)
}
