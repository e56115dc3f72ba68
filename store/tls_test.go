package store

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containsec/contain/internal/testenv"
	"github.com/containsec/contain/internal/tlsconfig"
)

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// startTLSClickHouse starts a throw-away ClickHouse (the platform's 18.16)
// whose native protocol also listens with TLS (tcp_port_secure) on a
// certificate of certs, with user default's password password. It returns
// the TLS address; the server is killed at cleanup.
func startTLSClickHouse(t *testing.T, certs testenv.Certs, password string) string {
	t.Helper()
	testenv.RequireRoot(t)
	bin := testenv.RequireCommand(t, "clickhouse-server")
	dir := t.TempDir()
	for _, d := range []string{"log", "data", "tmp", "user_files", "format_schemas"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	tcp, http, secure := freePort(t), freePort(t), freePort(t)
	cfg := fmt.Sprintf(`<?xml version="1.0"?>
<yandex>
    <logger><level>warning</level><log>%[1]s/log/server.log</log><errorlog>%[1]s/log/server.err.log</errorlog></logger>
    <http_port>%[2]d</http_port>
    <tcp_port>%[3]d</tcp_port>
    <tcp_port_secure>%[4]d</tcp_port_secure>
    <listen_host>127.0.0.1</listen_host>
    <openSSL><server>
        <certificateFile>%[5]s</certificateFile>
        <privateKeyFile>%[6]s</privateKeyFile>
        <verificationMode>none</verificationMode>
        <loadDefaultCAFile>false</loadDefaultCAFile>
        <cacheSessions>true</cacheSessions>
        <disableProtocols>sslv2,sslv3</disableProtocols>
        <preferServerCiphers>true</preferServerCiphers>
    </server></openSSL>
    <path>%[1]s/data/</path>
    <tmp_path>%[1]s/tmp/</tmp_path>
    <user_files_path>%[1]s/user_files/</user_files_path>
    <format_schema_path>%[1]s/format_schemas/</format_schema_path>
    <users_config>users.xml</users_config>
    <default_profile>default</default_profile>
    <default_database>default</default_database>
    <timezone>UTC</timezone>
    <mlock_executable>false</mlock_executable>
    <mark_cache_size>67108864</mark_cache_size>
</yandex>
`, dir, http, tcp, secure, certs.ServerCert, certs.ServerKey)
	users := fmt.Sprintf(`<?xml version="1.0"?>
<yandex>
    <profiles><default><allow_experimental_low_cardinality_type>1</allow_experimental_low_cardinality_type></default></profiles>
    <users><default><password>%s</password><networks><ip>127.0.0.1</ip></networks><profile>default</profile><quota>default</quota></default></users>
    <quotas><default><interval><duration>3600</duration><queries>0</queries><errors>0</errors><result_rows>0</result_rows><read_rows>0</read_rows><execution_time>0</execution_time></interval></default></quotas>
</yandex>
`, password)
	if err := os.WriteFile(filepath.Join(dir, "config.xml"), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "users.xml"), []byte(users), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := os.Create(filepath.Join(dir, "log", "stdout.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	cmd := exec.Command(bin, "--config-file="+filepath.Join(dir, "config.xml"))
	cmd.Dir, cmd.Stdout, cmd.Stderr = dir, out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	addr := fmt.Sprintf("127.0.0.1:%d", secure)
	deadline := time.Now().Add(90 * time.Second)
	for {
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.Close()
			return addr
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(filepath.Join(dir, "log", "server.err.log"))
			t.Fatalf("clickhouse with TLS not listening on %s: %s", addr, b)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestClickHouseTLS: the store writes rows through TLS to a real
// ClickHouse (a second, throw-away server with a certificate the test
// made), the password from an environment variable; a wrong CA fails
// Open clearly.
func TestClickHouseTLS(t *testing.T) {
	certs := testenv.MakeCerts(t)
	const password = "s3cret-for-tls-test"
	addr := startTLSClickHouse(t, certs, password)
	t.Setenv("CONTAIN_TEST_CH_PASSWORD", password)

	cfg := DefaultConfig()
	cfg.Addr = []string{addr}
	cfg.Database = "contain_tls"
	cfg.DialTimeout = 5 * time.Second
	cfg.InsertTimeout = 10 * time.Second
	cfg.PasswordEnv = "CONTAIN_TEST_CH_PASSWORD"
	cfg.TLS = tlsconfig.Config{CAFile: certs.CA, ServerName: "localhost"}
	var s *Store
	deadline := time.Now().Add(60 * time.Second)
	for {
		var err error
		s, err = Open(context.Background(), cfg, testenv.Logger(t))
		if err != nil {
			t.Fatalf("open over TLS: %v", err)
		}
		if s.Ready() {
			break
		}
		s.Close()
		if time.Now().After(deadline) {
			t.Fatal("store over TLS never ready")
		}
		time.Sleep(500 * time.Millisecond)
	}
	defer s.Close()
	ts := time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)
	if err := s.InsertBaseline(context.Background(), BaselineRow{Time: ts, Key: "sha256:tls", ImageDigest: "sha256:tls", Version: 1,
		Phase: "learning", Source: "analyzer", Doc: "{}"}); err != nil {
		t.Fatalf("insert over TLS: %v", err)
	}
	if n := queryUint(t, s, "SELECT count() FROM baselines WHERE image_digest = 'sha256:tls'"); n != 1 {
		t.Fatalf("rows written over TLS: %d, want 1", n)
	}

	bad := cfg
	bad.TLS = tlsconfig.Config{CAFile: certs.OtherCA, ServerName: "localhost"}
	_, err := Open(context.Background(), bad, testenv.Logger(t))
	if err == nil || !strings.Contains(err.Error(), "store.tls") || !strings.Contains(err.Error(), "not signed by the configured CA") {
		t.Fatalf("wrong CA: %v", err)
	}
	t.Logf("wrong CA: %v", err)

	wrongPw := cfg
	t.Setenv("CONTAIN_TEST_CH_PASSWORD", "nope")
	if s2, err := Open(context.Background(), wrongPw, testenv.Logger(t)); err == nil {
		s2.Close()
		t.Fatal("a wrong password opened the store")
	}
	unset := cfg
	unset.PasswordEnv = "CONTAIN_TEST_CH_UNSET"
	if err := unset.Validate(); err == nil || !strings.Contains(err.Error(), "store.password_env") {
		t.Fatalf("unset password env: %v", err)
	}
}
