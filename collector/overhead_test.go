package collector

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf/link"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/containsec/contain/internal/metrics"
	"github.com/containsec/contain/internal/testenv"
)

// getppidLoop is a static program run inside the container: it calls
// getppid n times and prints the mean ns per call.
const getppidLoop = `package main

import (
	"fmt"
	"os"
	"strconv"
	"syscall"
	"time"
)

func main() {
	n, _ := strconv.Atoi(os.Args[1])
	start := time.Now()
	for i := 0; i < n; i++ {
		syscall.RawSyscall(syscall.SYS_GETPPID, 0, 0, 0)
	}
	fmt.Println(float64(time.Since(start).Nanoseconds()) / float64(n))
}
`

// BenchmarkSyscallOverhead measures, in one run, a tight getppid loop in a
// runc container with no program attached, with an empty tp_btf program on
// sys_enter (the floor of any per-syscall hook) and with the collector in
// its default mode, and reports the collector's added ns per syscall and
// its ratio to the floor. Run it with -benchtime=1x (see docs/benchmarks.md).
//
// The three modes are measured in interleaved rounds (CONTAIN_OVERHEAD_ROUNDS,
// default 9; the order rotates each round, the collector is started fresh in
// each), and the added costs are the medians of each round's differences to
// that round's "none". With CONTAIN_OVERHEAD_SEQUENCE=1 a fourth mode,
// "sequence", runs the collector with the loop's container in sequence
// mode (collector.sequence_select id=<its id>) and reports
// sequence_added_ns. The floor here is ~20-30 ns on a ~80 ns syscall, so a
// drift of the shared machine's load between sequential phases would move
// the ratio more than the collector does.
func BenchmarkSyscallOverhead(b *testing.B) {
	testenv.RequireRoot(b)
	goBin := testenv.RequireCommand(b, "go")
	ctr := testenv.RunContainer(b, "overhead", testenv.ContainerSpec{})
	src := filepath.Join(b.TempDir(), "main.go")
	if err := os.WriteFile(src, []byte(getppidLoop), 0o644); err != nil {
		b.Fatal(err)
	}
	build := exec.Command(goBin, "build", "-o", filepath.Join(ctr.Rootfs, "bin", "getppidloop"), src)
	build.Env = append(os.Environ(), "CGO_ENABLED=0", "GO111MODULE=off")
	if out, err := build.CombinedOutput(); err != nil {
		b.Fatalf("building the loop: %v: %s", err, out)
	}
	iters := envInt("CONTAIN_OVERHEAD_ITERS", 2_000_000)
	rounds := envInt("CONTAIN_OVERHEAD_ROUNDS", 9)
	// run returns the loop's mean ns per getppid.
	run := func(mode string) float64 {
		out, err := ctr.Exec(2*time.Minute, "/bin/getppidloop", strconv.Itoa(iters))
		if err != nil {
			b.Fatalf("%s: %v: %s", mode, err, out)
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(out), 64)
		if err != nil {
			b.Fatalf("%s: output %q", mode, out)
		}
		return v
	}

	spec, err := loadBench()
	if err != nil {
		b.Fatal(err)
	}
	var objs benchObjects
	if err := spec.LoadAndAssign(&objs, nil); err != nil {
		testenv.Unavailable(b, "tp_btf on sys_enter: "+err.Error())
	}
	defer objs.Close()
	_, _, js := testenv.NATS(b)
	var hooks []string
	modes := map[string]func() float64{
		"none": func() float64 { return run("none") },
		"empty tp_btf": func() float64 {
			l, err := link.AttachTracing(link.TracingOptions{Program: objs.EmptySysEnter})
			if err != nil {
				testenv.Unavailable(b, "attaching tp_btf/sys_enter: "+err.Error())
			}
			defer l.Close()
			return run("empty tp_btf")
		},
	}
	// cpuNs: this process's CPU (the collector's reader, batcher and
	// publishing, plus the embedded NATS) per loop syscall, per round.
	cpuNs := map[string][]float64{}
	selected := ctr
	collector := func(mode string, cfg Config) float64 {
		m := metrics.New()
		c, err := New(cfg, js, m, testenv.Discard())
		if err != nil {
			b.Fatal(err)
		}
		hooks = c.Hooks()
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- c.Run(ctx) }()
		if len(cfg.SequenceSelect) > 0 {
			waitSelected(b, c, selected)
		}
		cpu0 := selfCPU()
		v := run(mode)
		cpuNs[mode] = append(cpuNs[mode], float64((selfCPU()-cpu0).Nanoseconds())/float64(iters))
		cancel()
		if err := <-done; err != nil {
			b.Fatal(err)
		}
		if len(cfg.SequenceSelect) > 0 {
			b.Logf("sequence: %.0f sequence records lost", testutil.ToFloat64(m.Dropped.WithLabelValues(metrics.StageCollector, reasonSequenceFull)))
		}
		return v
	}
	modes["collector"] = func() float64 { return collector("collector", DefaultConfig()) }
	names := []string{"none", "empty tp_btf", "collector"}
	if os.Getenv("CONTAIN_OVERHEAD_SEQUENCE") == "1" {
		cfg := DefaultConfig()
		cfg.SequenceSelect = []string{"id=" + ctr.ID}
		modes["sequence"] = func() float64 { return collector("sequence", cfg) }
		// Another container selected, the loop's not: what sequence mode
		// costs bystanders (seq_active set: a seq_cgroups lookup).
		other := testenv.RunContainer(b, "overhead-other", testenv.ContainerSpec{})
		ocfg := DefaultConfig()
		ocfg.SequenceSelect = []string{"id=" + other.ID}
		modes["sequence other"] = func() float64 {
			selected = other
			defer func() { selected = ctr }()
			return collector("sequence other", ocfg)
		}
		names = append(names, "sequence", "sequence other")
	}
	// Round r runs the modes rotated by r.
	var orders [][]string
	for i := range names {
		orders = append(orders, append(slices.Clone(names[i:]), names[:i]...))
	}

	for b.Loop() {
		perMode := map[string][]float64{}
		var floorAdded, colAdded, seqAdded, otherAdded []float64
		for r := range rounds {
			got := map[string]float64{}
			for _, mode := range orders[r%len(orders)] {
				got[mode] = modes[mode]()
				perMode[mode] = append(perMode[mode], got[mode])
			}
			floorAdded = append(floorAdded, got["empty tp_btf"]-got["none"])
			colAdded = append(colAdded, got["collector"]-got["none"])
			if _, ok := got["sequence"]; ok {
				seqAdded = append(seqAdded, got["sequence"]-got["none"])
				otherAdded = append(otherAdded, got["sequence other"]-got["none"])
			}
		}
		for _, mode := range names {
			b.Logf("%s: ns/syscall per round %.1f", mode, perMode[mode])
		}
		b.Logf("added per round: floor %.1f, collector %.1f", floorAdded, colAdded)
		fa, ca := median(floorAdded), median(colAdded)
		ratio := ca / fa
		fmt.Printf("overhead: none=%.0fns empty_tp_btf=%.0fns collector=%.0fns floor_added=%.1fns collector_added=%.1fns floor_ratio=%.2f rounds=%d hooks=%v\n",
			median(perMode["none"]), median(perMode["empty tp_btf"]), median(perMode["collector"]), fa, ca, ratio, rounds, hooks)
		b.ReportMetric(ca, "collector_added_ns/syscall")
		b.ReportMetric(fa, "floor_added_ns/syscall")
		b.ReportMetric(ratio, "floor_ratio")
		if len(seqAdded) > 0 {
			sa := median(seqAdded)
			b.Logf("added per round: sequence %.1f", seqAdded)
			oa := median(otherAdded)
			b.Logf("added per round: sequence other %.1f", otherAdded)
			fmt.Printf("overhead: sequence=%.0fns sequence_added=%.1fns (collector_added=%.1fns; sequence mode adds %.1fns per syscall of a selected container) unselected_while_active_added=%.1fns user_cpu_per_syscall: collector=%.1fns sequence=%.1fns\n",
				median(perMode["sequence"]), sa, ca, sa-ca, oa, median(cpuNs["collector"]), median(cpuNs["sequence"]))
			b.ReportMetric(oa, "unselected_active_added_ns/syscall")
			b.ReportMetric(sa, "sequence_added_ns/syscall")
		}
	}
}
