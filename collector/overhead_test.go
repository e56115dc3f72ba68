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
	iters := 1_000_000
	if s := os.Getenv("CONTAIN_OVERHEAD_ITERS"); s != "" {
		iters, _ = strconv.Atoi(s)
	}
	const reps = 5
	measure := func(mode string) float64 {
		var runs []float64
		for range reps {
			out, err := ctr.Exec(2*time.Minute, "/bin/getppidloop", strconv.Itoa(iters))
			if err != nil {
				b.Fatalf("%s: %v: %s", mode, err, out)
			}
			v, err := strconv.ParseFloat(strings.TrimSpace(out), 64)
			if err != nil {
				b.Fatalf("%s: output %q", mode, out)
			}
			runs = append(runs, v)
		}
		slices.Sort(runs)
		b.Logf("%s: ns/syscall runs %v", mode, runs)
		return runs[reps/2]
	}

	for b.Loop() {
		none := measure("none")

		spec, err := loadBench()
		if err != nil {
			b.Fatal(err)
		}
		var objs benchObjects
		if err := spec.LoadAndAssign(&objs, nil); err != nil {
			testenv.Unavailable(b, "tp_btf on sys_enter: "+err.Error())
		}
		l, err := link.AttachTracing(link.TracingOptions{Program: objs.EmptySysEnter})
		if err != nil {
			testenv.Unavailable(b, "attaching tp_btf/sys_enter: "+err.Error())
		}
		floor := measure("empty tp_btf")
		_ = l.Close()
		_ = objs.Close()

		_, _, js := testenv.NATS(b)
		cfg := DefaultConfig()
		c, err := New(cfg, js, metrics.New(), testenv.Discard())
		if err != nil {
			b.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- c.Run(ctx) }()
		col := measure("collector")
		cancel()
		if err := <-done; err != nil {
			b.Fatal(err)
		}

		floorAdded, colAdded := floor-none, col-none
		ratio := colAdded / floorAdded
		fmt.Printf("overhead: none=%.0fns empty_tp_btf=%.0fns collector=%.0fns floor_added=%.0fns collector_added=%.0fns floor_ratio=%.2f hooks=%v\n",
			none, floor, col, floorAdded, colAdded, ratio, c.Hooks())
		b.ReportMetric(colAdded, "collector_added_ns/syscall")
		b.ReportMetric(floorAdded, "floor_added_ns/syscall")
		b.ReportMetric(ratio, "floor_ratio")
	}
}
