package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/containsec/contain/internal/testenv"
	"github.com/containsec/contain/internal/tlsconfig"
)

// TestStagesConnectOverTLS: a stage connects (the same connect every
// stage uses) to a real NATS server that requires TLS and a client
// certificate, with nats.tls set; without the CA it fails naming
// nats.tls and the CA.
func TestStagesConnectOverTLS(t *testing.T) {
	certs := testenv.MakeCerts(t)
	caPEM, err := os.ReadFile(certs.CA)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	srvCert, err := tls.LoadX509KeyPair(certs.ServerCert, certs.ServerKey)
	if err != nil {
		t.Fatal(err)
	}
	s, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(), NoLog: true, NoSigs: true,
		TLS: true, TLSVerify: true, TLSTimeout: 2,
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{srvCert}, ClientCAs: pool, ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS12}})
	if err != nil {
		t.Fatal(err)
	}
	go s.Start()
	t.Cleanup(s.Shutdown)
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats not ready")
	}
	cfg := defaultConfig()
	cfg.Host = "tls-node"
	cfg.NATS.URL = s.ClientURL()
	cfg.NATS.TLS = tlsconfig.Config{CAFile: certs.CA, CertFile: certs.ClientCert, KeyFile: certs.ClientKey, ServerName: "localhost"}
	if err := cfg.validate([]string{stageAnalyzer}); err != nil {
		t.Fatal(err)
	}
	nc, js, closeNATS, err := connect(&cfg, "analyzer", testenv.Logger(t))
	if err != nil {
		t.Fatalf("stage connect over TLS: %v", err)
	}
	defer closeNATS()
	if !nc.TLSRequired() {
		t.Error("not over TLS")
	}
	if _, err := js.AccountInfo(t.Context()); err != nil {
		t.Fatalf("jetstream over TLS: %v", err)
	}

	cfg.NATS.TLS.CAFile = ""
	cfg.NATS.TLS.Enabled = true
	_, _, _, err = connect(&cfg, "analyzer", testenv.Logger(t))
	if !errors.Is(err, tlsconfig.ErrUnknownAuthority) || !strings.Contains(err.Error(), "nats.tls") {
		t.Fatalf("without the CA: %v", err)
	}
	t.Logf("without the CA: %v", err)
}
