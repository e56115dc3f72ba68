package analyzer

import (
	"fmt"

	"github.com/containsec/contain/schemas/containv1"
)

// observeSequence learns or scores a thread's sequence event (sequence
// mode). The collector cuts a thread's stream into events (sequence_batch
// syscalls, or fewer at each sequence_flush: often one or two for a slow
// thread), so the thread's history and window carry across events.
// Learning adds the syscalls to the group's SeqModel; scoring averages
// their surprise over the thread's last SequenceWindow syscalls and raises
// syscall.sequence when the mean passes SequenceThreshold, naming the
// most surprising syscalls and the thread's process (once per event). The
// window then starts over.
func (e *Engine) observeSequence(b *Baseline, c *container, p *containv1.Process, seq []uint32, learn bool) bool {
	if c.seqThreads == nil || len(c.seqThreads) >= maxSeqThreads {
		c.seqThreads = map[uint32]*seqThread{}
	}
	tid := p.GetPid()
	t := c.seqThreads[tid]
	if t == nil {
		t = &seqThread{}
		c.seqThreads[tid] = t
	}
	if learn {
		novel := false
		for _, nr := range seq {
			s := seqSym(nr)
			if b.Seq.learn(t.hist, s) {
				novel = true
			}
			t.hist.push(s)
		}
		e.stats.Full += b.Seq.Full
		b.Seq.Full = 0
		return novel
	}
	w := e.cfg.SequenceWindow
	if w <= 0 {
		w = DefaultSeqWindow
	}
	th := e.cfg.SequenceThreshold
	if th <= 0 {
		th = DefaultSeqThreshold
	}
	alerted := false
	for _, nr := range seq {
		// A thread's first syscalls count as a window padded with
		// unsurprising ones: mean × fill / w.
		mean, _ := t.step(b.Seq, nr, w)
		if alerted || mean*float64(t.fill)/float64(w) <= th {
			continue
		}
		alerted = true // one reason per event: the window starts over
		e.dev(CodeSyscallSequence, "sequence", fmt.Sprintf("thread %d of %s: unexpected syscalls %s (mean surprise %.1f bits over its last %d syscalls, threshold %.1f) for image %s",
			tid, actor(c, p), t.peakText(), mean, w, th, b.Image), nil)
		t.reset()
	}
	return false
}
