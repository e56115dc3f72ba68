package main

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"runtime/pprof"
	"time"
)

// profilePeakHeap writes the heap profile to path each time the heap in
// use passes its previous peak by 10% (checked every second), so the file
// holds the profile nearest the run's peak: `go tool pprof -sample_index
// inuse_space FILE` shows who held the memory.
func profilePeakHeap(ctx context.Context, path string) {
	var peak uint64
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		if ms.HeapInuse < peak+peak/10 {
			continue
		}
		peak = ms.HeapInuse
		f, err := os.Create(path)
		if err != nil {
			fmt.Fprintf(os.Stderr, "--memprofile: %v\n", err)
			return
		}
		if err := pprof.WriteHeapProfile(f); err != nil {
			fmt.Fprintf(os.Stderr, "--memprofile: %v\n", err)
		}
		f.Close()
	}
}
