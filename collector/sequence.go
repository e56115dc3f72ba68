package collector

import (
	"errors"
	"fmt"
	"path"
	"path/filepath"
	"strings"
	"sync/atomic"

	"github.com/cilium/ebpf"

	"github.com/containsec/contain/internal/cgroups"
	"github.com/containsec/contain/internal/logfields"
	"github.com/containsec/contain/internal/metrics"
	"github.com/containsec/contain/internal/runtime"
	"github.com/containsec/contain/schemas/containv1"
)

// Sequence mode (Config.SequenceSelect): the kernel writes one seq_event
// per syscall of a selected container to the seq_events ring buffer; the
// reader drains it with the main ring (drainAll) and a sequencer cuts each
// thread's syscalls into MODE_SEQUENCE events.

// Loss source and reason of sequence records lost to a full seq_events.
const (
	lossSourceSequence   = "sequence_ring"
	reasonSequenceRing   = "reserve_failed_sequence"
	reasonSequenceFull   = "sequence_ring_full" // contain_dropped_total reason
	seqMaxThreads        = 4096                 // threads tracked at once
	seqIdleNs            = uint64(5e9)          // a thread with no record for this long is forgotten
	seqSelectMaxEntries  = 1024                 // bpf seq_cgroups
	errKindSeqSelectFull = "sequence_select"
)

// selector is one collector.sequence_select entry.
type selector struct {
	kind string // name, image, label, id
	key  string // label key
	pat  string // glob (id: prefix)
}

// parseSelectors parses collector.sequence_select entries.
func parseSelectors(specs []string) ([]selector, error) {
	var out []selector
	for _, s := range specs {
		kind, rest, ok := strings.Cut(s, "=")
		if !ok {
			return nil, fmt.Errorf("%q: want name=<glob>, image=<glob>, label=<key>=<glob> or id=<prefix>", s)
		}
		sel := selector{kind: kind, pat: rest}
		switch kind {
		case "name", "image":
		case "id":
			if rest == "" {
				return nil, fmt.Errorf("%q: empty id prefix would select every container", s)
			}
		case "label":
			key, pat, ok := strings.Cut(rest, "=")
			if !ok || key == "" {
				return nil, fmt.Errorf("%q: want label=<key>=<glob>", s)
			}
			sel.key, sel.pat = key, pat
		default:
			return nil, fmt.Errorf("%q: unknown selector %q (name, image, label, id)", s, kind)
		}
		if kind != "id" {
			if _, err := path.Match(sel.pat, ""); err != nil {
				return nil, fmt.Errorf("%q: %w", s, err)
			}
		}
		out = append(out, sel)
	}
	return out, nil
}

// match reports whether the container (id, name, labels) is selected.
func (s selector) match(id, name string, labels map[string]string) bool {
	glob := func(v string) bool {
		ok, _ := path.Match(s.pat, v) // validated
		return ok
	}
	switch s.kind {
	case "id":
		return strings.HasPrefix(id, s.pat)
	case "name":
		return glob(name)
	case "image":
		ref, ok := labels[runtime.LabelImageRef]
		return ok && glob(ref)
	case "label":
		v, ok := labels[s.key]
		return ok && glob(v)
	}
	return false
}

func matchAny(sels []selector, id, name string, labels map[string]string) bool {
	for _, s := range sels {
		if s.match(id, name, labels) {
			return true
		}
	}
	return false
}

// seqThread is one thread's sequence not yet emitted.
// seqKey is what a thread's buffered sequence belongs to: a record with
// another key (tid reused, cgroup moved, exec into another origin) cuts it.
type seqKey struct {
	cgid        uint64
	tgid        uint32
	origin      containv1.Origin
	sessionTgid uint32
}

type seqThread struct {
	seqKey
	first, last uint64 // ktime of the first buffered and of the last record
	nrs         []uint32
}

// sequencer cuts each thread's syscalls into sequences of at most batch,
// in the kernel's order (one thread's records are written by one CPU at a
// time, so the ring holds them in order). Memory is bounded: at most
// maxThreads threads of at most batch syscalls.
type sequencer struct {
	batch      int
	flushNs    uint64
	maxThreads int
	threads    map[uint32]*seqThread
	lastTid    uint32
	lastT      *seqThread
	lastSweep  uint64
	// emit takes ownership of nrs.
	emit func(k seqKey, tid uint32, firstNs uint64, nrs []uint32)
	// overflows counts the times every thread had to be flushed and
	// forgotten because maxThreads were tracked (sequences cut, nothing
	// lost).
	overflows atomic.Uint64
}

func newSequencer(batch int, flushNs uint64, emit func(seqKey, uint32, uint64, []uint32)) *sequencer {
	return &sequencer{batch: batch, flushNs: flushNs, maxThreads: seqMaxThreads, threads: map[uint32]*seqThread{}, emit: emit}
}

// add appends one record to its thread's sequence, emitting it when full.
func (s *sequencer) add(r seqRecord) {
	t := s.lastT
	if t == nil || s.lastTid != r.tid {
		t = s.threads[r.tid]
		if t == nil {
			if len(s.threads) >= s.maxThreads {
				s.overflows.Add(1)
				s.flushAll()
			}
			t = &seqThread{seqKey: r.key()}
			s.threads[r.tid] = t
		}
		s.lastTid, s.lastT = r.tid, t
	}
	if k := r.key(); t.seqKey != k {
		// The tid was reused, or the thread moved cgroup, exec'd into
		// another group's leader or into another origin: its sequence so
		// far is another's.
		s.flush(r.tid, t)
		t.seqKey = k
	}
	if len(t.nrs) == 0 {
		t.first = r.ktime
		if t.nrs == nil {
			t.nrs = make([]uint32, 0, min(s.batch, 32))
		}
	}
	t.last = r.ktime
	t.nrs = append(t.nrs, r.nr)
	if len(t.nrs) >= s.batch {
		s.flush(r.tid, t)
		t.nrs = make([]uint32, 0, s.batch) // a busy thread: the next fills too
	}
}

// flush emits t's buffered sequence.
func (s *sequencer) flush(tid uint32, t *seqThread) {
	if len(t.nrs) == 0 {
		return
	}
	s.emit(t.seqKey, tid, t.first, t.nrs)
	t.nrs = nil
}

// sweep emits sequences whose first syscall is flushNs old and forgets
// idle threads; it does the work at most every flushNs/4.
func (s *sequencer) sweep(now uint64) {
	if now-s.lastSweep < s.flushNs/4 {
		return
	}
	s.lastSweep = now
	for tid, t := range s.threads {
		if len(t.nrs) > 0 && now-t.first >= s.flushNs {
			s.flush(tid, t)
		}
		if len(t.nrs) == 0 && now-t.last >= seqIdleNs {
			delete(s.threads, tid)
		}
	}
	s.lastT = nil
}

// flushAll emits every buffered sequence and forgets every thread.
func (s *sequencer) flushAll() {
	for tid, t := range s.threads {
		s.flush(tid, t)
	}
	clear(s.threads)
	s.lastT = nil
}

// setupSequence makes the sequence reader when sequence mode is
// configured (called by New after load).
func (c *Collector) setupSequence() error {
	if len(c.seqSel) == 0 {
		return nil
	}
	rb := c.coll.Maps["seq_events"]
	rr, err := newRingRead(rb.FD(), int(rb.MaxEntries()))
	if err != nil {
		return fmt.Errorf("collector.sequence_select: reading the sequence ring buffer: %w", err)
	}
	c.seqRR = rr
	c.seqActive = c.coll.Variables["seq_active"]
	if err := c.seqActive.Set(uint32(0)); err != nil {
		return fmt.Errorf("collector.sequence_select: the kernel's seq_active cannot be written without a system call (mmapped BPF globals need Linux 5.5): %w", err)
	}
	c.seqCtrs = map[uint64]*container{}
	c.seqLost = map[uint64]uint64{}
	c.seq = newSequencer(c.cfg.SequenceBatch, uint64(c.cfg.SequenceFlush.Nanoseconds()), c.emitSequence)
	return nil
}

// drainSequence handles every record in the sequence ring (mu held).
func (c *Collector) drainSequence() {
	if c.seqRR == nil {
		return
	}
	for {
		n, err := c.seqRR.drain(drainBatch, c.handleSeq)
		if err != nil {
			c.m.Errors.WithLabelValues(metrics.StageCollector, "seq_ring_read").Inc()
			if !c.seqBroken {
				c.seqBroken = true
				c.log.Error("sequence ring buffer unreadable", logfields.Err, err)
			}
			return
		}
		if n < drainBatch {
			break
		}
	}
	c.seq.sweep(monoNow())
}

func (c *Collector) handleSeq(rec []byte) {
	r, err := decodeSeq(rec)
	if err != nil {
		c.dropUndecodable(err)
		return
	}
	c.seq.add(r)
}

// emitSequence routes one thread's sequence as a MODE_SEQUENCE event.
func (c *Collector) emitSequence(k seqKey, tid uint32, firstNs uint64, nrs []uint32) {
	c.m.EventsIn.WithLabelValues(metrics.StageCollector).Inc()
	c.route(&containv1.Event{
		Kind:     containv1.Kind_KIND_SYSCALL,
		MonoNs:   firstNs,
		CgroupId: k.cgid,
		Body: &containv1.Event_Syscall{Syscall: &containv1.Syscall{
			Mode:     containv1.Syscall_MODE_SEQUENCE,
			Proc:     &containv1.Process{Pid: tid, Tgid: k.tgid, Origin: k.origin, SessionTgid: k.sessionTgid},
			Sequence: nrs,
			Count:    uint64(len(nrs)),
		}},
	})
}

// selectSequence puts ctr in or out of sequence mode by the selectors
// (at each announcement: its metadata may have arrived later).
func (c *Collector) selectSequence(ctr *container) {
	if len(c.seqSel) == 0 || !ctr.isContainer {
		return
	}
	want := matchAny(c.seqSel, ctr.ref.ID, ctr.info.Name, ctr.info.Labels)
	switch {
	case want == ctr.seq:
	case want:
		if err := c.coll.Maps["seq_cgroups"].Update(ctr.cgroupID, collectorSeqCgroup{}, ebpf.UpdateNoExist); err != nil && !errors.Is(err, ebpf.ErrKeyExist) {
			c.m.Errors.WithLabelValues(metrics.StageCollector, errKindSeqSelectFull).Inc()
			c.log.Error("cannot put the container in sequence mode", logfields.ContainerID, ctr.ref.ID, logfields.Err, err)
			return
		}
		ctr.seq = true
		c.seqCtrs[ctr.cgroupID] = ctr
		c.setSeqActive()
		c.log.Info("sequence mode on", logfields.ContainerID, ctr.ref.ID, logfields.ContainerName, ctr.info.Name, logfields.CgroupID, ctr.cgroupID)
	default:
		c.unselectSequence(ctr.cgroupID)
		c.log.Info("sequence mode off: the container no longer matches", logfields.ContainerID, ctr.ref.ID, logfields.ContainerName, ctr.info.Name)
	}
}

// unselectSequence takes cgid out of sequence mode, reporting its last
// losses first.
func (c *Collector) unselectSequence(cgid uint64) {
	c.reportSeqLoss(cgid)
	_ = c.coll.Maps["seq_cgroups"].Delete(cgid)
	if ctr := c.seqCtrs[cgid]; ctr != nil {
		ctr.seq = false
	}
	delete(c.seqCtrs, cgid)
	delete(c.seqLost, cgid)
	c.setSeqActive()
}

func (c *Collector) setSeqActive() {
	v := uint32(0)
	if len(c.seqCtrs) > 0 {
		v = 1
	}
	if err := c.seqActive.Set(v); err != nil {
		c.m.Errors.WithLabelValues(metrics.StageCollector, "seq_active").Inc()
	}
}

// reportSequence reports sequence-ring losses per container and takes
// containers whose cgroup is gone out of sequence mode (mu held; every
// loss_interval).
func (c *Collector) reportSequence() {
	if c.seqRR == nil {
		return
	}
	for cgid, ctr := range c.seqCtrs {
		if id, err := cgroups.ID(filepath.Join(c.cfg.CgroupRoot, ctr.cgroupPath)); err != nil || id != cgid {
			c.unselectSequence(cgid)
			continue
		}
		c.reportSeqLoss(cgid)
	}
	if n := c.seq.overflows.Swap(0); n > 0 {
		c.m.Errors.WithLabelValues(metrics.StageCollector, "sequence_threads_full").Add(float64(n))
	}
}

// reportSeqLoss emits a KIND_LOSS event (source sequence_ring) for cgid's
// sequence records lost since the last report.
func (c *Collector) reportSeqLoss(cgid uint64) {
	var v collectorSeqCgroup
	if err := c.coll.Maps["seq_cgroups"].Lookup(cgid, &v); err != nil {
		return
	}
	prev := c.seqLost[cgid]
	if v.Lost <= prev {
		return
	}
	c.seqLost[cgid] = v.Lost
	c.containerLoss(cgid, monoNow(), lossSourceSequence, reasonSequenceRing, reasonSequenceFull, v.Lost-prev)
}

// sequenceSelected reports whether cgid is in sequence mode in the kernel.
func (c *Collector) sequenceSelected(cgid uint64) bool {
	var v collectorSeqCgroup
	return c.coll.Maps["seq_cgroups"].Lookup(cgid, &v) == nil
}
