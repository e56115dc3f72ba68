package analyzer

import (
	"fmt"
	"strings"
)

// Thread scoring: a thread's surprise (−log2 p of each syscall under the
// group's SeqModel), averaged over a sliding window of its last syscalls.
// The engine alerts when the window's mean passes the threshold; `contain
// eval --model markov` scores a trace by its highest window mean.
const (
	// DefaultSeqWindow is the sliding window, in syscalls.
	DefaultSeqWindow = 24
	// MaxSeqWindow bounds it (the ring is an array in each thread's state).
	MaxSeqWindow = 64
	// DefaultSeqThreshold is the window mean surprise, in bits per
	// syscall, above which a thread's window is anomalous: chosen on the
	// recorded dataset (analyzer/testdata/sequences, docs/detection.md).
	DefaultSeqThreshold = 4.0
	// seqFixed is the fixed-point scale of a surprise in the ring.
	seqFixed = 256
)

// seqThread is one thread's scoring state.
type seqThread struct {
	hist seqHist
	ring [MaxSeqWindow]uint16
	pos  uint8
	fill uint8
	sum  uint32
	// peak is the most surprising syscall of the recent window, with
	// the syscalls before it (peakGram, peakN of them counting it), and
	// its age in syscalls.
	peak     uint16
	peakAge  uint8
	peakN    uint8
	peakGram uint64
}

// step scores syscall nr after the thread's history and returns the mean
// surprise of the window, and whether the window is full.
func (t *seqThread) step(m *SeqModel, nr uint32, w int) (float64, bool) {
	s := seqSym(nr)
	x := m.surprise(t.hist, s) * seqFixed
	u := uint16(65535)
	if x < 65535 {
		u = uint16(x + 0.5)
	}
	if t.peakAge++; u >= t.peak || int(t.peakAge) >= w {
		t.peak, t.peakAge = u, 0
		t.peakGram, t.peakN = t.hist.h<<seqSymBits|s, t.hist.n+1
	}
	t.hist.push(s)
	if int(t.fill) == w {
		t.sum -= uint32(t.ring[t.pos])
	} else {
		t.fill++
	}
	t.ring[t.pos] = u
	t.sum += uint32(u)
	if t.pos++; int(t.pos) >= w {
		t.pos = 0
	}
	return float64(t.sum) / seqFixed / float64(t.fill), int(t.fill) == w
}

// reset forgets the window (after an alert), not the history.
func (t *seqThread) reset() {
	t.fill, t.pos, t.sum, t.peak, t.peakAge = 0, 0, 0, 0, 0
}

// peakText names the window's most surprising syscall with the syscalls
// before it, oldest first ("… 59 [62]").
func (t *seqThread) peakText() string {
	var b strings.Builder
	for i := int(t.peakN) - 1; i >= 0; i-- {
		nr := t.peakGram >> (seqSymBits * uint(i)) & seqSymOther
		switch {
		case i == 0:
			fmt.Fprintf(&b, "[%s]", seqName(nr))
		default:
			fmt.Fprintf(&b, "%s ", seqName(nr))
		}
	}
	return b.String()
}

func seqName(nr uint64) string {
	if nr == seqSymOther {
		return "other"
	}
	return fmt.Sprint(nr)
}

// SeqWindowScore is a trace's highest mean surprise over any window of w
// syscalls (over the whole trace when shorter).
func (m *SeqModel) SeqWindowScore(trace []uint32, w int) float64 {
	w = min(max(w, 1), MaxSeqWindow)
	var t seqThread
	best := 0.0
	for _, nr := range trace {
		mean, full := t.step(m, nr, w)
		if full || int(t.fill) == len(trace) {
			best = max(best, mean)
		}
	}
	return best
}

// SeqMeanScore is a trace's mean surprise.
func (m *SeqModel) SeqMeanScore(trace []uint32) float64 {
	if len(trace) == 0 {
		return 0
	}
	var h seqHist
	sum := 0.0
	for _, nr := range trace {
		s := seqSym(nr)
		sum += m.surprise(h, s)
		h.push(s)
	}
	return sum / float64(len(trace))
}
