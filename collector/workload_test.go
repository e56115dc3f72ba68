package collector

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/containsec/contain/internal/metrics"
	"github.com/containsec/contain/internal/testenv"
)

// timeIt is a static program run inside the container: it runs its
// arguments as a command and prints the wall time in ns (busybox date has
// no %N).
const timeIt = `package main

import (
	"fmt"
	"os"
	"os/exec"
	"time"
)

func main() {
	cmd := exec.Command(os.Args[1], os.Args[2:]...)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	start := time.Now()
	if err := cmd.Run(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Println(time.Since(start).Nanoseconds())
}
`

// BenchmarkSyscallOverheadWorkload measures realistic work with and without
// the collector in its default mode, in alternating rounds:
//
//   - http: busybox httpd in one runc container serving busybox wget in a
//     loop in another (both on the host's loopback), CONTAIN_WORKLOAD_GETS
//     GETs (default 2000): a fork, exec, connect, accept and exit each.
//   - gzip: copy a generated file tree (CONTAIN_WORKLOAD_FILES files of
//     64 KiB, default 256), gzip every file and remove the tree.
//
// It prints the median of each mode and the slowdown in percent. Its name
// puts it in the same -bench SyscallOverhead command as the syscall loop.
func BenchmarkSyscallOverheadWorkload(b *testing.B) {
	testenv.RequireRoot(b)
	goBin := testenv.RequireCommand(b, "go")
	gets := envInt("CONTAIN_WORKLOAD_GETS", 2000)
	files := envInt("CONTAIN_WORKLOAD_FILES", 256)
	rounds := envInt("CONTAIN_WORKLOAD_ROUNDS", 5)

	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	_ = l.Close()
	server := testenv.RunContainer(b, "httpd", testenv.ContainerSpec{
		HostNetwork: true,
		Args:        []string{"/bin/httpd", "-f", "-p", fmt.Sprintf("127.0.0.1:%d", port), "-h", "/var/www"},
	})
	page := strings.Repeat("contain workload page\n", 200) // ~4 KiB
	if err := os.WriteFile(filepath.Join(server.Rootfs, "var", "www", "index.html"), []byte(page), 0o644); err != nil {
		b.Fatal(err)
	}
	client := testenv.RunContainer(b, "wget", testenv.ContainerSpec{HostNetwork: true})
	src := filepath.Join(b.TempDir(), "main.go")
	if err := os.WriteFile(src, []byte(timeIt), 0o644); err != nil {
		b.Fatal(err)
	}
	build := exec.Command(goBin, "build", "-o", filepath.Join(client.Rootfs, "bin", "timeit"), src)
	build.Env = append(os.Environ(), "CGO_ENABLED=0", "GO111MODULE=off")
	if out, err := build.CombinedOutput(); err != nil {
		b.Fatalf("building timeit: %v: %s", err, out)
	}
	if err := writeTree(filepath.Join(client.Rootfs, "data", "tree"), files); err != nil {
		b.Fatal(err)
	}
	url := fmt.Sprintf("http://127.0.0.1:%d/index.html", port)
	deadline := time.Now().Add(10 * time.Second)
	for {
		out, err := client.Exec(10*time.Second, "/bin/wget", "-q", "-O", "/dev/null", url)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			b.Fatalf("httpd not serving: %v: %s", err, out)
		}
		time.Sleep(50 * time.Millisecond)
	}

	workloads := []struct{ name, script string }{
		{"http", fmt.Sprintf(`i=0; while [ $i -lt %d ]; do wget -q -O /dev/null %s || exit 1; i=$((i+1)); done`, gets, url)},
		{"gzip", `rm -rf /tmp/w && cp -r /data/tree /tmp/w && gzip /tmp/w/*/* && rm -rf /tmp/w`},
	}
	run := func(script string) float64 {
		out, err := client.Exec(5*time.Minute, "/bin/timeit", "/bin/sh", "-c", script)
		if err != nil {
			b.Fatalf("%s: %v: %s", script, err, out)
		}
		lines := strings.Fields(out)
		ns, err := strconv.ParseFloat(lines[len(lines)-1], 64)
		if err != nil {
			b.Fatalf("timeit output %q", out)
		}
		return ns
	}
	_, _, js := testenv.NATS(b)

	for b.Loop() {
		off := map[string][]float64{}
		on := map[string][]float64{}
		var seen float64
		var hooks []string
		for r := range rounds {
			// ABBA order: off/on in even rounds, on/off in odd ones, so a
			// drift in the machine's load does not favour one mode.
			for _, withCollector := range [][]bool{{false, true}, {true, false}}[r%2] {
				var stop func()
				if withCollector {
					m := metrics.New()
					c, err := New(DefaultConfig(), js, m, testenv.Discard())
					if err != nil {
						b.Fatal(err)
					}
					hooks = c.Hooks()
					ctx, cancel := context.WithCancel(context.Background())
					done := make(chan error, 1)
					go func() { done <- c.Run(ctx) }()
					stop = func() {
						cancel()
						if err := <-done; err != nil {
							b.Fatal(err)
						}
						seen += testutil.ToFloat64(m.EventsIn.WithLabelValues(metrics.StageCollector))
					}
				}
				for _, w := range workloads {
					ns := run(w.script)
					if withCollector {
						on[w.name] = append(on[w.name], ns)
					} else {
						off[w.name] = append(off[w.name], ns)
					}
				}
				if stop != nil {
					stop()
				}
			}
		}
		// Each GET is at least an exec and a connect seen by the collector.
		if seen < float64(rounds*gets) {
			b.Fatalf("collector read %.0f records over %d rounds of %d GETs: it did not see the workload", seen, rounds, gets)
		}
		for _, w := range workloads {
			a, c := median(off[w.name]), median(on[w.name])
			slow := 100 * (c - a) / a
			b.Logf("%s: off %v on %v (ns)", w.name, off[w.name], on[w.name])
			fmt.Printf("workload %s: off=%.1fms on=%.1fms slowdown=%+.2f%% rounds=%d hooks=%v\n",
				w.name, a/1e6, c/1e6, slow, rounds, hooks)
			b.ReportMetric(slow, w.name+"_slowdown_%")
		}
		fmt.Printf("workload: collector records read with the collector on: %.0f (%.0f per round)\n", seen, seen/float64(rounds))
	}
}

func envInt(key string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(key)); err == nil && v > 0 {
		return v
	}
	return def
}

func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	if len(s)%2 == 0 {
		return (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return s[len(s)/2]
}

// writeTree lays out n files of 64 KiB of log-like, compressible text in
// 16 directories under dir.
func writeTree(dir string, n int) error {
	rng := rand.New(rand.NewPCG(1, 2))
	words := []string{"GET", "POST", "/api/v1/items", "200", "404", "user", "session", "latency_ms", "error", "ok", "contain", "collector"}
	for i := range n {
		d := filepath.Join(dir, fmt.Sprintf("d%02d", i%16))
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
		var sb strings.Builder
		for sb.Len() < 64<<10 {
			fmt.Fprintf(&sb, "%d %s %s %d\n", rng.IntN(1e9), words[rng.IntN(len(words))], words[rng.IntN(len(words))], rng.IntN(1000))
		}
		if err := os.WriteFile(filepath.Join(d, fmt.Sprintf("f%04d.log", i)), []byte(sb.String()[:64<<10]), 0o644); err != nil {
			return err
		}
	}
	return nil
}
