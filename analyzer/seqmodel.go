package analyzer

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"

	"github.com/containsec/contain/schemas/kvdoc"
)

// The sequence model is a variable-order Markov model of a group's syscall
// stream, smoothed the PPM-C way (Moffat 1990): the probability of a
// syscall after a context of up to SeqOrder syscalls is its count over
// (count + distinct) of the longest context that saw it, times the escape
// probabilities (distinct over (count + distinct)) of the longer contexts
// that did not (a context's count includes its occurrences at the end of
// a thread: that small mass is the thread ending); a syscall never seen at all gets the escape mass spread
// over the syscalls known plus one. Its surprise, −log2 p, is what a
// thread's window averages (seqscore.go). See docs/design/018.
const (
	// SeqOrder is the longest context, in syscalls; grams hold up to
	// SeqOrder+1 syscalls.
	SeqOrder = 5
	// seqSymBits is the bits of one syscall in a key: numbers from 1023 up
	// (no architecture has that many) share the symbol seqSymOther.
	seqSymBits  = 10
	seqSymOther = 1<<seqSymBits - 1
	seqHistMask = 1<<(seqSymBits*SeqOrder) - 1
	// SeqMaxContexts bounds the contexts (grams that were followed by a
	// syscall) and SeqMaxGrams the grams of one model: about 0.9 MB at
	// most (BenchmarkSeqModelMemory).
	SeqMaxContexts = 16384
	SeqMaxGrams    = 24576
)

// seqStat is a gram's count and, as a context, the distinct syscalls
// seen after it. 8 bytes: a map slot is 16.
type seqStat struct {
	count    uint32 // occurrences of the gram (the empty context: of any syscall)
	distinct uint32 // distinct syscalls seen after it
}

// SeqModel is one group's sequence model. It is not safe for concurrent
// use; the engine owns it.
type SeqModel struct {
	// grams is keyed by length<<60 | the syscalls, 10 bits each, the
	// latest in the low bits. Key 0 is the empty context.
	grams    seqTable
	contexts int
	// Full counts grams not learned because the model was full.
	Full uint64
}

// NewSeqModel returns an empty model.
func NewSeqModel() *SeqModel { return &SeqModel{} }

// seqHist is a thread's last syscalls: up to SeqOrder symbols, latest in
// the low bits.
type seqHist struct {
	h uint64
	n uint8
}

func seqSym(nr uint32) uint64 {
	if nr >= seqSymOther {
		return seqSymOther
	}
	return uint64(nr)
}

func (h *seqHist) push(s uint64) {
	h.h = (h.h<<seqSymBits | s) & seqHistMask
	if h.n < SeqOrder {
		h.n++
	}
}

// ctxKey is the key of the history's last k syscalls.
func (h seqHist) ctxKey(k uint8) uint64 {
	return uint64(k)<<60 | h.h&(1<<(seqSymBits*uint(k))-1)
}

// gramKey is the key of the history's last k syscalls followed by s.
func (h seqHist) gramKey(k uint8, s uint64) uint64 {
	return uint64(k+1)<<60 | (h.h&(1<<(seqSymBits*uint(k))-1))<<seqSymBits | s
}

// Len is the number of grams held.
func (m *SeqModel) Len() int { return m.grams.n }

// Contexts is the number of contexts held.
func (m *SeqModel) Contexts() int { return m.contexts }

// learn counts syscall s after history h at every order, and reports
// whether a gram was new.
func (m *SeqModel) learn(h seqHist, s uint64) bool {
	novel := false
	for k := uint8(0); k <= h.n; k++ {
		ck, gk := h.ctxKey(k), h.gramKey(k, s)
		c, ok := m.grams.get(ck)
		if !ok && k > 0 {
			break // dropped when full: so are the longer ones
		}
		g, seen := m.grams.get(gk)
		if !seen && m.grams.n >= SeqMaxGrams {
			m.Full++
			break
		}
		changed := k == 0
		if changed && c.count < math.MaxUint32 {
			c.count++
		}
		if g.count == 0 {
			if c.distinct == 0 {
				if m.contexts >= SeqMaxContexts {
					m.Full++
					break
				}
				m.contexts++
			}
			c.distinct++
			changed, novel = true, true
		}
		if changed {
			m.grams.put(ck, c)
		}
		if g.count < math.MaxUint32 {
			g.count++
		}
		m.grams.put(gk, g)
	}
	return novel
}

// Learn adds a trace (one thread's syscalls, in order).
func (m *SeqModel) Learn(trace []uint32) {
	var h seqHist
	for _, nr := range trace {
		s := seqSym(nr)
		m.learn(h, s)
		h.push(s)
	}
}

// surprise is −log2 P(s | h), in bits.
func (m *SeqModel) surprise(h seqHist, s uint64) float64 {
	esc := 1.0
	for k := int(h.n); k >= 0; k-- {
		c, ok := m.grams.get(h.ctxKey(uint8(k)))
		if !ok || c.distinct == 0 {
			continue
		}
		d := float64(c.count) + float64(c.distinct)
		if g, _ := m.grams.get(h.gramKey(uint8(k), s)); g.count > 0 {
			return -math.Log2(esc * float64(g.count) / d)
		}
		esc *= float64(c.distinct) / d
	}
	root, _ := m.grams.get(0)
	known := float64(root.distinct)
	return -math.Log2(esc / (known + 1))
}

// Grams is the model as gram counts, "nr nr ..." (1 to SeqOrder+1
// syscalls, oldest first): what the baseline document stores.
func (m *SeqModel) Grams() map[string]uint32 {
	out := make(map[string]uint32, m.grams.n)
	var b strings.Builder
	m.grams.each(func(k uint64, v seqStat) {
		if v.count == 0 || k>>60 == 0 {
			return // a context only, or the empty context
		}
		b.Reset()
		n := int(k >> 60)
		for i := n - 1; i >= 0; i-- {
			if b.Len() > 0 {
				b.WriteByte(' ')
			}
			b.WriteString(strconv.FormatUint(k>>(seqSymBits*uint(i))&seqSymOther, 10))
		}
		out[b.String()] = v.count
	})
	return out
}

// errSeqGram is a stored gram that is not 1 to SeqOrder+1 syscall numbers.
var errSeqGram = errors.New("not 1 to 6 syscall numbers")

// SeqModelFromGrams rebuilds a model from Grams' output: a context's
// distinct syscalls are its grams; the empty context's count (and that of
// any context not stored) is the sum of its grams' counts.
func SeqModelFromGrams(grams map[string]uint32) (*SeqModel, error) {
	m := &SeqModel{}
	for s, v := range grams {
		f, err := kvdoc.ParseNGram(s)
		if err != nil || len(f) > SeqOrder+1 {
			return nil, fmt.Errorf("gram %q: %w", truncate(s, 64), errSeqGram)
		}
		var packed uint64
		for _, x := range f {
			packed = packed<<seqSymBits | seqSym(x)
		}
		if v == 0 {
			continue
		}
		k := uint64(len(f))<<60 | packed
		if m.grams.n > 2*SeqMaxGrams {
			return nil, fmt.Errorf("over %d grams", 2*SeqMaxGrams)
		}
		g, _ := m.grams.get(k)
		g.count += v
		m.grams.put(k, g)
	}
	// A context's count is at least the sum of its grams' (a context is
	// the gram one syscall shorter, and every occurrence of a gram is one
	// of its context's): so it is in a model's own grams. A stored document
	// that says less (edited, corrupt, or missing a shorter gram) would give
	// a gram a probability over 1 and a negative surprise, so counts are
	// raised to their grams' sums, the longest grams first so that a raised
	// context raises its own context in turn.
	var levels [SeqOrder + 2][]uint64
	m.grams.each(func(k uint64, g seqStat) {
		if g.count > 0 && k>>60 > 0 {
			levels[k>>60] = append(levels[k>>60], k)
		}
	})
	for n := len(levels) - 1; n >= 1; n-- {
		sums := map[uint64]uint64{}
		for _, k := range levels[n] {
			g, _ := m.grams.get(k)
			ck := uint64(n-1)<<60 | (k&(1<<60-1))>>seqSymBits
			c, _ := m.grams.get(ck)
			sums[ck] += uint64(g.count)
			if c.distinct == 0 {
				m.contexts++
			}
			c.distinct++
			m.grams.put(ck, c)
		}
		for ck, sum := range sums {
			c, _ := m.grams.get(ck)
			if n-1 >= 1 && c.count == 0 {
				// A context no stored gram named: now one of level n-1.
				levels[n-1] = append(levels[n-1], ck)
			}
			c.count = max(c.count, uint32(min(sum, math.MaxUint32)))
			m.grams.put(ck, c)
		}
	}
	if m.grams.n > SeqMaxGrams+SeqMaxGrams/8 {
		return nil, fmt.Errorf("%d grams: over the bound of %d", m.grams.n, SeqMaxGrams)
	}
	return m, nil
}
