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
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"

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
	wall := time.Since(start)
	fmt.Println(wall.Nanoseconds(), (cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()).Nanoseconds())
}
`

// BenchmarkSyscallOverheadWorkload measures realistic work with and without
// the collector in its default mode, in alternating rounds:
//
//   - http: busybox httpd in one runc container serving busybox wget in a
//     loop in another (both on the host's loopback), CONTAIN_WORKLOAD_GETS
//     GETs (default 1000): a fork, exec, connect, accept and exit each.
//   - (CONTAIN_WORKLOAD_WAKEUP=kind,..., CONTAIN_WORKLOAD_POLL=duration,
//     CONTAIN_WORKLOAD_FLUSH=duration and CONTAIN_WORKLOAD_COALESCE=duration
//     override collector.wakeup_kinds, collector.poll_interval,
//     collector.flush_interval and collector.wakeup_coalesce.)
//   - gzip: copy a generated file tree (CONTAIN_WORKLOAD_FILES files of
//     64 KiB, default 256), gzip every file and remove the tree.
//
// It prints, per workload, the median wall and CPU time of each mode and
// the slowdown in percent: of the medians, and the median of the per-round
// ratios (each round measures both modes back to back, so a change in the
// shared machine's load between rounds cancels out). Its name puts it in
// the same -bench SyscallOverhead command as the syscall loop.
func BenchmarkSyscallOverheadWorkload(b *testing.B) {
	testenv.RequireRoot(b)
	goBin := testenv.RequireCommand(b, "go")
	gets := envInt("CONTAIN_WORKLOAD_GETS", 1000)
	files := envInt("CONTAIN_WORKLOAD_FILES", 256)
	rounds := envInt("CONTAIN_WORKLOAD_ROUNDS", 9)

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
	// run returns the wall and CPU ns of one run of script.
	run := func(script string) [2]float64 {
		out, err := client.Exec(5*time.Minute, "/bin/timeit", "/bin/sh", "-c", script)
		if err != nil {
			b.Fatalf("%s: %v: %s", script, err, out)
		}
		f := strings.Fields(out)
		if len(f) < 2 {
			b.Fatalf("timeit output %q", out)
		}
		wall, err1 := strconv.ParseFloat(f[len(f)-2], 64)
		cpu, err2 := strconv.ParseFloat(f[len(f)-1], 64)
		if err1 != nil || err2 != nil {
			b.Fatalf("timeit output %q", out)
		}
		return [2]float64{wall, cpu}
	}
	_, _, js := testenv.NATS(b)

	for b.Loop() {
		// [workload] -> per round {wall, cpu}
		off := map[string][][2]float64{}
		on := map[string][][2]float64{}
		var seen, wakeKernel, wakeTimer, wakeShort, batches float64
		var userCPU time.Duration // this process (collector, embedded NATS) while the collector ran
		var hooks []string
		for r := range rounds {
			// ABBA order: off/on in even rounds, on/off in odd ones, so a
			// drift in the machine's load does not favour one mode.
			for _, withCollector := range [][]bool{{false, true}, {true, false}}[r%2] {
				var stop func()
				if withCollector {
					m := metrics.New()
					cfg := DefaultConfig()
					if k, ok := os.LookupEnv("CONTAIN_WORKLOAD_WAKEUP"); ok {
						cfg.WakeupKinds = strings.FieldsFunc(k, func(r rune) bool { return r == ',' })
					}
					if d, err := time.ParseDuration(os.Getenv("CONTAIN_WORKLOAD_POLL")); err == nil {
						cfg.PollInterval = d
					}
					if d, err := time.ParseDuration(os.Getenv("CONTAIN_WORKLOAD_FLUSH")); err == nil {
						cfg.FlushInterval = d
					}
					if d, err := time.ParseDuration(os.Getenv("CONTAIN_WORKLOAD_COALESCE")); err == nil {
						cfg.WakeupCoalesce = d
					}
					c, err := New(cfg, js, m, testenv.Discard())
					if err != nil {
						b.Fatal(err)
					}
					hooks = c.Hooks()
					cpu0 := selfCPU()
					ctx, cancel := context.WithCancel(context.Background())
					done := make(chan error, 1)
					go func() { done <- c.Run(ctx) }()
					stop = func() {
						cancel()
						if err := <-done; err != nil {
							b.Fatal(err)
						}
						seen += testutil.ToFloat64(m.EventsIn.WithLabelValues(metrics.StageCollector))
						wakeKernel += testutil.ToFloat64(m.ReaderWakeups.WithLabelValues("kernel"))
						wakeTimer += testutil.ToFloat64(m.ReaderWakeups.WithLabelValues("timer"))
						wakeShort += testutil.ToFloat64(m.ReaderWakeups.WithLabelValues("inflight")) +
							testutil.ToFloat64(m.ReaderWakeups.WithLabelValues("recheck"))
						batches += batchesPublished(b, m)
						userCPU += selfCPU() - cpu0
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
			for i, what := range []string{"wall", "cpu"} {
				var a, c, ratios []float64
				for r := range rounds {
					a = append(a, off[w.name][r][i])
					c = append(c, on[w.name][r][i])
					ratios = append(ratios, 100*(on[w.name][r][i]/off[w.name][r][i]-1))
				}
				ma, mc := median(a), median(c)
				slow, paired := 100*(mc-ma)/ma, median(ratios)
				b.Logf("%s %s: off %.0f on %.0f ms, per-round slowdown %.1f%%", w.name, what, scale(a, 1e-6), scale(c, 1e-6), ratios)
				fmt.Printf("workload %s %s: off=%.1fms on=%.1fms slowdown_of_medians=%+.2f%% median_paired_slowdown=%+.2f%% rounds=%d\n",
					w.name, what, ma/1e6, mc/1e6, slow, paired, rounds)
				b.ReportMetric(paired, w.name+"_"+what+"_slowdown_%")
			}
		}
		fmt.Printf("workload: hooks=%v\n", hooks)
		fmt.Printf("workload: reader wakeups per round: %.0f kernel, %.0f timer, %.0f inflight+recheck (design 029); batches published per round: %.0f\n",
			wakeKernel/float64(rounds), wakeTimer/float64(rounds), wakeShort/float64(rounds), batches/float64(rounds))
		fmt.Printf("workload: collector records read with the collector on: %.0f (%.0f per round); CPU of the collector's process (collector + embedded NATS): %v per round\n",
			seen, seen/float64(rounds), (userCPU / time.Duration(rounds)).Round(time.Millisecond))
	}
}

// selfCPU is this process's user + system CPU time.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func envInt(key string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(key)); err == nil && v > 0 {
		return v
	}
	return def
}

func scale(v []float64, f float64) []float64 {
	out := make([]float64, len(v))
	for i, x := range v {
		out[i] = x * f
	}
	return out
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

// batchesPublished is the number of batches the collector published.
func batchesPublished(tb testing.TB, m *metrics.Metrics) float64 {
	var pb dto.Metric
	if err := m.BatchEvents.WithLabelValues(metrics.StageCollector).(prometheus.Histogram).Write(&pb); err != nil {
		tb.Fatal(err)
	}
	return float64(pb.GetHistogram().GetSampleCount())
}
