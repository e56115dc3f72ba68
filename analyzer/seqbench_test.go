package analyzer

import (
	"math/rand/v2"
	"runtime"
	"testing"
	"time"

	"github.com/containsec/contain/schemas/containv1"
)

// seqTrainModel is the model learned from the recorded dataset.
func seqTrainModel(b *testing.B) (*SeqModel, TraceSet) {
	set := seqDataset(b)
	m := NewSeqModel()
	for _, t := range set.Train {
		m.Learn(t)
	}
	return m, set
}

// seqStream is the held-out normal and attack syscalls, concatenated.
func seqStream(set TraceSet) []uint32 {
	var all []uint32
	for _, t := range set.Normal {
		all = append(all, t.Sys...)
	}
	for _, ts := range set.Attack {
		for _, t := range ts {
			all = append(all, t.Sys...)
		}
	}
	return all
}

// BenchmarkSeqScore is the cost of scoring one syscall of a thread
// (surprise, window), on the recorded held-out traces.
func BenchmarkSeqScore(b *testing.B) {
	m, set := seqTrainModel(b)
	all := seqStream(set)
	var t seqThread
	b.ResetTimer()
	start := time.Now()
	for i := range b.N {
		t.step(m, all[i%len(all)], DefaultSeqWindow)
	}
	b.ReportMetric(float64(time.Since(start).Nanoseconds())/float64(b.N), "ns/syscall")
}

// BenchmarkSeqEngineObserve is the engine's cost per syscall of sequence
// events of 256 syscalls (the collector's sequence_batch), scored against
// a converged baseline.
func BenchmarkSeqEngineObserve(b *testing.B) {
	_, set := seqTrainModel(b)
	e := newEngine(b, testConfig(), nil)
	learn(e, "c1")
	at := 0.5
	for _, t := range set.Train {
		for i := 0; i < len(t); i += 256 {
			e.Observe(seqEv("c1", sec(at), 10, t[i:min(i+256, len(t))]...))
		}
		at += 0.001
	}
	e.Observe(execEv("c1", sec(4), "/bin/sleep", "sleep", "1")) // converges
	all := seqStream(set)
	var evs []*containv1.Event
	for i := 0; i+256 <= len(all); i += 256 {
		evs = append(evs, seqEv("c1", sec(10), 10, all[i:i+256]...))
	}
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	for i := range b.N {
		e.Observe(evs[i%len(evs)])
	}
	b.ReportMetric(float64(time.Since(start).Nanoseconds())/float64(b.N)/256, "ns/syscall")
}

// BenchmarkSeqTrain1M learns 1M syscalls: the recorded training traces,
// repeated, with one syscall in 20 replaced at random (so the model keeps
// meeting new grams and reaches its bounds).
func BenchmarkSeqTrain1M(b *testing.B) {
	set := seqDataset(b)
	rng := rand.New(rand.NewPCG(3, 4))
	var traces [][]uint32
	n := 0
	for n < 1_000_000 {
		for _, t := range set.Train {
			c := append([]uint32(nil), t...)
			for i := range c {
				if rng.IntN(20) == 0 {
					c[i] = uint32(rng.IntN(330))
				}
			}
			traces = append(traces, c)
			if n += len(c); n >= 1_000_000 {
				break
			}
		}
	}
	b.ResetTimer()
	start := time.Now()
	var m *SeqModel
	for range b.N {
		m = NewSeqModel()
		for _, t := range traces {
			m.Learn(t)
		}
	}
	b.ReportMetric(time.Since(start).Seconds()/float64(b.N), "s/1M-syscalls")
	b.ReportMetric(float64(m.Len()), "grams")
}

// BenchmarkSeqModelMemory is the heap of one model filled to its bounds.
func BenchmarkSeqModelMemory(b *testing.B) {
	rng := rand.New(rand.NewPCG(5, 6))
	tr := make([]uint32, 400_000)
	for i := range tr {
		tr[i] = uint32(rng.IntN(330))
	}
	for range b.N {
		runtime.GC()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		m := NewSeqModel()
		m.Learn(tr)
		runtime.GC()
		runtime.ReadMemStats(&after)
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/(1<<20), "MB/model")
		b.ReportMetric(float64(m.Len()), "grams")
		b.ReportMetric(float64(m.Contexts()), "contexts")
		runtime.KeepAlive(m)
	}
}
