package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestCheckConfigRedactsPassword: check-config prints the configuration
// but never the ClickHouse password; the TLS and password-source keys are
// validated by name.
func TestCheckConfigRedactsPassword(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "c.yaml")
	const pw = "hunter2-do-not-print"
	os.WriteFile(cfg, []byte("host: node-1\nstore:\n  password: "+pw+"\n"), 0o600)
	out, err := runCLI(t, "check-config", "-c", cfg)
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if strings.Contains(out, pw) || !strings.Contains(out, "    password: '********'") {
		t.Fatalf("password printed or not redacted:\n%s", out)
	}
	for body, key := range map[string]string{
		"store:\n  password: a\n  password_env: B\n":                                  "store.password",
		"store:\n  password_file: /nonexistent/pw\n":                                  "store.password_file",
		"store:\n  tls:\n    cert_file: /etc/hostname\n":                              "store.tls.cert_file",
		"nats:\n  tls:\n    ca_file: /nonexistent/ca.pem\n":                           "nats.tls.ca_file",
		"nats:\n  tls:\n    ca_file: /etc/hostname\n    insecure_skip_verify: true\n": "nats.tls.insecure_skip_verify",
		"responder:\n  policy:\n    trusted_labels: [\" \"]\n":                        "responder.policy.trusted_labels",
	} {
		os.WriteFile(cfg, []byte(body), 0o600)
		_, err := runCLI(t, "check-config", "-c", cfg)
		if err == nil || !strings.Contains(err.Error(), key) {
			t.Errorf("config %q: error %v does not name %s", body, err, key)
		}
	}
	// A dotted label key is trusted through the config file.
	os.WriteFile(cfg, []byte("responder:\n  policy:\n    trusted_labels: [io.contain.critical]\n"), 0o600)
	if out, err := runCLI(t, "check-config", "-c", cfg); err != nil || !strings.Contains(out, "io.contain.critical") {
		t.Fatalf("trusted_labels: %v\n%s", err, out)
	}
	// A password file is read, and never printed either.
	pwf := filepath.Join(dir, "pw")
	os.WriteFile(pwf, []byte(pw+"\n"), 0o600)
	os.WriteFile(cfg, []byte("store:\n  password_file: "+pwf+"\n"), 0o600)
	if out, err := runCLI(t, "check-config", "-c", cfg); err != nil || strings.Contains(out, pw) {
		t.Fatalf("password_file: %v\n%s", err, out)
	}
}
