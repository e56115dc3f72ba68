// The engine's stateful side of behaviours: learning them per actor, drift
// and bulk-deletion state per container, and the incident combination.

package analyzer

import (
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/containsec/contain/schemas/containv1"
)

// behave learns (learn) or raises the behaviours hits that actor (the
// executable acting) shows; a behaviour the baseline learned for that
// actor raises nothing. It reports whether one was new.
func (e *Engine) behave(b *Baseline, actor string, hits []hit, learn bool) bool {
	novel := false
	for _, h := range hits {
		k := h.code + "\x00" + actor + "\x00" + h.key
		if learn {
			novel = e.learnKey(b.Behaviours, k) || novel
			continue
		}
		if _, ok := b.Behaviours[k]; ok {
			continue
		}
		if (h.tree || strings.HasPrefix(actor, "comm:") || strings.HasPrefix(h.key, unknownParent)) && learnedLoosely(b, h) {
			continue
		}
		e.dev(h.code, h.subject, h.msg, func() { e.learnKey(b.Behaviours, k) }, h.mitre...)
	}
	return novel
}

// behaveBy is behave with the actor of process p (actor): the process
// table is looked up, and a comm-named actor made, only for an event
// that shows a behaviour.
func (e *Engine) behaveBy(b *Baseline, c *container, p *containv1.Process, hits []hit, learn bool) bool {
	if len(hits) == 0 {
		return false // behave of no hits
	}
	return e.behave(b, actor(c, p), hits, learn)
}

// unknownParent starts the key of a shell or interpreter started by a
// process the container's table does not know: "?" + its path.
const unknownParent = "? -> "

// learnedLoosely reports whether the baseline learned h for any actor
// (and, for a process whose parent is unknown, from any parent). The
// process table is lost with an analyzer restart and misses what was
// forked before: a learned behaviour must not then look new. Scans the
// behaviours (bounded by MaxItems), only in that case.
func learnedLoosely(b *Baseline, h hit) bool {
	key := h.key
	child, anyParent := strings.CutPrefix(key, unknownParent)
	prefix := h.code + "\x00"
	for k := range b.Behaviours {
		if !strings.HasPrefix(k, prefix) {
			continue
		}
		i := strings.LastIndexByte(k, 0)
		if i < 0 {
			continue
		}
		lk := k[i+1:]
		if lk == key || anyParent && strings.HasSuffix(lk, " -> "+child) {
			return true
		}
	}
	return false
}

// actor is the executable of the process p, as far as the container's
// process table knows it, else its comm.
func actor(c *container, p *containv1.Process) string {
	if p == nil {
		return "?"
	}
	if exe, ok := c.exe(p.Tgid); ok {
		return exe
	}
	return "comm:" + p.Comm
}

// trackWritten remembers the files the container made executable so that
// executing one is drift: created with an execute bit, chmod +x, renamed
// or linked into place, or a known executable written over. Data files
// are not tracked (the set stays small).
func trackWritten(c *container, b *Baseline, f *containv1.File) {
	if f.Result < 0 {
		return
	}
	t := fileTarget(f)
	switch f.Op {
	case containv1.File_OP_CREATE, containv1.File_OP_CHMOD:
		if f.Mode&0o111 == 0 {
			return
		}
	case containv1.File_OP_RENAME, containv1.File_OP_LINK:
	case containv1.File_OP_OPEN_WRITE, containv1.File_OP_TRUNCATE:
		if _, known := b.Exec[t]; !known {
			return
		}
	default:
		return
	}
	if t == "" || t[0] != '/' || strings.HasPrefix(t, "/proc/") || strings.HasPrefix(t, "/dev/null") {
		return
	}
	if c.written[t] {
		return
	}
	roomIn(&c.written, maxWritten)
	c.written[strings.Clone(t)] = true // kept: t may point into a payload
}

// bulkHit counts a destructive operation of f's process tree and returns
// the bulk-deletion behaviour once the tree made bulkThreshold of them
// within bulkWindowNs, a sliding window (once per window): a shell loop
// renaming or deleting a file per fork is not cut in two by a window
// that an unrelated deletion opened. What is
// removed below the temporary and cache directories (a cleaner's work)
// does not count.
func bulkHit(c *container, f *containv1.File, now int64) []hit {
	if !destroys(f) && !renamesAway(f) || scratchPath(f.Path) {
		return nil
	}
	tree := treeOf(f.Proc)
	bc := c.bulk[tree]
	if bc == nil {
		roomIn(&c.bulk, maxTrees)
		bc = &bulkCounter{}
		c.bulk[tree] = bc
	}
	oldest := bc.ring[bc.next] // the operation bulkThreshold-1 before this one, 0 if fewer
	bc.ring[bc.next] = now
	bc.next = (bc.next + 1) % bulkThreshold
	if oldest == 0 || now-oldest > bulkWindowNs || now < oldest || bc.firedNs != 0 && now-bc.firedNs < bulkWindowNs {
		return nil
	}
	bc.firedNs = now
	return []hit{{code: CodeBulkDelete, subject: "bulk", key: "bulk", tree: true,
		msg: fmt.Sprintf("%d files deleted, truncated, overwritten or renamed away by one process tree within %v (latest %s)",
			bulkThreshold, time.Duration(now-oldest).Round(time.Millisecond), fileTarget(f))}}
}

// scratchPath reports whether p lies below a temporary or cache
// directory, where deleting many files is housekeeping.
func scratchPath(p string) bool {
	return isTmpPath(p) || under(p, "/tmp") || under(p, "/var/cache") || strings.Contains(p, "/.cache/") ||
		strings.Contains(p, "/cache/") || strings.Contains(p, "/tmp/")
}

// combine joins the reasons of this alert with those the same process
// tree raised within CombineWindow before it: the noisy-OR of the
// distinct reason codes (each at its highest score), capped at
// CombineCap. It returns 0 when fewer than two distinct codes are in
// the window or combining is off, and records these reasons.
func (e *Engine) combine(c *container, ev *containv1.Event, reasons []*containv1.Reason) (float64, string) {
	win := int64(e.cfg.CombineWindow)
	if win <= 0 {
		return 0, ""
	}
	tree := treeOf(procOf(ev))
	now := ev.WallNs
	kept := c.recent[tree][:0]
	for _, r := range c.recent[tree] {
		if d := now - r.ns; d < win && d > -win {
			kept = append(kept, r)
		}
	}
	for _, r := range reasons {
		// Lifecycle records (an exec session, a service's new address)
		// are not an incident's deviations.
		if r.Code != CodeExecSession && r.Code != CodePeerNewAddress && r.Score > 0 {
			kept = append(kept, recentReason{code: r.Code, score: r.Score, ns: now})
		}
	}
	if len(kept) > 64 {
		kept = kept[len(kept)-64:]
	}
	if c.recent[tree] == nil {
		roomIn(&c.recent, maxTrees)
	}
	c.recent[tree] = kept
	best := map[string]float64{}
	for _, r := range kept {
		best[r.code] = max(best[r.code], r.score)
	}
	if len(best) < 2 {
		return 0, ""
	}
	codes := make([]string, 0, len(best))
	miss := 1.0
	for code, sc := range best {
		codes = append(codes, code)
		miss *= 1 - sc
	}
	sort.Strings(codes)
	combined := round3(min(1-miss, e.cfg.CombineCap))
	who := "the container's own processes"
	if tree != 0 {
		who = fmt.Sprintf("exec session %d", tree)
	}
	return combined, fmt.Sprintf("%d distinct deviations of %s within %v: %s (noisy-OR, capped at %v)",
		len(best), who, e.cfg.CombineWindow, strings.Join(codes, ", "), e.cfg.CombineCap)
}

// Connections to scanThreshold distinct endpoints (address and port) by
// one process tree within scanWindowNs raise net.scan: a port scan or a
// host sweep, whichever tool makes it (nc in a shell loop, a script, a
// scanner binary). Failed connections count: a scan mostly fails.
const (
	scanThreshold = 20
	scanWindowNs  = int64(5e9)
)

// scanHit counts the connection of n's process tree to peer and returns
// the scan behaviour once the tree reached scanThreshold distinct
// endpoints within scanWindowNs (once per window).
func scanHit(c *container, n *containv1.Network, peer string, now int64) []hit {
	tree := treeOf(n.Proc)
	sc := c.scan[tree]
	if sc == nil {
		roomIn(&c.scan, maxTrees)
		sc = &scanCounter{start: now, endpoints: map[string]bool{}}
		c.scan[tree] = sc
	}
	if now-sc.start > scanWindowNs || now < sc.start {
		*sc = scanCounter{start: now, endpoints: map[string]bool{}}
	}
	if sc.fired || len(sc.endpoints) >= scanThreshold {
		return nil
	}
	sc.endpoints[peer] = true
	if len(sc.endpoints) < scanThreshold {
		return nil
	}
	sc.fired = true
	return []hit{{code: CodeNetScan, subject: "scan", key: "scan", tree: true,
		msg: fmt.Sprintf("connections to %d distinct endpoints by one process tree within %v (latest %s)",
			len(sc.endpoints), time.Duration(scanWindowNs), peer)}}
}
