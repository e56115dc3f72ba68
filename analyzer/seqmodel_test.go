package analyzer

import (
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/containsec/contain/schemas/containv1"
)

// seqDataset is the recorded dataset (collector TestRecordSequences).
func seqDataset(t testing.TB) TraceSet {
	t.Helper()
	set, err := ReadTraceSet("testdata/sequences/train", "testdata/sequences/normal", "testdata/sequences/attack")
	if err != nil {
		t.Fatal(err)
	}
	if len(set.Train) < 100 || len(set.Normal) < 100 || len(set.Attack) != 4 {
		t.Fatalf("dataset: %d train, %d normal, %d families", len(set.Train), len(set.Normal), len(set.Attack))
	}
	return set
}

// The engine's scorer on the recorded dataset: ROC AUC ≥ 0.95 and at
// least half the attacks detected at 1% false alarms, every family.
func TestSeqModelDataset(t *testing.T) {
	set := seqDataset(t)
	r, err := EvalSet(set, EvalConfig{Model: ModelMarkov})
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	r.WriteText(&b)
	t.Log("\n" + b.String())
	if r.AUC < 0.95 || r.DetectedAt1 < 0.5 {
		t.Fatalf("markov: AUC %.4f, detected at 1%% FPR %.3f; want ≥ 0.95 and ≥ 0.5", r.AUC, r.DetectedAt1)
	}
	for f, fr := range r.Families {
		if fr.DetectedAt1 < 0.5 {
			t.Errorf("family %s: detected at 1%% FPR %.3f", f, fr.DetectedAt1)
		}
	}
	// Every normal recording's alarms, in a row counted once, stay few.
	runs := 0
	for _, x := range r.Recordings {
		if x.Set == "normal" {
			runs += x.Runs
		}
	}
	if runs > r.Normal/50+1 {
		t.Errorf("%d alarm runs on %d normal traces", runs, r.Normal)
	}
}

// The model persisted as grams and rebuilt scores every syscall the same.
func TestSeqModelGramsRoundTrip(t *testing.T) {
	set := seqDataset(t)
	m := NewSeqModel()
	for _, tr := range set.Train {
		m.Learn(tr)
	}
	grams := m.Grams()
	m2, err := SeqModelFromGrams(grams)
	if err != nil {
		t.Fatal(err)
	}
	if m2.Len() != m.Len() || m2.Contexts() != m.Contexts() {
		t.Fatalf("rebuilt %d grams %d contexts, learned %d %d", m2.Len(), m2.Contexts(), m.Len(), m.Contexts())
	}
	for _, tr := range set.Attack["webshell"][:5] {
		var h seqHist
		for _, nr := range tr.Sys {
			s := seqSym(nr)
			if a, b := m.surprise(h, s), m2.surprise(h, s); a != b {
				t.Fatalf("surprise %v after rebuild, %v learned", b, a)
			}
			h.push(s)
		}
	}
	// Grams of 1 to 6 syscalls; a 7-gram or junk is refused.
	for _, bad := range []string{"1 2 3 4 5 6 7", "1 x", ""} {
		if _, err := SeqModelFromGrams(map[string]uint32{bad: 1}); err == nil {
			t.Errorf("gram %q accepted", bad)
		}
	}
}

// Fed random syscalls, the model stops at its bounds and counts the rest.
func TestSeqModelBounded(t *testing.T) {
	m := NewSeqModel()
	rng := rand.New(rand.NewPCG(1, 2))
	tr := make([]uint32, 200_000)
	for i := range tr {
		tr[i] = uint32(rng.IntN(300))
	}
	m.Learn(tr)
	if m.Len() > SeqMaxGrams || m.Contexts() > SeqMaxContexts || m.Full == 0 {
		t.Fatalf("%d grams, %d contexts, %d not learned", m.Len(), m.Contexts(), m.Full)
	}
	// Still a distribution: a learned syscall is less surprising than a
	// syscall never seen, and both are finite.
	var h seqHist
	h.push(seqSym(tr[0]))
	seen, unseen := m.surprise(h, seqSym(tr[1])), m.surprise(h, seqSym(999))
	if !(seen < unseen) || math.IsInf(unseen, 0) || math.IsNaN(seen) {
		t.Fatalf("surprise learned %v, never seen %v", seen, unseen)
	}
}

// A sequence anomaly in the container's own process tree (0.7) and a
// weak set deviation of the same tree within the combine window reach the
// pause threshold (0.8) together; the alert names the thread's process
// and the surprising syscalls.
func TestSequenceCombinesWithSetDeviation(t *testing.T) {
	e := newEngine(t, testConfig(), nil)
	learn(e, "c1")
	cycle := []uint32{0, 1, 3, 232, 0, 44, 45, 3, 257, 0, 3}
	at := 0.5
	for range 60 {
		e.Observe(seqEv("c1", sec(at), 10, cycle...))
		at += 0.01
	}
	e.Observe(execEv("c1", sec(4), "/bin/sleep", "sleep", "1")) // converges
	if out := e.Observe(seqEv("c1", sec(5), 10, append(cycle, cycle...)...)); len(out) != 0 {
		t.Fatalf("the learned cycle alerted: %v", alertOf(t, out))
	}
	// The same syscalls, in an order the image never showed (a shell
	// spawned and fed from the served process).
	shell := []uint32{0, 45, 1, 44, 232, 0, 0, 3, 1, 1, 257, 44, 45, 45, 0, 232, 3, 3, 1, 0, 44, 257, 45, 1}
	a := alertOf(t, e.Observe(seqEv("c1", sec(6), 10, shell...)))
	r := hasCode(a, CodeSyscallSequence)
	if r == nil || a.Score != 0.7 || !strings.Contains(r.Message, "thread 10 of /bin/sleep") || !strings.Contains(r.Message, "[") {
		t.Fatalf("sequence alert %v: %v", a.Score, a.Reasons)
	}
	// A weak deviation of the same tree (an unseen write path, 0.45)
	// joins it: noisy-OR 1 − 0.3 × 0.55 ≈ 0.835.
	w := alertOf(t, e.Observe(fileEv("c1", sec(7), containv1.File_OP_OPEN_WRITE, "/tmp/payload")))
	if w.Score < 0.8 || hasCode(w, CodeIncidentCombine) == nil {
		t.Fatalf("combined score %v, want ≥ 0.8: %v", w.Score, w.Reasons)
	}
}

// FuzzSeqModelFromGrams: any stored grams load or fail cleanly; a loaded
// model's grams load again.
func FuzzSeqModelFromGrams(f *testing.F) {
	f.Add("0 1 2\n0\n0 1 2 3 4 5")
	f.Add("1023 5000 7\n\n9 9")
	f.Fuzz(func(t *testing.T, s string) {
		grams := map[string]uint32{}
		for i, line := range strings.Split(s, "\n") {
			grams[line] = uint32(i + 1)
		}
		m, err := SeqModelFromGrams(grams)
		if err != nil {
			return
		}
		if _, err := SeqModelFromGrams(m.Grams()); err != nil {
			t.Fatalf("reloading grams: %v", err)
		}
		var h seqHist
		for _, nr := range []uint32{0, 1, 2, 3} {
			if x := m.surprise(h, seqSym(nr)); math.IsNaN(x) || x < 0 {
				t.Fatalf("surprise %v", x)
			}
			h.push(seqSym(nr))
		}
	})
}

// The table holds what a Go map holds, through its growths.
func TestSeqTable(t *testing.T) {
	var tb seqTable
	want := map[uint64]seqStat{}
	rng := rand.New(rand.NewPCG(7, 8))
	for i := range 20000 {
		k := uint64(rng.IntN(5000)) | uint64(rng.IntN(7))<<60
		v := seqStat{count: uint32(i), distinct: uint32(rng.IntN(9))}
		tb.put(k, v)
		want[k] = v
		q := uint64(rng.IntN(6000))
		got, ok := tb.get(q)
		if w, wok := want[q]; ok != wok || got != w {
			t.Fatalf("get %d: %v %v, want %v %v", q, got, ok, w, wok)
		}
	}
	n := 0
	tb.each(func(k uint64, v seqStat) {
		n++
		if want[k] != v {
			t.Fatalf("each %d: %v, want %v", k, v, want[k])
		}
	})
	if n != len(want) || tb.n != len(want) || 4*tb.n > 3*len(tb.keys) {
		t.Fatalf("%d held, %d counted, %d slots; want %d", n, tb.n, len(tb.keys), len(want))
	}
}

// The engine, fed the recorded dataset as sequence events (each trace a
// thread of its own container of one image, in 256-syscall events as the
// collector cuts them), raises syscall.sequence at its default threshold
// for most attack traces and for few normal ones.
func TestSequenceEngineOnDataset(t *testing.T) {
	set := seqDataset(t)
	cfg := testConfig()
	cfg.LearningWindow = 40 * time.Second
	e := newEngine(t, cfg, nil)
	feed := func(ctr string, at float64, tr []uint32) bool {
		alerted := false
		for i := 0; i < len(tr); i += 256 {
			for _, out := range e.Observe(seqEv(ctr, sec(at), 7, tr[i:min(i+256, len(tr))]...)) {
				if hasCode(out.GetAlert(), CodeSyscallSequence) != nil {
					alerted = true
				}
			}
		}
		return alerted
	}
	for i, tr := range set.Train {
		feed(fmt.Sprintf("train%d", i), float64(i)*0.01, tr)
	}
	e.Observe(execEv("train0", sec(41), "/bin/sleep", "sleep", "1")) // converges
	fp := 0
	for i, tr := range set.Normal {
		if feed(fmt.Sprintf("normal%d", i), 50, tr.Sys) {
			fp++
		}
	}
	hit, n := 0, 0
	for f, ts := range set.Attack {
		for i, tr := range ts {
			n++
			if feed(fmt.Sprintf("%s%d", f, i), 60, tr.Sys) {
				hit++
			}
		}
	}
	t.Logf("syscall.sequence on %d of %d normal traces, %d of %d attack traces", fp, len(set.Normal), hit, n)
	if fp > len(set.Normal)/50 || hit < n/2 {
		t.Fatalf("alerts on %d of %d normal traces, %d of %d attack traces", fp, len(set.Normal), hit, n)
	}
}
