package bus_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/containsec/contain/internal/bus"
	"github.com/containsec/contain/internal/testenv"
	"github.com/containsec/contain/internal/tlsconfig"
	"github.com/containsec/contain/schemas/containv1"
)

// TestTLSRequired runs a real NATS server that requires TLS and a client
// certificate: a client with the CA and its certificate connects and
// carries a batch through JetStream; one without the CA, with a wrong CA,
// or without a certificate fails with a clear error.
func TestTLSRequired(t *testing.T) {
	certs := testenv.MakeCerts(t)
	pool := x509.NewCertPool()
	caPEM, err := os.ReadFile(certs.CA)
	if err != nil {
		t.Fatal(err)
	}
	pool.AppendCertsFromPEM(caPEM)
	srvCert, err := tls.LoadX509KeyPair(certs.ServerCert, certs.ServerKey)
	if err != nil {
		t.Fatal(err)
	}
	s, err := server.NewServer(&server.Options{
		Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(), NoLog: true, NoSigs: true,
		TLS: true, TLSVerify: true, TLSTimeout: 2,
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{srvCert}, ClientCAs: pool, ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS12},
	})
	if err != nil {
		t.Fatal(err)
	}
	go s.Start()
	t.Cleanup(s.Shutdown)
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats not ready")
	}
	url := s.ClientURL()

	good := tlsconfig.Config{CAFile: certs.CA, CertFile: certs.ClientCert, KeyFile: certs.ClientKey}
	opt, err := bus.TLSOption(good, "nats.tls")
	if err != nil || opt == nil {
		t.Fatalf("TLSOption: %v %v", opt, err)
	}
	nc, js, err := bus.Connect(url, "tls-test", testenv.Logger(t), opt)
	if err != nil {
		t.Fatalf("connecting with the CA and a client certificate: %v", err)
	}
	defer nc.Close()
	if !nc.TLSRequired() {
		t.Error("connection not over TLS")
	}
	ctx := context.Background()
	if err := bus.EnsureStreams(ctx, js, bus.StreamsConfig{Memory: true}); err != nil {
		t.Fatal(err)
	}
	b := bus.NewProducer("h", "collector").Batch([]*containv1.Event{{Host: "h", Kind: containv1.Kind_KIND_EXEC, SchemaVersion: containv1.SchemaVersion}})
	if err := bus.Publish(ctx, js, containv1.RawSubject("h"), b); err != nil {
		t.Fatalf("publishing over TLS: %v", err)
	}

	for name, c := range map[string]tlsconfig.Config{
		"no CA":          {Enabled: true, CertFile: certs.ClientCert, KeyFile: certs.ClientKey},
		"wrong CA":       {CAFile: certs.OtherCA, CertFile: certs.ClientCert, KeyFile: certs.ClientKey},
		"no client cert": {CAFile: certs.CA},
	} {
		opt, err := bus.TLSOption(c, "nats.tls")
		if err != nil {
			t.Fatal(err)
		}
		_, _, err = bus.Connect(url, "tls-bad", testenv.Logger(t), opt, nats.MaxReconnects(0), nats.Timeout(2*time.Second))
		err = tlsconfig.Explain("nats.tls", err)
		if err == nil {
			t.Fatalf("%s: connected", name)
		}
		t.Logf("%s: %v", name, err)
		if name != "no client cert" && (!errors.Is(err, tlsconfig.ErrUnknownAuthority) || !strings.Contains(err.Error(), "nats.tls")) {
			t.Errorf("%s: unclear error %v", name, err)
		}
	}
	if _, err := bus.TLSOption(tlsconfig.Config{CAFile: certs.CA, InsecureSkipVerify: true}, "nats.tls"); err == nil {
		t.Error("insecure_skip_verify with a CA accepted")
	}
	if _, err := bus.TLSOption(tlsconfig.Config{CertFile: certs.ClientCert}, "nats.tls"); err == nil || !strings.Contains(err.Error(), "nats.tls.cert_file") {
		t.Errorf("a certificate without its key: %v", err)
	}
}
