package console

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/containsec/contain/internal/logfields"
)

//go:embed web
var webFS embed.FS

// Server is the console's HTTP handler.
type Server struct {
	cfg     Config
	feed    *Feed
	backend Backend
	log     *slog.Logger
	auth    *authenticator
	pages   map[string]*template.Template
	mux     *http.ServeMux

	mu      sync.Mutex
	pending map[string]*pendingRelease // release requests awaiting a second operator
}

type pendingRelease struct {
	ID, Host, ContainerID, Reason, RequestedBy string
	At                                         time.Time
}

// New returns the console for cfg (validated here), showing feed and
// acting through backend.
func New(cfg Config, feed *Feed, backend Backend, log *slog.Logger) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	proxies, err := cfg.proxies()
	if err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, feed: feed, backend: backend, log: log, pending: map[string]*pendingRelease{},
		auth: &authenticator{cfg: cfg, proxies: proxies, sessions: newSessions(cfg.SessionTTL), failures: map[string]*loginFailures{}}}
	if s.pages, err = parsePages(); err != nil {
		return nil, err
	}
	s.routes()
	return s, nil
}

func (s *Server) routes() {
	m := http.NewServeMux()
	static, _ := fs.Sub(webFS, "web/static")
	m.Handle("GET /static/", http.StripPrefix("/static/", http.FileServerFS(static)))
	m.HandleFunc("GET /login", s.loginPage)
	m.HandleFunc("POST /login", s.login)
	m.HandleFunc("POST /logout", s.need(false, s.logout))
	m.HandleFunc("GET /{$}", s.need(false, s.now))
	m.HandleFunc("GET /events", s.need(false, s.events))
	m.HandleFunc("GET /quarantine", s.need(false, s.quarantine))
	m.HandleFunc("POST /quarantine/release", s.need(true, s.release))
	m.HandleFunc("POST /quarantine/approve", s.need(true, s.approve))
	m.HandleFunc("GET /container/{id}", s.need(false, s.container))
	m.HandleFunc("GET /baselines", s.need(false, s.baselines))
	m.HandleFunc("POST /baselines/lock", s.need(true, s.lock))
	m.HandleFunc("GET /health", s.need(false, s.health))
	s.mux = m
}

// ServeHTTP adds the security headers every response carries.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Security-Policy", "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "same-origin")
	h.Set("Cache-Control", "no-store")
	s.mux.ServeHTTP(w, r)
}

type ctxKey struct{}

func identityOf(r *http.Request) Identity {
	id, _ := r.Context().Value(ctxKey{}).(Identity)
	return id
}

// need wraps a handler with authentication; act requires an operator and a
// valid CSRF token from this origin.
func (s *Server) need(act bool, h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		id, ok := s.auth.identify(r)
		if !ok {
			if r.Method == http.MethodGet && r.URL.Path != "/events" {
				http.Redirect(w, r, "/login", http.StatusSeeOther)
				return
			}
			http.Error(w, "login required", http.StatusUnauthorized)
			return
		}
		if id.CSRF == "" { // a proxied identity's first visit: give it a session
			id = s.newSession(w, r, id.User, id.Role)
		}
		if r.Method == http.MethodPost {
			r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
			if !validCSRF(r, id) {
				s.log.Warn("refused a state change without a valid CSRF token or from another origin", logfields.User, id.User, logfields.Path, r.URL.Path)
				http.Error(w, "refused: missing or wrong CSRF token, or a cross-origin request", http.StatusForbidden)
				return
			}
			if act && !id.CanAct() {
				http.Error(w, "refused: your role ("+id.Role+") reads only", http.StatusForbidden)
				return
			}
		}
		h(w, r.WithContext(context.WithValue(r.Context(), ctxKey{}, id)))
	}
}

func (s *Server) newSession(w http.ResponseWriter, r *http.Request, user, role string) Identity {
	sid, sess := s.auth.sessions.create(user, role)
	http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: sid, Path: "/", HttpOnly: true,
		Secure: r.TLS != nil, SameSite: http.SameSiteStrictMode, MaxAge: int(s.cfg.SessionTTL.Seconds())})
	return sess.Identity
}

// render executes page with data, inside the layout.
func (s *Server) render(w http.ResponseWriter, r *http.Request, page string, data map[string]any) {
	if data == nil {
		data = map[string]any{}
	}
	data["Me"] = identityOf(r)
	data["Page"] = page
	data["Msg"] = r.URL.Query().Get("msg")
	data["Err"] = r.URL.Query().Get("err")
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	if err := s.pages[page].ExecuteTemplate(w, "layout", data); err != nil {
		s.log.Error("rendering a console page", logfields.Page, page, logfields.Err, err)
	}
}

func parsePages() (map[string]*template.Template, error) {
	funcs := template.FuncMap{
		"ts": func(t time.Time) string {
			if t.IsZero() {
				return ""
			}
			return t.UTC().Format("2006-01-02 15:04:05Z")
		},
		"score": func(f float64) string { return fmt.Sprintf("%.2f", f) },
		"add":   func(a, b int) int { return a + b },
		"short": func(s string) string {
			if len(s) > 12 {
				return s[:12]
			}
			return s
		},
	}
	pages := map[string]*template.Template{}
	for _, p := range []string{"login", "now", "quarantine", "container", "baselines", "health"} {
		t, err := template.New("").Funcs(funcs).ParseFS(webFS, "web/templates/layout.html", "web/templates/"+p+".html")
		if err != nil {
			return nil, fmt.Errorf("console: parsing %s: %w", p, err)
		}
		pages[p] = t
	}
	return pages, nil
}

// ListenAndServe serves until ctx ends.
func (s *Server) ListenAndServe(ctx context.Context) error {
	srv := &http.Server{Addr: s.cfg.Listen, Handler: s, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	var err error
	if s.cfg.TLSCert != "" {
		err = srv.ListenAndServeTLS(s.cfg.TLSCert, s.cfg.TLSKey)
	} else {
		err = srv.ListenAndServe()
	}
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return fmt.Errorf("console: %w", err)
}
