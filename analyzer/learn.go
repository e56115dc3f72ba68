package analyzer

import (
	"math"
	"time"
)

// advance moves a learning baseline to converged when its window ended.
func (e *Engine) advance(b *Baseline, now int64) {
	if b.FirstNs == 0 || now < b.FirstNs {
		b.FirstNs = now
	}
	if now > b.LastNs {
		b.LastNs = now
	}
	if b.Phase == PhaseLearning && now >= b.FirstNs+int64(e.cfg.LearningWindow) {
		e.converge(b, b.FirstNs+int64(e.cfg.LearningWindow))
	}
}

func (e *Engine) converge(b *Baseline, at int64) {
	b.Phase = PhaseConverged
	b.ConvergedNs = at
	b.Version++
	b.dirty = true
}

func (e *Engine) noteNovelty(b *Baseline, novel bool, now int64) {
	b.Observations++
	cc := e.cfg.Convergence
	if cc.NoveltyThreshold <= 0 {
		return
	}
	x := 0.0
	if novel {
		x = 1
	}
	if b.Observations == 1 {
		b.Novelty = x
	} else {
		b.Novelty += e.alpha * (x - b.Novelty)
	}
	if b.Observations >= cc.MinObservations && now-b.FirstNs >= int64(cc.MinDuration) && b.Novelty < cc.NoveltyThreshold {
		e.converge(b, now)
	}
}

// learnKey adds k to m; it reports whether k was new.
func (e *Engine) learnKey(m map[string]uint32, k string) bool { return learnItem(e, m, k) }

// learnU32 is learnKey for numeric items (ports, uids).
func (e *Engine) learnU32(m map[uint32]uint32, k uint32) bool { return learnItem(e, m, k) }

// learnItem counts k in m, adding it while m holds fewer than MaxItems
// (counted in Stats.Full when it is full); it reports whether k was new.
func learnItem[K comparable](e *Engine, m map[K]uint32, k K) bool {
	if n, ok := m[k]; ok {
		if n < math.MaxUint32 {
			m[k] = n + 1
		}
		return false
	}
	if len(m) >= e.cfg.MaxItems {
		e.stats.Full++
		return false
	}
	m[k] = 1
	return true
}

func learnedOver(b *Baseline) string {
	end := b.ConvergedNs
	if end == 0 {
		end = b.LastNs
	}
	d := time.Duration(end - b.FirstNs).Round(time.Second)
	if d < time.Second {
		d = time.Duration(end - b.FirstNs).Round(time.Millisecond)
	}
	return d.String()
}
