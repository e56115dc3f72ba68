package enricher

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// TestAudit audits a poorly built image pushed to an in-process registry
// (with its Dockerfile) and a well built one, and renders the results.
func TestAudit(t *testing.T) {
	host := startRegistry(t)
	old := time.Date(2019, 1, 1, 0, 0, 0, 0, time.UTC)
	bad := buildImage(t, map[string]int64{"usr/bin/su2": 0o4755, "bin/sh": 0o755}, v1.Config{
		ExposedPorts: map[string]struct{}{"22/tcp": {}, "8080/tcp": {}},
		Env:          []string{"DB_PASSWORD=hunter2", "MODE=prod"},
	}, []v1.History{
		{Created: v1.Time{Time: old}, CreatedBy: "/bin/sh -c #(nop) ADD file:123 in /"},
		{Created: v1.Time{Time: old.Add(time.Hour)}, CreatedBy: "RUN /bin/sh -c apt-get install -y curl # buildkit"},
		{CreatedBy: "RUN /bin/sh -c curl -fsSL https://get.example.com/install.sh | sh", EmptyLayer: true},
		{CreatedBy: "ADD https://example.com/tool.tgz /opt/ # buildkit", EmptyLayer: true},
	})
	push(t, bad, host+"/shop/bad:latest")
	good := buildImage(t, map[string]int64{"app/web": 0o755}, v1.Config{User: "1000:1000", ExposedPorts: map[string]struct{}{"8080/tcp": {}}},
		[]v1.History{{Created: v1.Time{Time: time.Now().Add(-24 * time.Hour)}, CreatedBy: "RUN /bin/sh -c apt-get update && apt-get install -y ca-certificates"}})
	gd := push(t, good, host+"/shop/good:1.0")

	df := filepath.Join(t.TempDir(), "Dockerfile")
	os.WriteFile(df, []byte("FROM debian:10\nRUN apt-get install -y vim\nEXPOSE 9229\n"), 0o644)
	cfg := DefaultAuditConfig()
	cfg.Registry.Insecure = []string{host}
	cfg.Registry.Keychain = false
	cfg.Dockerfile = df
	findings, err := AuditWith(context.Background(), cfg, host+"/shop/bad:latest")
	if err != nil {
		t.Fatal(err)
	}
	rules := map[string]Finding{}
	for _, f := range findings {
		rules[f.Rule] = f
		if strings.Contains(f.Evidence, "hunter2") {
			t.Errorf("finding leaks a secret: %+v", f)
		}
	}
	for _, want := range []string{"apt_install_without_update", "curl_pipe_shell", "add_from_url", "no_user", "latest_tag", "stale_base", "secret_env", "debug_port_exposed", "setuid_added"} {
		if _, ok := rules[want]; !ok {
			t.Errorf("rule %s not reported; got %v", want, findings)
		}
	}
	if f := rules["setuid_added"]; !strings.Contains(f.Evidence, "/usr/bin/su2") {
		t.Errorf("setuid evidence %q", f.Evidence)
	}
	if findings[0].Severity != SeverityHigh || !Exceeds(findings, SeverityHigh) || Exceeds(findings, SeverityCritical) {
		t.Errorf("severity order or gate wrong: first %v", findings[0])
	}

	cfg.Dockerfile = ""
	gf, err := AuditWith(context.Background(), cfg, host+"/shop/good@"+gd)
	if err != nil {
		t.Fatal(err)
	}
	if len(gf) != 0 {
		t.Errorf("well built image has findings: %+v", gf)
	}

	var tbl, js bytes.Buffer
	if err := RenderTable(&tbl, findings); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(tbl.String(), "SEVERITY") || !strings.Contains(tbl.String(), "HIGH") {
		t.Errorf("table:\n%s", tbl.String())
	}
	if err := RenderJSON(&js, findings); err != nil {
		t.Fatal(err)
	}
	var back []Finding
	if err := json.Unmarshal(js.Bytes(), &back); err != nil || len(back) != len(findings) || back[0].Severity != findings[0].Severity {
		t.Errorf("JSON round trip: %v, %d findings", err, len(back))
	}
	// Unreachable registry: a clear error naming the source.
	cfg.Registry.Insecure = []string{"127.0.0.1:1"}
	if _, err := AuditWith(context.Background(), cfg, "127.0.0.1:1/x/y:1"); err == nil || !strings.Contains(err.Error(), "registry") {
		t.Errorf("unreachable registry: %v", err)
	}
	if _, err := ParseSeverity("HIGH"); err != nil {
		t.Error(err)
	}
	if _, err := ParseSeverity("urgent"); err == nil {
		t.Error("ParseSeverity accepted urgent")
	}
}
