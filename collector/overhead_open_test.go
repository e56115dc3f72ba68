package collector

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"golang.org/x/sys/unix"

	"github.com/containsec/contain/internal/metrics"
	"github.com/containsec/contain/internal/testenv"
)

// openLoop is a static program run inside the container: it opens (openat,
// AT_FDCWD) and closes a file n times, for writing ("w") or reading ("r"),
// and prints the mean ns per open+close.
const openLoop = `package main

import (
	"fmt"
	"os"
	"strconv"
	"syscall"
	"time"
	"unsafe"
)

func main() {
	n, _ := strconv.Atoi(os.Args[2])
	flags := syscall.O_RDONLY
	if os.Args[1] == "w" {
		flags = syscall.O_WRONLY
	}
	p, _ := syscall.BytePtrFromString(os.Args[3])
	atFdcwd := -100
	start := time.Now()
	for i := 0; i < n; i++ {
		fd, _, e := syscall.RawSyscall6(syscall.SYS_OPENAT, uintptr(atFdcwd), uintptr(unsafe.Pointer(p)), uintptr(flags), 0, 0, 0)
		if e != 0 {
			panic(e)
		}
		syscall.RawSyscall(syscall.SYS_CLOSE, fd, 0, 0)
	}
	fmt.Println(float64(time.Since(start).Nanoseconds()) / float64(n))
}
`

// BenchmarkOpenOverhead measures what an open costs a container with the
// collector attached, with and without the work done at the open's exit
// on the opened file (its identity, the sensitivity check and the walk of
// its dentries to build resolved_path): a write open of a file five
// components deep (every one is a record: the walk runs) and a read open
// of /etc/passwd (no record: only the identity and name checks run). The
// modes are interleaved in rounds (CONTAIN_OVERHEAD_ROUNDS, default 5,
// rotated each round; a fresh collector each time) and the added costs
// are the medians of the per-round differences. The token bucket is off,
// so every write open is a record. Run with -benchtime=1x (see
// docs/benchmarks.md).
func BenchmarkOpenOverhead(b *testing.B) {
	testenv.RequireRoot(b)
	ctr := testenv.RunContainer(b, "openoverhead", testenv.ContainerSpec{})
	buildStatic(b, openLoop, filepath.Join(ctr.Rootfs, "bin", "openloop"))
	target := "/data/app/lib/x/target"
	if err := os.MkdirAll(filepath.Join(ctr.Rootfs, filepath.Dir(target)), 0o755); err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(ctr.Rootfs, target), nil, 0o644); err != nil {
		b.Fatal(err)
	}
	iters := envInt("CONTAIN_OVERHEAD_ITERS", 200_000)
	rounds := envInt("CONTAIN_OVERHEAD_ROUNDS", 5)
	run := func(mode, kind, path string) float64 {
		out, err := ctr.Exec(2*time.Minute, "/bin/openloop", kind, strconv.Itoa(iters), path)
		if err != nil {
			b.Fatalf("%s: %v: %s", mode, err, out)
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(out), 64)
		if err != nil {
			b.Fatalf("%s: output %q", mode, out)
		}
		return v
	}
	_, _, js := testenv.NATS(b)
	// The sys_exit program's own run time (BPF statistics, on while the
	// benchmark runs): per loop iteration, by mode and loop kind. Other
	// processes' syscalls in the same window add to it in every mode.
	stats, err := ebpf.EnableStats(uint32(unix.BPF_STATS_RUN_TIME))
	if err != nil {
		testenv.Unavailable(b, "BPF run-time statistics: "+err.Error())
	}
	defer stats.Close()
	progNs := map[string][]float64{}
	progRun := func(c *Collector, key string, f func() float64) float64 {
		p := c.coll.Programs["sys_exit_tp_btf"]
		if p == nil {
			p = c.coll.Programs["sys_exit_raw_tp"]
		}
		s0, err0 := p.Stats()
		v := f()
		s1, err1 := p.Stats()
		if err0 == nil && err1 == nil {
			progNs[key] = append(progNs[key], float64(s1.Runtime-s0.Runtime)/float64(iters))
		}
		return v
	}
	// each runs both loops in one mode: ns per write open, per read open.
	each := func(mode string, cfg *Config) (w, r float64) {
		if cfg == nil {
			return run(mode, "w", target), run(mode, "r", "/etc/passwd")
		}
		m := metrics.New()
		c, err := New(*cfg, js, m, testenv.Discard())
		if err != nil {
			b.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- c.Run(ctx) }()
		w = progRun(c, mode+"/w", func() float64 { return run(mode, "w", target) })
		r = progRun(c, mode+"/r", func() float64 { return run(mode, "r", "/etc/passwd") })
		cancel()
		if err := <-done; err != nil {
			b.Fatal(err)
		}
		if lost := testutil.ToFloat64(m.Dropped.WithLabelValues(metrics.StageCollector, reasonRingbufFull)); lost > 0 {
			b.Logf("%s: %.0f records lost to a full ring buffer", mode, lost)
		}
		return w, r
	}
	full := DefaultConfig()
	full.RatePerSec = 0
	bare := full
	bare.noOpenDetail = true
	modes := map[string]*Config{"none": nil, "collector, no open detail": &bare, "collector": &full}
	names := []string{"none", "collector, no open detail", "collector"}
	var orders [][]string
	for i := range names {
		orders = append(orders, append(slices.Clone(names[i:]), names[:i]...))
	}
	for b.Loop() {
		w, r := map[string][]float64{}, map[string][]float64{}
		var wDetail, rDetail, wAdded, rAdded []float64
		for i := range rounds {
			gw, gr := map[string]float64{}, map[string]float64{}
			for _, mode := range orders[i%len(orders)] {
				gw[mode], gr[mode] = each(mode, modes[mode])
				w[mode] = append(w[mode], gw[mode])
				r[mode] = append(r[mode], gr[mode])
			}
			wDetail = append(wDetail, gw["collector"]-gw["collector, no open detail"])
			rDetail = append(rDetail, gr["collector"]-gr["collector, no open detail"])
			wAdded = append(wAdded, gw["collector"]-gw["none"])
			rAdded = append(rAdded, gr["collector"]-gr["none"])
		}
		for _, mode := range names {
			b.Logf("%s: ns per write open %.0f, per read open %.0f", mode, w[mode], r[mode])
		}
		b.Logf("open detail per round: write %.0f, read %.0f", wDetail, rDetail)
		fmt.Printf("open overhead: write open none=%.0fns no_detail=%.0fns collector=%.0fns (detail +%.0fns, collector +%.0fns); read open none=%.0fns no_detail=%.0fns collector=%.0fns (detail +%.0fns, collector +%.0fns); rounds=%d iters=%d\n",
			median(w["none"]), median(w["collector, no open detail"]), median(w["collector"]), median(wDetail), median(wAdded),
			median(r["none"]), median(r["collector, no open detail"]), median(r["collector"]), median(rDetail), median(rAdded), rounds, iters)
		pd := func(kind string) (float64, float64) {
			var d []float64
			for i, v := range progNs["collector/"+kind] {
				if i < len(progNs["collector, no open detail/"+kind]) {
					d = append(d, v-progNs["collector, no open detail/"+kind][i])
				}
			}
			return median(progNs["collector/"+kind]), median(d)
		}
		pw, pwd := pd("w")
		pr, prd := pd("r")
		b.Logf("sys_exit program ns per iteration: %v", progNs)
		fmt.Printf("open overhead in the kernel (sys_exit program run time per open+close): write open %.0fns (detail +%.0fns), read open %.0fns (detail +%.0fns)\n", pw, pwd, pr, prd)
		b.ReportMetric(pwd, "write_open_detail_prog_ns")
		b.ReportMetric(prd, "read_open_detail_prog_ns")
		b.ReportMetric(median(wDetail), "write_open_detail_ns")
		b.ReportMetric(median(rDetail), "read_open_detail_ns")
	}
}
