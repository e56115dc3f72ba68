package memgate

import (
	"context"
	"math"
	"runtime"
	"runtime/debug"
	"testing"
	"time"
)

// TestWaitHoldsBackAtTheLimit: with the live heap over 90% of the Go
// memory limit Wait holds the caller up to its maximum (or ctx); under it,
// or without a limit, it returns at once.
func TestWaitHoldsBackAtTheLimit(t *testing.T) {
	defer debug.SetMemoryLimit(debug.SetMemoryLimit(-1))
	debug.SetMemoryLimit(math.MaxInt64) // none
	keep := make([]byte, 64<<20)
	for i := range keep {
		keep[i] = 1
	}
	runtime.GC()
	if Over() {
		t.Fatal("over without a limit")
	}
	// The limit just above what is live: over 90% of it.
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	debug.SetMemoryLimit(int64(float64(ms.HeapAlloc) / 0.95))
	runtime.GC()
	if !Over() {
		t.Fatalf("not over with %d MiB live and a limit of %d MiB", ms.HeapAlloc>>20, debug.SetMemoryLimit(-1)>>20)
	}
	if w := Wait(context.Background(), 100*time.Millisecond); w < 100*time.Millisecond || w > 2*time.Second {
		t.Fatalf("Wait over the limit returned after %v, want its 100ms maximum", w)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if w := Wait(ctx, time.Minute); w > 5*time.Second {
		t.Fatalf("Wait ignored its context: %v", w)
	}
	runtime.KeepAlive(keep)
	keep = nil
	runtime.GC()
	if Over() {
		t.Fatal("still over once the memory is free")
	}
	if w := Wait(context.Background(), time.Minute); w != 0 {
		t.Fatalf("Wait under the limit took %v", w)
	}
}
