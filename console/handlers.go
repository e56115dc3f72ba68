package console

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/containsec/contain/internal/forensics"
	"github.com/containsec/contain/internal/logfields"
)

const pageSize = 50

func (s *Server) loginPage(w http.ResponseWriter, r *http.Request) {
	if s.cfg.Auth == AuthHeader {
		http.Error(w, "this console is logged into through its proxy", http.StatusUnauthorized)
		return
	}
	s.render(w, r, "login", nil)
}

func (s *Server) login(w http.ResponseWriter, r *http.Request) {
	if s.cfg.Auth != AuthPassword {
		http.Error(w, "password login is off", http.StatusNotFound)
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, 8<<10)
	// A login form posted from another site would log the browser into
	// the attacker's account; only this origin may post it.
	if !sameOrigin(r) {
		http.Error(w, "refused: a cross-origin login", http.StatusForbidden)
		return
	}
	name := r.PostFormValue("user")
	if s.auth.lockedOut(name) {
		s.log.Warn("console login refused: too many failed attempts", logfields.User, name)
		http.Redirect(w, r, "/login?err="+url.QueryEscape("too many failed attempts for this user"), http.StatusSeeOther)
		return
	}
	role, ok := s.auth.checkPassword(name, r.PostFormValue("password"))
	if !ok {
		s.log.Warn("console login failed", logfields.User, name, logfields.Remote, r.RemoteAddr)
		http.Redirect(w, r, "/login?err="+url.QueryEscape("wrong user or password"), http.StatusSeeOther)
		return
	}
	s.newSession(w, r, name, role)
	s.log.Info("console login", logfields.User, name, logfields.Role, role, logfields.Remote, r.RemoteAddr)
	http.Redirect(w, r, "/", http.StatusSeeOther)
}

func (s *Server) logout(w http.ResponseWriter, r *http.Request) {
	if c, err := r.Cookie(sessionCookie); err == nil {
		s.auth.sessions.drop(c.Value)
	}
	http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: "", Path: "/", MaxAge: -1, HttpOnly: true, SameSite: http.SameSiteStrictMode})
	http.Redirect(w, r, "/login", http.StatusSeeOther)
}

func filterOf(r *http.Request) Filter {
	q := r.URL.Query()
	f := Filter{Host: q.Get("host"), Image: q.Get("image"), Namespace: q.Get("namespace")}
	f.MinScore, _ = strconv.ParseFloat(q.Get("min_score"), 64)
	return f
}

func (s *Server) now(w http.ResponseWriter, r *http.Request) {
	f := filterOf(r)
	page, _ := strconv.Atoi(r.URL.Query().Get("page"))
	page = max(page, 0)
	alerts, total := s.feed.Alerts(f, page, pageSize)
	q := r.URL.Query()
	q.Del("page")
	s.render(w, r, "now", map[string]any{
		"Filter": f, "Alerts": alerts, "Total": total, "PageNo": page,
		"Prev": page > 0, "Next": (page+1)*pageSize < total, "Query": q.Encode(),
		"Actions": s.feed.Actions("", 20), "Hosts": s.feed.Hosts(),
	})
}

// events streams live alerts and actions (server-sent events), filtered
// like the Now view.
func (s *Server) events(w http.ResponseWriter, r *http.Request) {
	fl, ok := w.(http.Flusher)
	if !ok {
		http.Error(w, "streaming unsupported", http.StatusInternalServerError)
		return
	}
	f := filterOf(r)
	ch, cancel := s.feed.Subscribe()
	defer cancel()
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("X-Accel-Buffering", "no")
	fmt.Fprint(w, ": contain console\n\n")
	fl.Flush()
	keep := time.NewTicker(15 * time.Second)
	defer keep.Stop()
	for {
		select {
		case <-r.Context().Done():
			return
		case <-keep.C:
			fmt.Fprint(w, ": keep-alive\n\n")
		case it := <-ch:
			var kind string
			var v any
			switch {
			case it.Alert != nil && f.match(it.Alert):
				kind, v = "alert", it.Alert
			case it.Action != nil && (f.Host == "" || f.Host == it.Action.Host):
				kind, v = "action", it.Action
			default:
				continue
			}
			b, err := json.Marshal(v)
			if err != nil {
				continue
			}
			fmt.Fprintf(w, "event: %s\ndata: %s\n\n", kind, b)
		}
		fl.Flush()
	}
}

// quarantineRow is a frozen container with its alert and snapshot.
type quarantineRow struct {
	Quarantine
	Alert    *AlertView
	Snapshot *forensics.Snapshot
	Pending  *pendingRelease
}

func (s *Server) hosts() []string {
	set := map[string]bool{}
	for _, h := range s.cfg.Hosts {
		set[h] = true
	}
	for _, h := range s.feed.Hosts() {
		set[h] = true
	}
	out := make([]string, 0, len(set))
	for h := range set {
		out = append(out, h)
	}
	sort.Strings(out)
	return out
}

func (s *Server) quarantine(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
	defer cancel()
	var rows []quarantineRow
	var errs []string
	for _, h := range s.hosts() {
		qs, err := s.backend.Quarantined(ctx, h)
		if err != nil {
			errs = append(errs, err.Error())
			continue
		}
		for _, q := range qs {
			q.Host = h
			row := quarantineRow{Quarantine: q, Pending: s.pendingFor(h, q.ContainerID)}
			if a, ok := s.feed.Alert(q.AlertID); ok {
				row.Alert = &a
			}
			if p, ok := s.feed.LastPause(q.ContainerID); ok {
				row.Snapshot = p.Snapshot
			}
			rows = append(rows, row)
		}
	}
	sort.Slice(rows, func(i, j int) bool { return rows[i].Since.After(rows[j].Since) })
	s.render(w, r, "quarantine", map[string]any{"Rows": rows, "Errors": errs, "Approvals": s.cfg.ReleaseApprovals})
}

func (s *Server) pendingFor(host, container string) *pendingRelease {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, p := range s.pending {
		if p.Host == host && p.ContainerID == container {
			c := *p
			return &c
		}
	}
	return nil
}

func back(w http.ResponseWriter, r *http.Request, path, key, msg string) {
	http.Redirect(w, r, path+"?"+key+"="+url.QueryEscape(msg), http.StatusSeeOther)
}

func (s *Server) release(w http.ResponseWriter, r *http.Request) {
	id := identityOf(r)
	host, container := r.PostFormValue("host"), r.PostFormValue("container")
	reason := strings.TrimSpace(r.PostFormValue("reason"))
	if host == "" || container == "" {
		back(w, r, "/quarantine", "err", "release: host and container are required")
		return
	}
	if reason == "" {
		back(w, r, "/quarantine", "err", "release: say why the container is released")
		return
	}
	if s.cfg.ReleaseApprovals == 2 {
		p := &pendingRelease{ID: randomToken()[:16], Host: host, ContainerID: container, Reason: reason, RequestedBy: id.User, At: time.Now().UTC()}
		s.mu.Lock()
		s.pending[p.ID] = p
		s.mu.Unlock()
		s.log.Info("console release requested, awaiting a second operator", logfields.User, id.User, logfields.Host, host, logfields.ContainerID, container)
		back(w, r, "/quarantine", "msg", "release of "+container+" requested: another operator must approve it")
		return
	}
	s.doRelease(w, r, host, container, reason, id.User)
}

func (s *Server) approve(w http.ResponseWriter, r *http.Request) {
	id := identityOf(r)
	pid := r.PostFormValue("pending")
	s.mu.Lock()
	p, ok := s.pending[pid]
	if ok && p.RequestedBy != id.User {
		delete(s.pending, pid)
	}
	s.mu.Unlock()
	switch {
	case !ok:
		back(w, r, "/quarantine", "err", "approve: no such pending release")
	case p.RequestedBy == id.User:
		back(w, r, "/quarantine", "err", "approve: a second operator must approve your own request")
	default:
		reason := fmt.Sprintf("%s (requested by %s, approved by %s)", p.Reason, p.RequestedBy, id.User)
		s.doRelease(w, r, p.Host, p.ContainerID, reason, id.User)
	}
}

func (s *Server) doRelease(w http.ResponseWriter, r *http.Request, host, container, reason, user string) {
	ctx, cancel := context.WithTimeout(r.Context(), 15*time.Second)
	defer cancel()
	actor, result, err := s.backend.Release(ctx, host, container, reason, user)
	if err != nil {
		s.log.Warn("console release failed", logfields.User, user, logfields.Host, host, logfields.ContainerID, container, logfields.Err, err)
		back(w, r, "/quarantine", "err", "release of "+container+" failed: "+err.Error())
		return
	}
	s.log.Info("console release", logfields.User, user, logfields.Actor, actor, logfields.Host, host, logfields.ContainerID, container, logfields.Result, result)
	back(w, r, "/quarantine", "msg", fmt.Sprintf("released %s on %s: %s, recorded as %s", container, host, result, actor))
}

func (s *Server) container(w http.ResponseWriter, r *http.Request) {
	cid := r.PathValue("id")
	alerts, total := s.feed.Alerts(Filter{Container: cid}, 0, 500)
	actions := s.feed.Actions(cid, 100)
	var snap *forensics.Snapshot
	if p, ok := s.feed.LastPause(cid); ok {
		snap = p.Snapshot
	}
	around := r.URL.Query().Get("alert")
	ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
	defer cancel()
	history, err := s.backend.Timeline(ctx, cid, around)
	data := map[string]any{
		"ID": cid, "Alerts": alerts, "Total": total, "Actions": actions, "Snapshot": snap,
		"Tree": processTree(snap), "Around": around, "History": history,
	}
	if err != nil {
		data["HistoryErr"] = err.Error()
	}
	s.render(w, r, "container", data)
}

// treeLine is one process of a snapshot's tree, indented by depth.
type treeLine struct {
	Depth int
	forensics.Process
}

func processTree(snap *forensics.Snapshot) []treeLine {
	if snap == nil {
		return nil
	}
	pids := map[int]bool{}
	children := map[int][]forensics.Process{}
	for _, p := range snap.Processes {
		pids[p.Pid] = true
	}
	var roots []forensics.Process
	for _, p := range snap.Processes {
		if pids[p.PPid] && p.PPid != p.Pid {
			children[p.PPid] = append(children[p.PPid], p)
		} else {
			roots = append(roots, p)
		}
	}
	var out []treeLine
	seen := map[int]bool{}
	var walk func(p forensics.Process, d int)
	walk = func(p forensics.Process, d int) {
		if seen[p.Pid] || d > 64 {
			return
		}
		seen[p.Pid] = true
		out = append(out, treeLine{Depth: d, Process: p})
		for _, c := range children[p.Pid] {
			walk(c, d+1)
		}
	}
	for _, p := range roots {
		walk(p, 0)
	}
	return out
}

func (s *Server) baselines(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
	defer cancel()
	bs, err := s.backend.Baselines(ctx)
	data := map[string]any{"Baselines": bs}
	if err != nil {
		data["LoadErr"] = err.Error()
	}
	s.render(w, r, "baselines", data)
}

func (s *Server) lock(w http.ResponseWriter, r *http.Request) {
	id := identityOf(r)
	key := r.PostFormValue("key")
	lock := r.PostFormValue("lock") == "1"
	ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
	defer cancel()
	verb := map[bool]string{true: "lock", false: "unlock"}[lock]
	if err := s.backend.SetLock(ctx, key, lock, id.User); err != nil {
		back(w, r, "/baselines", "err", verb+" "+key+": "+err.Error())
		return
	}
	s.log.Info("console baseline "+verb, logfields.User, id.User, logfields.Key, key)
	back(w, r, "/baselines", "msg", verb+" "+key+": done (by "+id.User+")")
}

func (s *Server) health(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
	defer cancel()
	lines := s.backend.Health(ctx)
	lines = append(lines, HealthLine{Name: "console live updates dropped (slow browsers)", Value: strconv.FormatUint(s.feed.SlowDropped(), 10), OK: true})
	s.render(w, r, "health", map[string]any{"Lines": lines})
}
