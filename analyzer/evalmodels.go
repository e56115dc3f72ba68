package analyzer

import (
	"fmt"
	"math"
	"sort"
	"strings"
)

// The models `contain eval --model` compares. Each learns from the
// training traces only and scores a trace (higher is more anomalous).
const (
	ModelNGram      = "ngram"       // unseen/rare n-grams, highest window mean (the former scorer)
	ModelMarkov     = "markov"      // SeqModel, highest window mean surprise (what the engine runs)
	ModelMarkovMean = "markov-mean" // SeqModel, mean surprise over the trace
	ModelKNN        = "knn"         // nearest training trace by syscall frequencies (cosine)
	ModelEnsemble   = "ensemble"    // markov and knn, each scaled by its held-out 99th percentile, averaged
)

// EvalModels are the models, in the order --compare prints them.
var EvalModels = []string{ModelNGram, ModelMarkov, ModelMarkovMean, ModelKNN, ModelEnsemble}

type scoreFunc func([]uint32) float64

// trainScorer learns model from train.
func trainScorer(model string, train [][]uint32, cfg EvalConfig) (scoreFunc, error) {
	switch model {
	case ModelNGram:
		m := TrainNGrams(train, cfg.N)
		w := cfg.Window
		if w <= 0 {
			w = 20
		}
		return func(t []uint32) float64 { return m.Score(t, w) }, nil
	case ModelMarkov, ModelMarkovMean:
		m := NewSeqModel()
		for _, t := range train {
			m.Learn(t)
		}
		if model == ModelMarkovMean {
			return m.SeqMeanScore, nil
		}
		w := cfg.Window
		if w <= 0 {
			w = DefaultSeqWindow
		}
		return func(t []uint32) float64 { return m.SeqWindowScore(t, w) }, nil
	case ModelKNN:
		k := trainKNN(train)
		return k.score, nil
	case ModelEnsemble:
		return trainEnsemble(train, cfg)
	}
	return nil, fmt.Errorf("eval: unknown model %q (one of %s)", model, strings.Join(EvalModels, ", "))
}

// trainEnsemble scales each member by the 99th percentile of its scores
// on every fifth training trace, learned from the other four fifths, then
// learns each from all of train; a trace's score is the members' mean.
func trainEnsemble(train [][]uint32, cfg EvalConfig) (scoreFunc, error) {
	members := []string{ModelMarkov, ModelKNN}
	var fit, held [][]uint32
	for i, t := range train {
		if i%5 == 4 {
			held = append(held, t)
		} else {
			fit = append(fit, t)
		}
	}
	if len(held) == 0 || len(fit) == 0 {
		fit, held = train, train
	}
	fns := make([]scoreFunc, len(members))
	scales := make([]float64, len(members))
	for i, name := range members {
		f, err := trainScorer(name, fit, cfg)
		if err != nil {
			return nil, err
		}
		s := make([]float64, len(held))
		for j, t := range held {
			s[j] = f(t)
		}
		sort.Float64s(s)
		scales[i] = max(s[int(0.99*float64(len(s)-1))], 1e-9)
		if fns[i], err = trainScorer(name, train, cfg); err != nil {
			return nil, err
		}
	}
	return func(t []uint32) float64 {
		sum := 0.0
		for i, f := range fns {
			sum += f(t) / scales[i]
		}
		return sum / float64(len(fns))
	}, nil
}

// freqVec is a trace's syscall frequencies, L2-normalised, sparse.
type freqVec struct {
	nr  []uint32
	val []float64
}

func freqOf(t []uint32) freqVec {
	cnt := map[uint32]float64{}
	for _, x := range t {
		cnt[x]++
	}
	v := freqVec{nr: make([]uint32, 0, len(cnt)), val: make([]float64, 0, len(cnt))}
	for x := range cnt {
		v.nr = append(v.nr, x)
	}
	sort.Slice(v.nr, func(i, j int) bool { return v.nr[i] < v.nr[j] })
	norm := 0.0
	for _, x := range v.nr {
		norm += cnt[x] * cnt[x]
	}
	norm = math.Sqrt(norm)
	for _, x := range v.nr {
		v.val = append(v.val, cnt[x]/norm)
	}
	return v
}

func cosine(a, b freqVec) float64 {
	s := 0.0
	for i, j := 0, 0; i < len(a.nr) && j < len(b.nr); {
		switch {
		case a.nr[i] == b.nr[j]:
			s += a.val[i] * b.val[j]
			i++
			j++
		case a.nr[i] < b.nr[j]:
			i++
		default:
			j++
		}
	}
	return s
}

type knnModel struct{ train []freqVec }

func trainKNN(train [][]uint32) *knnModel {
	k := &knnModel{}
	seen := map[string]bool{}
	for _, t := range train {
		if len(t) == 0 {
			continue
		}
		v := freqOf(t)
		key := fmt.Sprint(v.nr, v.val)
		if seen[key] {
			continue
		}
		seen[key] = true
		k.train = append(k.train, v)
	}
	return k
}

// score is the cosine distance to the nearest training trace.
func (k *knnModel) score(t []uint32) float64 {
	if len(t) == 0 {
		return 0
	}
	v := freqOf(t)
	best := 0.0
	for _, u := range k.train {
		best = max(best, cosine(v, u))
	}
	return 1 - best
}
