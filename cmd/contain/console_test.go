package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/chromedp/chromedp"

	"github.com/containsec/contain/analyzer"
	"github.com/containsec/contain/console"
	"github.com/containsec/contain/internal/testenv"
)

// chromiumPath finds Debian's headless-capable Chromium; CI installs it
// (scripts/setup.sh), so there a missing browser fails the test.
func chromiumPath(t *testing.T) string {
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") != "" {
		t.Fatal("no chromium on PATH: scripts/setup.sh installs it")
	}
	t.Skip("no chromium on PATH (apt install chromium)")
	return ""
}

// TestConsoleBrowser drives the web console in a real headless Chromium
// against the real pipeline under the shipped NATS permissions: a runc
// container is frozen for an unexpected exec, the Quarantine view shows it
// within 2s of the freeze with its reasons, ATT&CK ids and forensic
// snapshot; requests without a session, without the CSRF token, from
// another origin, or from an analyst are refused and leave it frozen; a
// Release through the page thaws it and the recorded actor is the
// logged-in user. Each view is saved as a screenshot
// (CONTAIN_TEST_ARTIFACTS, else a temporary directory).
func TestConsoleBrowser(t *testing.T) {
	testenv.RequireRoot(t)
	browser := chromiumPath(t)
	a := deployNATS(t)
	log := testenv.Logger(t)
	const learning = 4 * time.Second
	host := "node-a"

	cfg := defaultConfig()
	cfg.Host = host
	cfg.Auth.CredsDir = a.dir
	cfg.Analyzer.LearningWindow = learning
	cfg.Analyzer.ExecSessions = analyzer.ExecSessionsAlert // the deviation below is a runc exec
	cfg.Responder.Threshold = 0.5
	cfg.Enricher.Registry.Enabled = false
	cfg.Store.Addr = []string{testenv.ClickHouseAddr(t)}
	cfg.Store.Database = fmt.Sprintf("contain_console_%d", time.Now().UnixNano())
	cfg.Store.InsertMaxAge = 200 * time.Millisecond
	t.Cleanup(func() { dropDatabase(t, cfg.Store.Addr[0], cfg.Store.Database) })
	alicePW, bobPW := "alice-console-pw", "bob-console-pw"
	cfg.Console.Users = []console.User{
		{Name: "alice", Role: console.RoleOperator, PasswordHash: mustHash(t, alicePW)},
		{Name: "bob", Role: console.RoleAnalyst, PasswordHash: mustHash(t, bobPW)},
	}
	cfg.propagate()
	stages := []string{stageStore, stageResponder, stageAnalyzer, stageEnricher, stageCollector}
	if err := cfg.validate(stages); err != nil {
		t.Fatal(err)
	}
	ctx := a.startStages(t, cfg, host, stages, log)
	srv, stop, err := newConsole(ctx, a.stageConfig(cfg, "operator"), log.With("stage", "console"), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stop)
	web := httptest.NewServer(srv)
	t.Cleanup(web.Close)
	time.Sleep(time.Second)

	c := testenv.RunContainer(t, "console", testenv.ContainerSpec{
		Args: []string{"/bin/sh", "-c", "while true; do /bin/sleep 0.3; done"},
		Annotations: map[string]string{
			"org.opencontainers.image.ref.name": "demo/console:1.0",
			"org.opencontainers.image.digest":   "sha256:" + strings.Repeat("c0", 32),
		},
	})
	time.Sleep(learning + 3*time.Second)
	if s, _ := c.FreezerState(); s != "THAWED" {
		t.Fatalf("the container is %s before the deviation", s)
	}

	// The browser, logged in as the operator alice.
	actx, acancel := chromedp.NewExecAllocator(ctx, append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(browser), chromedp.NoSandbox, chromedp.WindowSize(1366, 900))...)
	t.Cleanup(acancel)
	bctx, bcancel := chromedp.NewContext(actx)
	t.Cleanup(bcancel)
	// Start the browser on bctx itself: the first run's context owns it.
	if err := chromedp.Do(bctx); err != nil {
		t.Fatalf("starting %s: %v", browser, err)
	}
	shots := artifactsDir(t)
	shot := func(name string) {
		png, err := chromedp.Run(bctx, chromedp.FullScreenshot(100))
		if err != nil {
			t.Errorf("screenshot %s: %v", name, err)
			return
		}
		path := filepath.Join(shots, "console-"+name+".png")
		if err := os.WriteFile(path, png, 0o644); err != nil {
			t.Error(err)
		}
		t.Logf("screenshot: %s", path)
	}
	do := func(what string, steps ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		tctx, tcancel := context.WithTimeout(bctx, 20*time.Second)
		defer tcancel()
		if err := chromedp.Do(tctx, steps...); err != nil {
			t.Fatalf("browser: %s: %v", what, err)
		}
	}
	textOf := func(sel string) string {
		t.Helper()
		tctx, tcancel := context.WithTimeout(bctx, 20*time.Second)
		defer tcancel()
		s, err := chromedp.Run(tctx, chromedp.Text(chromedp.CSS(sel)))
		if err != nil {
			t.Fatalf("browser: text of %s: %v", sel, err)
		}
		return s
	}
	count := func(sel string) int {
		t.Helper()
		n, err := chromedp.Run(bctx, chromedp.Evaluate[int](fmt.Sprintf("document.querySelectorAll(%q).length", sel)))
		if err != nil {
			t.Fatalf("browser: counting %s: %v", sel, err)
		}
		return n
	}
	do("log in", chromedp.Navigate(web.URL+"/quarantine"), chromedp.WaitVisible(chromedp.ID("user")))
	shot("login")
	do("log in", chromedp.SendKeys(chromedp.ID("user"), "alice"), chromedp.SendKeys(chromedp.ID("password"), alicePW),
		chromedp.Submit(chromedp.ID("password")), chromedp.WaitVisible(chromedp.ID("me")))

	// The deviation, and the freeze.
	go func() { _, _ = c.Exec(20*time.Second, "/bin/wget", "--help") }()
	testenv.WaitFor(t, 20*time.Second, "container frozen", func() bool {
		s, _ := c.FreezerState()
		return s == "FROZEN"
	})
	frozenAt := time.Now()
	sel := "#q-" + c.ID
	var shown time.Duration
	for {
		do("quarantine view", chromedp.Navigate(web.URL+"/quarantine"))
		if count(sel) == 1 {
			shown = time.Since(frozenAt)
			break
		}
		if time.Since(frozenAt) > 10*time.Second {
			t.Fatalf("the quarantine view does not show %s 10s after its freeze", c.ID)
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("frozen → shown in the quarantine view: %v", shown)
	if shown > 2*time.Second {
		t.Errorf("the quarantine view showed the frozen container %v after its freeze, want ≤ 2s", shown)
	}
	var text string
	testenv.WaitFor(t, 5*time.Second, "reasons and snapshot in the quarantine view", func() bool {
		do("quarantine text", chromedp.Navigate(web.URL+"/quarantine"))
		text = textOf(sel)
		return strings.Contains(text, "exec.unseen") && strings.Contains(text, "Forensic snapshot")
	})
	for _, want := range []string{"exec.unseen", "/bin/wget", "T1", "Forensic snapshot", "/bin/sh"} {
		if !strings.Contains(text, want) {
			t.Errorf("the quarantine view of %s lacks %q:\n%s", c.ID, want, text)
		}
	}
	shot("quarantine")

	// Refusals: each leaves the container frozen.
	refusals(t, web.URL, c.ID, host, bobPW)
	if s, _ := c.FreezerState(); s != "FROZEN" {
		t.Fatalf("a refused request changed the container: %s", s)
	}

	// The other views.
	do("now", chromedp.Navigate(web.URL+"/"), chromedp.WaitVisible(chromedp.ID("alerts")))
	shot("now")
	do("container", chromedp.Navigate(web.URL+"/container/"+c.ID), chromedp.WaitVisible(chromedp.ID("pt-h")))
	text = textOf("main")
	if !strings.Contains(text, "exec.unseen") || !strings.Contains(text, "pause ok") {
		t.Errorf("the container view lacks the alert or the pause:\n%s", text)
	}
	// Its history from ClickHouse (contain timeline's): the wget exec.
	testenv.WaitFor(t, 20*time.Second, "the wget exec in the container view's ClickHouse history", func() bool {
		do("container", chromedp.Navigate(web.URL+"/container/"+c.ID))
		text = textOf("#ch-h + *, .history")
		return strings.Contains(text, "/bin/wget")
	})
	shot("container")
	do("baselines", chromedp.Navigate(web.URL+"/baselines"))
	text = textOf("main")
	if !strings.Contains(text, "demo/console") {
		t.Errorf("the baselines view lacks the image's baseline:\n%s", text)
	}
	// Lock it through the page: the analyzer applies the signed operation
	// and the page names the logged-in user.
	do("lock", chromedp.Navigate(web.URL+"/baselines"), chromedp.Submit(chromedp.CSS("form[action='/baselines/lock'] button")),
		chromedp.WaitVisible(chromedp.CSS(".msg")))
	testenv.WaitFor(t, 15*time.Second, "the baseline locked by the console user", func() bool {
		do("baselines", chromedp.Navigate(web.URL+"/baselines"))
		text = textOf("main")
		return strings.Contains(text, "lock by operator/console:alice") && strings.Contains(text, "locked")
	})
	shot("baselines")
	do("health", chromedp.Navigate(web.URL+"/health"))
	text = textOf("main")
	if !strings.Contains(text, "console NATS connection") {
		t.Errorf("the health view:\n%s", text)
	}
	shot("health")

	// Release through the page.
	do("release", chromedp.Navigate(web.URL+"/quarantine"),
		chromedp.SendKeys(chromedp.ID("reason-"+c.ID), "investigated in the console test"),
		chromedp.Submit(chromedp.ID("reason-"+c.ID)), chromedp.WaitVisible(chromedp.CSS(".msg")))
	text = textOf(".msg")
	t.Logf("release: %s", text)
	const actor = "operator/console:alice"
	if !strings.Contains(text, "released "+c.ID) || !strings.Contains(text, actor) {
		t.Errorf("release message %q: want the container released and recorded as %s", text, actor)
	}
	testenv.WaitFor(t, 10*time.Second, "container thawed", func() bool {
		s, _ := c.FreezerState()
		return s == "THAWED"
	})
	// The recorded action (from the actions stream) names alice.
	testenv.WaitFor(t, 10*time.Second, "release action with the console user as actor", func() bool {
		do("actions", chromedp.Navigate(web.URL+"/container/"+c.ID))
		text = textOf(".timeline")
		return strings.Contains(text, "release ok by "+actor)
	})
}

func dropDatabase(t *testing.T, addr, db string) {
	conn, err := clickhouse.Open(&clickhouse.Options{Addr: []string{addr}})
	if err != nil {
		t.Log(err)
		return
	}
	defer conn.Close()
	_ = conn.Exec(context.Background(), "DROP DATABASE IF EXISTS "+db)
}

func mustHash(t *testing.T, pw string) string {
	h, err := console.HashPassword(pw)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func artifactsDir(t *testing.T) string {
	dir := os.Getenv("CONTAIN_TEST_ARTIFACTS")
	if dir == "" {
		dir = t.TempDir()
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// refusals sends the console what an attacker or an analyst could: each
// state change must be refused.
func refusals(t *testing.T, base, container, host, bobPW string) {
	t.Helper()
	noRedirect := func(c *http.Client) *http.Client {
		c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
		return c
	}
	release := url.Values{"host": {host}, "container": {container}, "reason": {"attack"}}
	post := func(c *http.Client, path string, form url.Values, origin string) int {
		req, _ := http.NewRequest(http.MethodPost, base+path, strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		if origin != "" {
			req.Header.Set("Origin", origin)
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	anon := noRedirect(&http.Client{})
	if code := post(anon, "/quarantine/release", release, base); code != http.StatusUnauthorized {
		t.Errorf("an unauthenticated release: HTTP %d, want 401", code)
	}
	resp, err := anon.Get(base + "/quarantine")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/login" {
		t.Errorf("an unauthenticated view: HTTP %d to %q, want a redirect to /login", resp.StatusCode, resp.Header.Get("Location"))
	}
	login := func(user, pw string) (*http.Client, string) {
		jar, _ := cookiejar.New(nil)
		c := noRedirect(&http.Client{Jar: jar})
		if code := post(c, "/login", url.Values{"user": {user}, "password": {pw}}, base); code != http.StatusSeeOther {
			t.Fatalf("login %s: HTTP %d", user, code)
		}
		resp, err := c.Get(base + "/quarantine")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		i := strings.Index(string(body), `name="csrf" value="`)
		if i < 0 {
			t.Fatalf("no CSRF token in the page of %s (HTTP %d)", user, resp.StatusCode)
		}
		rest := string(body)[i+len(`name="csrf" value="`):]
		return c, rest[:strings.IndexByte(rest, '"')]
	}
	if code := post(noRedirect(&http.Client{}), "/login", url.Values{"user": {"alice"}, "password": {"wrong-password"}}, base); code != http.StatusSeeOther {
		t.Errorf("a wrong password: HTTP %d", code)
	}
	alice, csrf := login("alice", "alice-console-pw")
	if code := post(alice, "/quarantine/release", release, base); code != http.StatusForbidden {
		t.Errorf("a release without the CSRF token: HTTP %d, want 403", code)
	}
	withToken := url.Values{"host": {host}, "container": {container}, "reason": {"attack"}, "csrf": {csrf}}
	if code := post(alice, "/quarantine/release", withToken, "https://evil.example"); code != http.StatusForbidden {
		t.Errorf("a cross-origin release with the token: HTTP %d, want 403", code)
	}
	if code := post(alice, "/quarantine/release", url.Values{"host": {host}, "container": {container}, "reason": {"attack"}, "csrf": {"forged"}}, base); code != http.StatusForbidden {
		t.Errorf("a release with a forged token: HTTP %d, want 403", code)
	}
	bob, bobCSRF := login("bob", bobPW)
	withBob := url.Values{"host": {host}, "container": {container}, "reason": {"analyst"}, "csrf": {bobCSRF}}
	if code := post(bob, "/quarantine/release", withBob, base); code != http.StatusForbidden {
		t.Errorf("an analyst's release: HTTP %d, want 403", code)
	}
}
