package bus

import (
	"context"
	"math"
	"runtime"
	"runtime/debug"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/containsec/contain/internal/memgate"
	"github.com/containsec/contain/internal/metrics"
)

// TestHoldBackExemptsNoMemoryWait: at the memory bound a bulk consumer
// waits before its next fetch and counts it; one marked NoMemoryWait (the
// responder's alerts) fetches at once.
func TestHoldBackExemptsNoMemoryWait(t *testing.T) {
	defer debug.SetMemoryLimit(debug.SetMemoryLimit(math.MaxInt64))
	keep := make([]byte, 64<<20)
	for i := range keep {
		keep[i] = 1
	}
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	debug.SetMemoryLimit(int64(float64(ms.HeapAlloc) / 0.95))
	runtime.GC()
	if !memgate.Over() {
		t.Fatal("not at the memory bound")
	}
	m := metrics.New()
	holdBack(context.Background(), &ConsumerConfig{Stage: "urgent", NoMemoryWait: true}, m)
	holdBack(context.Background(), &ConsumerConfig{Stage: "bulk"}, m)
	runtime.KeepAlive(keep)
	if w := testutil.ToFloat64(m.MemoryWait.WithLabelValues("urgent")); w != 0 {
		t.Fatalf("an exempt consumer waited %vs", w)
	}
	if w := testutil.ToFloat64(m.MemoryWait.WithLabelValues("bulk")); w < memoryWait.Seconds()*0.9 {
		t.Fatalf("a bulk consumer waited %vs at the bound, want about %v", w, memoryWait)
	}
}
