package analyzer

import (
	"math"
	"strings"
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
	n, ok := m[k]
	if !ok && len(m) >= e.cfg.MaxItems {
		e.stats.Full++
		return false
	}
	if s, isStr := any(k).(string); isStr {
		// k may point into a message's payload (bus.DecodeAliased), and
		// an assignment stores its key even when an equal one is there.
		k = any(e.own(s)).(K)
	}
	if !ok {
		m[k] = 1
		return true
	}
	if n < math.MaxUint32 {
		m[k] = n + 1
	}
	return false
}

// maxOwned bounds the strings own remembers.
const maxOwned = 1 << 16

// own returns a copy of s that the engine owns (shares nothing with an
// event), the same copy for equal strings while it is remembered.
func (e *Engine) own(s string) string {
	if o, ok := e.owned[s]; ok {
		return o
	}
	o := strings.Clone(s)
	if len(e.owned) >= maxOwned {
		clear(e.owned)
	}
	e.owned[o] = o
	return o
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
