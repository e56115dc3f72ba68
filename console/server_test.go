package console

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containsec/contain/schemas/containv1"
)

// releases records what the console asked of its backend; the real
// backend (responder control requests) is exercised by TestConsoleBrowser.
type releases struct {
	mu   sync.Mutex
	done []string
}

func (b *releases) Quarantined(context.Context, string) ([]Quarantine, error) {
	return []Quarantine{{ContainerID: "c1", Since: time.Now(), State: "frozen"}}, nil
}
func (b *releases) Release(_ context.Context, host, id, reason, actor string) (string, string, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.done = append(b.done, fmt.Sprintf("%s/%s by %s: %s", host, id, actor, reason))
	return "operator/console:" + actor, "ok", nil
}
func (b *releases) Baselines(context.Context) ([]Baseline, error)       { return nil, nil }
func (b *releases) SetLock(context.Context, string, bool, string) error { return nil }
func (b *releases) Health(context.Context) []HealthLine                 { return nil }
func (b *releases) Timeline(context.Context, string, string) (string, error) {
	return "", nil
}

func testServer(t *testing.T, cfg Config) (*httptest.Server, *releases, *Feed) {
	t.Helper()
	feed := NewFeed(cfg.MaxAlerts, cfg.MaxActions)
	be := &releases{}
	s, err := New(cfg, feed, be, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(s)
	t.Cleanup(srv.Close)
	return srv, be, feed
}

func passwordConfig(t *testing.T) Config {
	cfg := DefaultConfig()
	for _, u := range []struct{ name, role string }{{"alice", RoleOperator}, {"carol", RoleOperator}, {"bob", RoleAnalyst}} {
		h, err := HashPassword(u.name + "-password")
		if err != nil {
			t.Fatal(err)
		}
		cfg.Users = append(cfg.Users, User{Name: u.name, Role: u.role, PasswordHash: h})
	}
	return cfg
}

type client struct {
	t    *testing.T
	base string
	c    *http.Client
	csrf string
}

func login(t *testing.T, base, user string) *client {
	jar, _ := cookiejar.New(nil)
	c := &client{t: t, base: base, c: &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
	if code, _ := c.post("/login", url.Values{"user": {user}, "password": {user + "-password"}}); code != http.StatusSeeOther {
		t.Fatalf("login %s: %d", user, code)
	}
	_, body := c.get("/quarantine")
	i := strings.Index(body, `name="csrf" value="`)
	if i < 0 {
		t.Fatalf("no csrf token for %s", user)
	}
	rest := body[i+len(`name="csrf" value="`):]
	c.csrf = rest[:strings.IndexByte(rest, '"')]
	return c
}

func (c *client) get(path string) (int, string) {
	resp, err := c.c.Get(c.base + path)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func (c *client) post(path string, form url.Values) (int, string) {
	if c.csrf != "" {
		form.Set("csrf", c.csrf)
	}
	req, _ := http.NewRequest(http.MethodPost, c.base+path, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", c.base)
	resp, err := c.c.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	return resp.StatusCode, resp.Header.Get("Location")
}

// TestSecondOperatorApproves: with release_approvals 2 a release is a
// request; its requester cannot approve it, an analyst cannot, another
// operator can, and only then is the backend asked, naming both.
func TestSecondOperatorApproves(t *testing.T) {
	cfg := passwordConfig(t)
	cfg.ReleaseApprovals = 2
	cfg.Hosts = []string{"h1"}
	srv, be, _ := testServer(t, cfg)
	alice, carol, bob := login(t, srv.URL, "alice"), login(t, srv.URL, "carol"), login(t, srv.URL, "bob")
	alice.post("/quarantine/release", url.Values{"host": {"h1"}, "container": {"c1"}, "reason": {"false positive"}})
	if len(be.done) != 0 {
		t.Fatalf("a release ran with one approval: %q", be.done)
	}
	_, page := alice.get("/quarantine")
	i := strings.Index(page, `name="pending" value="`)
	if i < 0 {
		t.Fatalf("no pending release shown:\n%s", page)
	}
	rest := page[i+len(`name="pending" value="`):]
	pending := rest[:strings.IndexByte(rest, '"')]
	if _, loc := alice.post("/quarantine/approve", url.Values{"pending": {pending}}); !strings.Contains(loc, "err=") {
		t.Errorf("the requester approved her own release: %s", loc)
	}
	if code, _ := bob.post("/quarantine/approve", url.Values{"pending": {pending}}); code != http.StatusForbidden {
		t.Errorf("an analyst's approval: HTTP %d, want 403", code)
	}
	if len(be.done) != 0 {
		t.Fatalf("released without a second operator: %q", be.done)
	}
	carol.post("/quarantine/approve", url.Values{"pending": {pending}})
	if len(be.done) != 1 || !strings.Contains(be.done[0], "h1/c1 by carol: false positive (requested by alice, approved by carol)") {
		t.Errorf("after carol's approval the backend saw %q", be.done)
	}
	if _, loc := carol.post("/quarantine/approve", url.Values{"pending": {pending}}); !strings.Contains(loc, "err=") || len(be.done) != 1 {
		t.Errorf("a pending release was approved twice: %s %q", loc, be.done)
	}
}

// TestHeaderAuthTrustsOnlyTheProxy: the proxy's user header counts only
// from a trusted address; its role header decides operator or analyst.
func TestHeaderAuthTrustsOnlyTheProxy(t *testing.T) {
	for _, tc := range []struct {
		proxy string
		role  string
		want  int
	}{
		{"127.0.0.1", "", http.StatusOK},
		{"127.0.0.1/8", "operator", http.StatusOK},
		{"10.0.0.1", "operator", http.StatusUnauthorized},
	} {
		cfg := DefaultConfig()
		cfg.Auth = AuthHeader
		cfg.Header.TrustedProxies = []string{tc.proxy}
		srv, _, _ := testServer(t, cfg)
		req, _ := http.NewRequest(http.MethodGet, srv.URL+"/events", nil)
		req.Header.Set("X-Forwarded-User", "dave")
		req.Header.Set("X-Forwarded-Role", tc.role)
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		resp, err := http.DefaultClient.Do(req.WithContext(ctx))
		if err != nil {
			cancel()
			t.Fatal(err)
		}
		resp.Body.Close()
		cancel()
		if resp.StatusCode != tc.want {
			t.Errorf("proxy %s: HTTP %d, want %d", tc.proxy, resp.StatusCode, tc.want)
		}
	}
}

func alertEvent(i int, host string) *containv1.Event {
	return &containv1.Event{Id: []byte(fmt.Sprintf("%016d", i)), Host: host, ContainerId: fmt.Sprintf("c%d", i%7), ImageRef: "img/a:1",
		WallNs: time.Now().UnixNano(), Kind: containv1.Kind_KIND_ALERT,
		Body: &containv1.Event_Alert{Alert: &containv1.Alert{Score: float64(i%10) / 10, Reasons: []*containv1.Reason{{Code: "exec.unseen", Score: 0.8, Mitre: []string{"T1059"}}}}}}
}

// TestFeedPagesNewestFirst: 10,000 alerts page newest first, filtered,
// and the feed keeps only its bound.
func TestFeedPagesNewestFirst(t *testing.T) {
	f := NewFeed(10000, 10)
	for i := range 10500 {
		f.Add(alertEvent(i, []string{"h1", "h2"}[i%2]))
	}
	page, total := f.Alerts(Filter{}, 0, 50)
	if total != 10000 || len(page) != 50 || page[0].ID != containv1.FormatID([]byte(fmt.Sprintf("%016d", 10499))) {
		t.Fatalf("total %d, page %d, first %s", total, len(page), page[0].ID)
	}
	page, total = f.Alerts(Filter{Host: "h1", MinScore: 0.8}, 2, 50)
	for _, a := range page {
		if a.Host != "h1" || a.Score < 0.8 {
			t.Fatalf("filter let through %+v", a)
		}
	}
	if total != 1000 {
		t.Errorf("h1 alerts ≥ 0.8: %d, want 1000", total)
	}
}

// BenchmarkNowPage10k renders the Now view over 10,000 alerts.
func BenchmarkNowPage10k(b *testing.B) {
	cfg := DefaultConfig()
	cfg.Auth = AuthHeader
	cfg.Header.TrustedProxies = []string{"127.0.0.1"}
	feed := NewFeed(10000, 100)
	for i := range 10000 {
		feed.Add(alertEvent(i, "h1"))
	}
	s, err := New(cfg, feed, &releases{}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		b.Fatal(err)
	}
	req := httptest.NewRequest(http.MethodGet, "/?min_score=0.5", nil)
	req.RemoteAddr = "127.0.0.1:1"
	req.Header.Set("X-Forwarded-User", "dave")
	b.ResetTimer()
	for b.Loop() {
		w := httptest.NewRecorder()
		s.ServeHTTP(w, req)
		if w.Code != http.StatusOK {
			b.Fatal(w.Code)
		}
	}
}

// TestLockoutIsTimeBounded: ten wrong passwords refuse the name for a
// while, never for good (a stranger must not lock an operator out).
func TestLockoutIsTimeBounded(t *testing.T) {
	cfg := passwordConfig(t)
	s, err := New(cfg, NewFeed(10, 10), &releases{}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	s.auth.sessions.now = func() time.Time { return now }
	for range lockoutAfter {
		if _, ok := s.auth.checkPassword("alice", "wrong"); ok {
			t.Fatal("a wrong password was accepted")
		}
	}
	if !s.auth.lockedOut("alice") || s.auth.lockedOut("carol") {
		t.Fatalf("after %d failures: alice locked %v, carol locked %v", lockoutAfter, s.auth.lockedOut("alice"), s.auth.lockedOut("carol"))
	}
	now = now.Add(lockoutFor + time.Second)
	if s.auth.lockedOut("alice") {
		t.Error("alice is still locked out after the lockout period")
	}
}
