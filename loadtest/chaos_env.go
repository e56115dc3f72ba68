package loadtest

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/containsec/contain/internal/auth"
	"github.com/containsec/contain/internal/bus"
	"github.com/containsec/contain/internal/logfields"
)

// The chaos test's environment: a nats-server process with contain's
// permission table (every party its own nkey), its store on a small tmpfs
// that can be filled, a TCP proxy in front of ClickHouse that can be cut,
// and the stages as `contain enrich|analyze|store|respond` processes.

const (
	containPkg    = "github.com/containsec/contain/cmd/contain"
	natsServerPkg = "github.com/nats-io/nats-server/v2"
)

// natsProc is the nats-server process.
type natsProc struct {
	*Proc
	url      string
	storeDir string
	tmpfs    bool
}

// startNATS writes the server's configuration (contain's permission table
// for hosts, keys from creds) and starts it on a free port.
func startNATS(ctx context.Context, bin, dir, credsDir string, hosts []string, tmpfsMB int, log *slog.Logger) (*natsProc, error) {
	users := auth.Table(auth.DefaultNames(), hosts)
	names := make([]string, len(users))
	for i, u := range users {
		names[i] = u.Name
	}
	got, err := auth.Ensure(auth.EnsureConfig{Dir: credsDir, Users: names})
	if err != nil {
		return nil, err
	}
	env := make([]string, 0, len(got.Keys))
	for name, pub := range got.Keys {
		env = append(env, auth.EnvVar(name)+"="+pub)
	}
	storeDir := filepath.Join(dir, "jetstream")
	if err := os.MkdirAll(storeDir, 0o755); err != nil {
		return nil, fmt.Errorf("chaos: %w", err)
	}
	n := &natsProc{storeDir: storeDir}
	if tmpfsMB > 0 {
		// A small file system of its own, to fill.
		opts := fmt.Sprintf("size=%dm", tmpfsMB)
		if err := syscall.Mount("tmpfs", storeDir, "tmpfs", 0, opts); err != nil {
			log.Warn("chaos: no tmpfs for the JetStream store (needs root): the disk-full fault is skipped", logfields.Err, err)
		} else {
			n.tmpfs = true
		}
	}
	ports, err := freeTCPPorts(1)
	if err != nil {
		return nil, err
	}
	n.url = fmt.Sprintf("nats://127.0.0.1:%d", ports[0])
	var conf strings.Builder
	// JetStream's own limit is the whole file system: the disk fills
	// before the account's reservations do.
	maxFile := "64GB"
	if tmpfsMB > 0 {
		maxFile = fmt.Sprintf("%dMB", tmpfsMB)
	}
	fmt.Fprintf(&conf, "listen: 127.0.0.1:%d\nmax_payload: 8MB\njetstream { store_dir: %q, max_memory_store: 256MB, max_file_store: %s }\n",
		ports[0], storeDir, maxFile)
	if err := auth.WriteConf(&conf, users); err != nil {
		return nil, err
	}
	confFile := filepath.Join(dir, "nats.conf")
	if err := os.WriteFile(confFile, []byte(conf.String()), 0o600); err != nil {
		return nil, fmt.Errorf("chaos: %w", err)
	}
	n.Proc, err = StartProc(ProcSpec{Name: "nats-server", Path: bin, Args: []string{"-c", confFile}, Env: env,
		LogFile: filepath.Join(dir, "nats-server.log")})
	if err != nil {
		return nil, err
	}
	return n, nil
}

// close stops the server and unmounts its store.
func (n *natsProc) close() {
	n.Kill()
	if n.tmpfs {
		_ = syscall.Unmount(n.storeDir, syscall.MNT_DETACH)
	}
}

// fill fills the store's file system, writing until it has no space
// left; the returned func frees it.
func (n *natsProc) fill() (func(), error) {
	path := filepath.Join(n.storeDir, "chaos-filler")
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("chaos: filling the store: %w", err)
	}
	defer f.Close()
	undo := func() { os.Remove(path) }
	chunk := make([]byte, 1<<20)
	for {
		if _, err := f.Write(chunk); err != nil {
			if errors.Is(err, syscall.ENOSPC) {
				if len(chunk) > 4096 { // the last bytes too
					chunk = chunk[:len(chunk)/16]
					continue
				}
				return undo, nil
			}
			undo()
			return nil, fmt.Errorf("chaos: filling the store: %w", err)
		}
	}
}

// connectAs connects to url as user with its seed in credsDir and its
// inbox prefix.
func connectAs(url, credsDir, user string, log *slog.Logger) (*nats.Conn, jetstream.JetStream, error) {
	c, err := auth.LoadSeed(auth.SeedPath(credsDir, user))
	if err != nil {
		return nil, nil, err
	}
	return bus.Connect(url, "contain-chaos-"+user, log, nats.Nkey(c.PublicKey(), c.KP.Sign),
		nats.CustomInboxPrefix(auth.InboxPrefix(user)))
}

// stageProc is one `contain <stage>` process and the counters scraped
// from its /metrics, summed over its restarts.
type stageProc struct {
	*Proc
	stage   string // enricher, analyzer, store, responder
	metrics string // its /metrics URL

	mu     sync.Mutex
	starts int                // incarnation scraped into cur
	base   map[string]float64 // final values of the incarnations that ended
	cur    map[string]float64 // the current incarnation's last scrape
}

// startStage starts `contain <cmd>` with env (CONTAIN_* keys) and its
// metrics on a free port.
func startStage(bin, dir, stage, name, cmd string, env []string) (*stageProc, error) {
	ports, err := freeTCPPorts(1)
	if err != nil {
		return nil, err
	}
	listen := fmt.Sprintf("127.0.0.1:%d", ports[0])
	env = append(env, "CONTAIN_METRICS_LISTEN="+listen)
	p, err := StartProc(ProcSpec{Name: name, Path: bin, Args: []string{cmd}, Env: env, LogFile: filepath.Join(dir, name+".log")})
	if err != nil {
		return nil, err
	}
	return &stageProc{Proc: p, stage: stage, metrics: "http://" + listen + "/metrics", base: map[string]float64{}, cur: map[string]float64{}}, nil
}

// scrapedFamilies are the counters the chaos test sums over restarts.
var scrapedFamilies = []string{"contain_dropped_total", "contain_expired_total", "contain_dead_lettered_total",
	"contain_malformed_messages_total", "contain_publish_failed_total", "contain_refused_total",
	"contain_analyzer_partition_changes_total"}

// scrapeClient asks for /metrics uncompressed: the stages' CPU is what
// the fleet run measures, and gzipping a once-a-second scrape (on
// loopback) was 2–3% of an analyzer process's CPU.
var scrapeClient = &http.Client{Transport: &http.Transport{DisableCompression: true}}

// scrape reads the process's counters. A restart (a new incarnation)
// moves the previous one's last values into the base first.
func (s *stageProc) scrape(ctx context.Context) error {
	starts := s.Starts()
	s.mu.Lock()
	if starts != s.starts {
		for k, v := range s.cur {
			s.base[k] += v
		}
		s.cur, s.starts = map[string]float64{}, starts
	}
	s.mu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.metrics, nil)
	if err != nil {
		return err
	}
	resp, err := scrapeClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	got, err := parseCounters(resp.Body, scrapedFamilies)
	if err != nil {
		return err
	}
	s.mu.Lock()
	if s.starts == starts {
		s.cur = got
	}
	s.mu.Unlock()
	return nil
}

// counters is every scraped series summed over the incarnations.
func (s *stageProc) counters() map[string]float64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]float64{}
	for k, v := range s.base {
		out[k] += v
	}
	for k, v := range s.cur {
		out[k] += v
	}
	return out
}

// parseCounters reads the Prometheus text exposition and returns the
// series of the given families, keyed by their text (name{labels}).
func parseCounters(r io.Reader, families []string) (map[string]float64, error) {
	out := map[string]float64{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		series := line[:i]
		name, _, _ := strings.Cut(series, "{")
		want := false
		for _, f := range families {
			want = want || name == f
		}
		if !want {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			return nil, fmt.Errorf("metrics: %q: %w", line, err)
		}
		out[series] = v
	}
	return out, sc.Err()
}

// seriesLabel returns a label's value in a series key (name{a="x",b="y"}).
func seriesLabel(series, label string) string {
	i := strings.Index(series, label+`="`)
	if i < 0 || (i > 0 && series[i-1] != '{' && series[i-1] != ',') {
		return ""
	}
	rest := series[i+len(label)+2:]
	j := strings.IndexByte(rest, '"')
	if j < 0 {
		return ""
	}
	return rest[:j]
}

// tcpProxy forwards connections to a target; Cut closes them all and
// refuses new ones until it is restored: a ClickHouse that is down, as
// the store sees it, without touching the shared server.
type tcpProxy struct {
	ln     net.Listener
	target string

	mu    sync.Mutex
	cut   bool
	conns map[net.Conn]struct{}
	wg    sync.WaitGroup
}

func startProxy(target string) (*tcpProxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("chaos: proxy: %w", err)
	}
	p := &tcpProxy{ln: ln, target: target, conns: map[net.Conn]struct{}{}}
	p.wg.Add(1)
	go p.serve()
	return p, nil
}

// Addr is the proxy's listening address.
func (p *tcpProxy) Addr() string { return p.ln.Addr().String() }

func (p *tcpProxy) serve() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		cut := p.cut
		p.mu.Unlock()
		if cut {
			c.Close()
			continue
		}
		up, err := net.DialTimeout("tcp", p.target, 5*time.Second)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		p.conns[c], p.conns[up] = struct{}{}, struct{}{}
		p.mu.Unlock()
		p.wg.Add(2)
		pipe := func(dst, src net.Conn) {
			defer p.wg.Done()
			_, _ = io.Copy(dst, src)
			dst.Close()
			src.Close()
			p.mu.Lock()
			delete(p.conns, dst)
			delete(p.conns, src)
			p.mu.Unlock()
		}
		go pipe(up, c)
		go pipe(c, up)
	}
}

// Cut closes every forwarded connection and refuses new ones (on), or
// forwards again (off).
func (p *tcpProxy) Cut(on bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = on
	if on {
		for c := range p.conns {
			c.Close()
		}
	}
}

func (p *tcpProxy) Close() {
	p.ln.Close()
	p.Cut(true)
	p.wg.Wait()
}

// freeTCPPorts returns n distinct free TCP ports on loopback.
func freeTCPPorts(n int) ([]int, error) {
	ls := make([]net.Listener, 0, n)
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	ports := make([]int, 0, n)
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("chaos: free port: %w", err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// natsServerBinary builds go.mod's nats-server once per version into the
// temporary directory (the path internal/testenv uses too).
func natsServerBinary(ctx context.Context) (string, error) {
	out, err := exec.CommandContext(ctx, "go", "list", "-m", "-f", "{{.Version}}", natsServerPkg).Output()
	if err != nil {
		return "", fmt.Errorf("chaos: nats-server version: %w", err)
	}
	path := filepath.Join(os.TempDir(), "contain-test-nats-server-"+strings.TrimSpace(string(out)))
	if _, err := os.Stat(path); err == nil {
		return path, nil
	}
	tmp, err := os.MkdirTemp("", "contain-nats-build-")
	if err != nil {
		return "", fmt.Errorf("chaos: %w", err)
	}
	defer os.RemoveAll(tmp)
	bin, err := BuildGo(ctx, natsServerPkg, tmp)
	if err != nil {
		return "", err
	}
	if err := os.Rename(bin, path); err != nil {
		return "", fmt.Errorf("chaos: %w", err)
	}
	return path, nil
}

// waitFor polls cond every 100 ms until it holds or timeout passes.
func waitFor(ctx context.Context, timeout time.Duration, what string, cond func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("chaos: waiting for %s: %w", what, errors.Join(ctx.Err(), err))
		}
		time.Sleep(100 * time.Millisecond)
	}
}
