package main

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"runtime/metrics"
	"strconv"
	"strings"
	"time"
)

// memTraceMetrics are the runtime metrics traceMemory writes, in order:
// the live heap, every memory class of the runtime and the GC count.
var memTraceMetrics = []string{
	"/gc/heap/live:bytes",
	"/memory/classes/heap/objects:bytes",   // live and dead objects
	"/memory/classes/heap/unused:bytes",    // in spans, not in objects
	"/memory/classes/heap/free:bytes",      // free pages, not returned
	"/memory/classes/heap/released:bytes",  // returned to the kernel
	"/memory/classes/heap/stacks:bytes",    // goroutine stacks
	"/memory/classes/metadata/other:bytes", // GC and heap metadata
	"/memory/classes/other:bytes",          // profiling buckets, ...
	"/memory/classes/total:bytes",          // all the runtime mapped
	"/gc/heap/allocs:bytes",                // allocated since start
	"/gc/cycles/total:gc-cycles",
}

// traceMemory writes one line a second to path until ctx ends: seconds
// since start, VmRSS and VmHWM (MiB), then memTraceMetrics (MiB, GC
// cycles). It shows when the peak came and whether it was live heap, dead
// heap waiting for a collection or memory not yet returned to the kernel.
func traceMemory(ctx context.Context, path string) {
	f, err := os.Create(path)
	if err != nil {
		fmt.Fprintf(os.Stderr, "--memtrace: %v\n", err)
		return
	}
	defer f.Close()
	w := bufio.NewWriter(f)
	defer w.Flush()
	fmt.Fprintln(w, "s rss hwm live objects unused free released stacks meta other total allocs gcs (MiB but gcs)")
	samples := make([]metrics.Sample, len(memTraceMetrics))
	for i, n := range memTraceMetrics {
		samples[i].Name = n
	}
	start := time.Now()
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		rss, hwm := procStatusMiB()
		metrics.Read(samples)
		fmt.Fprintf(w, "%.0f %d %d", time.Since(start).Seconds(), rss, hwm)
		for _, s := range samples {
			v := s.Value.Uint64()
			if !strings.HasPrefix(s.Name, "/gc/cycles") {
				v >>= 20
			}
			fmt.Fprintf(w, " %d", v)
		}
		fmt.Fprintln(w)
		_ = w.Flush()
	}
}

// procStatusMiB reads VmRSS and VmHWM of this process.
func procStatusMiB() (rss, hwm uint64) {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0, 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok || (k != "VmRSS" && k != "VmHWM") {
			continue
		}
		kb, _ := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		if k == "VmRSS" {
			rss = kb >> 10
		} else {
			hwm = kb >> 10
		}
	}
	return rss, hwm
}
