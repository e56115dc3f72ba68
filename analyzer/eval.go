package analyzer

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strconv"
)

// EvalConfig tunes the syscall-trace evaluation.
type EvalConfig struct {
	// N is the n-gram length (default 3, as the engine's sequence model).
	N int
	// Window is the locality frame: a trace scores the highest mean
	// anomaly over any Window consecutive n-grams (model ngram, default
	// 20) or syscalls (model markov, default DefaultSeqWindow).
	Window int
	// Model is one of EvalModels (default markov).
	Model string
}

func (c *EvalConfig) defaults() {
	if c.N <= 0 {
		c.N = 3
	}
	if c.Model == "" {
		c.Model = ModelMarkov
	}
}

// FamilyResult is the detection of one attack family.
type FamilyResult struct {
	Traces      int     `json:"traces"`
	DetectedAt1 float64 `json:"detected_at_1pct_fpr"`
	DetectedAt5 float64 `json:"detected_at_5pct_fpr"`
	AUC         float64 `json:"auc"`
}

// EvalResult is what `contain eval` prints.
type EvalResult struct {
	Model                 string
	Train, Normal, Attack int
	AUC                   float64
	// DetectedAt1/5: fraction of attack traces scoring above the threshold
	// that keeps the false-alarm rate on normal traces at or under 1%/5%.
	DetectedAt1, DetectedAt5 float64
	Threshold1, Threshold5   float64
	Families                 map[string]FamilyResult
	// Recordings counts, per recording (normal and attack), the traces
	// above the 1% threshold, consecutive ones (in name order) as one.
	Recordings []RecordingResult `json:",omitempty"`
}

// NGramModel is an n-gram frequency model of syscall traces.
type NGramModel struct {
	n      int
	counts map[string]uint32
}

func gramKey(g []uint32) string {
	b := make([]byte, 0, 4*len(g))
	for _, x := range g {
		b = append(b, byte(x), byte(x>>8), byte(x>>16), byte(x>>24))
	}
	return string(b)
}

// TrainNGrams learns the n-grams of traces.
func TrainNGrams(traces [][]uint32, n int) *NGramModel {
	m := &NGramModel{n: n, counts: map[string]uint32{}}
	for _, t := range traces {
		for i := 0; i+n <= len(t); i++ {
			m.counts[gramKey(t[i:i+n])]++
		}
	}
	return m
}

// Score is the anomaly of a trace in [0,1]: the highest mean, over any
// window of consecutive n-grams, of each n-gram's rarity (1 unseen,
// 1/(1+count) seen).
func (m *NGramModel) Score(trace []uint32, window int) float64 {
	k := len(trace) - m.n + 1
	if k <= 0 {
		if len(trace) == 0 {
			return 0
		}
		if _, ok := m.counts[gramKey(trace)]; ok {
			return 0
		}
		return 1
	}
	a := make([]float64, k)
	for i := range k {
		a[i] = 1 / (1 + float64(m.counts[gramKey(trace[i:i+m.n])]))
	}
	w := min(window, k)
	sum := 0.0
	for i := range w {
		sum += a[i]
	}
	best := sum
	for i := w; i < k; i++ {
		sum += a[i] - a[i-w]
		best = max(best, sum)
	}
	return best / float64(w)
}

// EvalTraces learns from train only, scores the normal and attack traces
// and reports ROC AUC and detection at 1% and 5% false-alarm rate,
// overall and per attack family. It is pure.
func EvalTraces(train, normal [][]uint32, attack map[string][][]uint32, cfg EvalConfig) (*EvalResult, error) {
	set := TraceSet{Train: train, Normal: unnamed(normal), Attack: map[string][]Trace{}}
	for f, ts := range attack {
		set.Attack[f] = unnamed(ts)
	}
	return EvalSet(set, cfg)
}

// EvalSet is EvalTraces on named traces: it adds the per-recording counts.
func EvalSet(set TraceSet, cfg EvalConfig) (*EvalResult, error) {
	cfg.defaults()
	if len(set.Train) == 0 || len(set.Normal) == 0 {
		return nil, errors.New("eval: need training and normal traces")
	}
	score, err := trainScorer(cfg.Model, set.Train, cfg)
	if err != nil {
		return nil, err
	}
	ns := make([]float64, len(set.Normal))
	for i, t := range set.Normal {
		ns[i] = score(t.Sys)
	}
	r := &EvalResult{Model: cfg.Model, Train: len(set.Train), Normal: len(set.Normal), Families: map[string]FamilyResult{}}
	r.Threshold1, r.Threshold5 = thresholdAt(ns, 0.01), thresholdAt(ns, 0.05)
	r.Recordings = append(r.Recordings, recordings("normal", set.Normal, ns, r.Threshold1)...)
	var all []float64
	fams := make([]string, 0, len(set.Attack))
	for f := range set.Attack {
		fams = append(fams, f)
	}
	sort.Strings(fams)
	for _, f := range fams {
		var as []float64
		for _, t := range set.Attack[f] {
			as = append(as, score(t.Sys))
		}
		if len(as) == 0 {
			continue
		}
		all = append(all, as...)
		r.Families[f] = FamilyResult{Traces: len(as), AUC: auc(ns, as),
			DetectedAt1: above(as, r.Threshold1), DetectedAt5: above(as, r.Threshold5)}
		r.Recordings = append(r.Recordings, recordings(f, set.Attack[f], as, r.Threshold1)...)
	}
	if len(all) == 0 {
		return nil, errors.New("eval: no attack traces")
	}
	r.Attack = len(all)
	r.AUC = auc(ns, all)
	r.DetectedAt1, r.DetectedAt5 = above(all, r.Threshold1), above(all, r.Threshold5)
	return r, nil
}

// thresholdAt is the lowest score threshold t such that at most a
// fraction fpr of normal scores are > t.
func thresholdAt(normal []float64, fpr float64) float64 {
	s := append([]float64(nil), normal...)
	sort.Sort(sort.Reverse(sort.Float64Slice(s)))
	k := int(math.Floor(fpr * float64(len(s))))
	if k >= len(s) {
		return math.Inf(-1)
	}
	return s[k]
}

func above(xs []float64, t float64) float64 {
	n := 0
	for _, x := range xs {
		if x > t {
			n++
		}
	}
	return float64(n) / float64(len(xs))
}

// auc is the Mann-Whitney estimate of P(attack > normal), ties half.
func auc(normal, attack []float64) float64 {
	type pt struct {
		v   float64
		pos bool
	}
	pts := make([]pt, 0, len(normal)+len(attack))
	for _, v := range normal {
		pts = append(pts, pt{v, false})
	}
	for _, v := range attack {
		pts = append(pts, pt{v, true})
	}
	sort.Slice(pts, func(i, j int) bool { return pts[i].v < pts[j].v })
	// Sum of ranks of positives, with average ranks for ties.
	var rankSum float64
	for i := 0; i < len(pts); {
		j := i
		for j < len(pts) && pts[j].v == pts[i].v {
			j++
		}
		avg := float64(i+j+1) / 2 // ranks i+1..j
		for k := i; k < j; k++ {
			if pts[k].pos {
				rankSum += avg
			}
		}
		i = j
	}
	np, nn := float64(len(attack)), float64(len(normal))
	return (rankSum - np*(np+1)/2) / (np * nn)
}

// ParseTrace reads one trace: whitespace-separated syscall numbers. It is
// pure and safe on any input.
func ParseTrace(r io.Reader) ([]uint32, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	sc.Split(bufio.ScanWords)
	var out []uint32
	for sc.Scan() {
		n, err := strconv.ParseUint(sc.Text(), 10, 32)
		if err != nil || n > 0x1fffff {
			return nil, fmt.Errorf("trace: %q is not a syscall number", truncate(sc.Text(), 32))
		}
		out = append(out, uint32(n))
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("trace: %w", err)
	}
	return out, nil
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}

// ReadTraces reads every regular file of dir as a trace.
func ReadTraces(dir string) ([][]uint32, error) {
	named, err := readNamed(dir)
	if err != nil {
		return nil, err
	}
	var out [][]uint32
	for _, t := range named {
		out = append(out, t.Sys)
	}
	return out, nil
}

func readTraceFile(p string) ([]uint32, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, fmt.Errorf("reading trace: %w", err)
	}
	defer f.Close()
	t, err := ParseTrace(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", p, err)
	}
	return t, nil
}

// ReadTraceFamilies reads an attack directory: each subdirectory is a
// family; files directly in dir form the family "attack".
func ReadTraceFamilies(dir string) (map[string][][]uint32, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("reading attack traces: %w", err)
	}
	out := map[string][][]uint32{}
	for _, e := range ents {
		p := filepath.Join(dir, e.Name())
		switch {
		case e.IsDir():
			ts, err := ReadTraces(p)
			if err != nil {
				return nil, err
			}
			out[e.Name()] = ts
		case e.Type().IsRegular():
			t, err := readTraceFile(p)
			if err != nil {
				return nil, err
			}
			out["attack"] = append(out["attack"], t)
		}
	}
	return out, nil
}

// Eval is `contain eval --train DIR --normal DIR --attack DIR`.
func Eval(trainDir, normalDir, attackDir string, cfg EvalConfig) (*EvalResult, error) {
	set, err := ReadTraceSet(trainDir, normalDir, attackDir)
	if err != nil {
		return nil, err
	}
	return EvalSet(set, cfg)
}

// WriteText prints the result for people.
func (r *EvalResult) WriteText(w io.Writer) error {
	_, err := fmt.Fprintf(w, "traces: train %d, normal %d, attack %d\nROC AUC: %.4f\ndetection at 1%% FPR: %.1f%% (threshold %.4f)\ndetection at 5%% FPR: %.1f%% (threshold %.4f)\n",
		r.Train, r.Normal, r.Attack, r.AUC, 100*r.DetectedAt1, r.Threshold1, 100*r.DetectedAt5, r.Threshold5)
	if err != nil {
		return err
	}
	fams := make([]string, 0, len(r.Families))
	for f := range r.Families {
		fams = append(fams, f)
	}
	sort.Strings(fams)
	for _, f := range fams {
		fr := r.Families[f]
		if _, err := fmt.Fprintf(w, "family %-16s traces %4d  AUC %.4f  detected@1%% %5.1f%%  detected@5%% %5.1f%%\n",
			f, fr.Traces, fr.AUC, 100*fr.DetectedAt1, 100*fr.DetectedAt5); err != nil {
			return err
		}
	}
	return nil
}
