package collector

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// A model checker for the wakeup protocol (design 029): producers (BPF
// programs on other CPUs) reserve, decide their wakeup flag (submitFlags,
// the mirror of bpf/common.h's submit_flags, checked against the real
// program by TestBPFSubmitFlagsGates) and commit records; the reader drains,
// decides with readerState.next (the production code) and waits as
// ringWait.wait does, including the runtime's pollReset, which discards a
// readiness the netpoller saw before the wait began. Every interleaving of
// their steps is explored (sequentially consistent memory: the barriers
// that make the real one behave so are in setGate and submit_flags).
//
// Property: whenever nothing more can happen but a timeout of the idle
// wait (idleWait, 1 s), every record has been read and both gates are
// open. A record left in the ring then is a lost wakeup (issue 10's 1 s
// outlier); a gate left closed loses the next record's wakeup.

// modelGates mirrors the kernel's wake_gate and idle_gate.
type modelGates struct{ wake, idle bool }

// submitFlags mirrors submit_flags (wake_gated 1, a ring below
// wake_bytes): true when the record forces a wakeup.
func submitFlags(g *modelGates, urgent bool) bool {
	if urgent && g.wake {
		g.wake, g.idle = false, false
		return true
	}
	if g.idle {
		g.idle = false
		return true
	}
	return false
}

const (
	modelMaxRecs = 6
	modelMaxProd = 3
)

type modelRec struct{ urgent, committed bool }

type modelProducer struct {
	next uint8 // index of its next record in its script
	slot uint8 // the reserved record's position
	pc   uint8 // 0 before reserving, 1 reserved, 2 flags decided
	wake bool  // the decided flag
}

// Reader program counters.
const (
	rDrain   = iota // reading records one step at a time
	rDecide         // the drain ended: snapshot and plan
	rOpen           // open plan.open, then drain again
	rPrepare        // ringWait.wait: SetReadDeadline, pollReset
	rCheck          // the re-check before parking (idle waits)
	rParked
)

type modelState struct {
	ring  [modelMaxRecs]modelRec
	prod  uint8 // records reserved
	cons  uint8
	gates modelGates
	irq   uint8 // wakeups sent and not yet seen by the netpoller
	ready bool  // the netpoller saw a wakeup (pdReady)
	prods [modelMaxProd]modelProducer

	pc       uint8
	urgent   bool // this drain read a waking record
	n        uint8
	snap     uint8 // producer position after the drain
	inflight bool
	plan     readerPlan
	st       readerState
}

type modelCheck struct {
	scripts [][]bool // per producer, its records (true: urgent)
	params  wakeupParams
	legacy  legacyReader

	seen   map[modelState]bool
	path   []modelState // the states from the start to the one explored
	names  bool         // successors name their steps (to print a failure)
	failed string
	states int
}

func (m *modelCheck) done(s *modelState) bool {
	for i, sc := range m.scripts {
		if int(s.prods[i].next) < len(sc) || s.prods[i].pc != 0 {
			return false
		}
	}
	return true
}

// successors lists the states one step leads to, with the step's name.
func (m *modelCheck) successors(s modelState) (next []modelState, names []string) {
	add := func(n modelState, name string) { next = append(next, n) }
	if m.names {
		add = func(n modelState, name string) { next, names = append(next, n), append(names, name) }
	}
	for i, sc := range m.scripts {
		p := s.prods[i]
		switch {
		case p.pc == 0 && int(p.next) < len(sc):
			n := s
			n.ring[n.prod] = modelRec{urgent: sc[p.next]}
			n.prods[i].slot, n.prods[i].pc = n.prod, 1
			n.prod++
			add(n, m.name("P%d reserves %s#%d", i, kindName(sc[p.next]), s.prod))
		case p.pc == 1:
			n := s
			n.prods[i].wake = submitFlags(&n.gates, n.ring[p.slot].urgent)
			n.prods[i].pc = 2
			add(n, m.name("P%d submit_flags: wakeup %v (gates now %+v)", i, n.prods[i].wake, n.gates))
		case p.pc == 2:
			n := s
			n.ring[p.slot].committed = true
			if p.wake {
				n.irq++
			}
			n.prods[i].pc, n.prods[i].next = 0, p.next+1
			add(n, m.name("P%d commits #%d", i, p.slot))
		}
	}
	if s.irq > 0 {
		n := s
		n.irq--
		n.ready = true
		add(n, "netpoller sees the wakeup")
	}
	n := s
	switch s.pc {
	case rDrain:
		if s.cons < s.prod && s.ring[s.cons].committed {
			n.urgent = n.urgent || s.ring[s.cons].urgent
			n.n++
			n.cons++
			add(n, m.name("R reads #%d", s.cons))
		} else {
			n.pc = rDecide
			add(n, "R drain ends")
		}
	case rDecide:
		n.snap, n.inflight = s.prod, s.cons < s.prod
		n.plan = n.st.next(drainResult{urgent: s.urgent, n: int(s.n), inflight: n.inflight}, m.params)
		if m.legacy.noInflight && n.plan.inflight {
			n.plan = readerPlan{wait: idleWait, idle: true}
		}
		n.urgent, n.n = false, 0
		if n.plan.open != gateNone {
			n.pc = rOpen
		} else {
			n.pc = rPrepare
		}
		add(n, m.name("R plans %+v (state %+v)", n.plan, n.st))
	case rOpen:
		if s.plan.open == gateWake {
			n.gates.wake = true
		} else {
			n.gates.idle = true
		}
		n.pc = rDrain
		add(n, m.name("R opens gate %d", s.plan.open))
	case rPrepare:
		n.ready = false
		n.pc = rCheck
		add(n, "R pollReset")
	case rCheck:
		if s.plan.idle && !m.legacy.noRecheck && s.prod != s.snap {
			n.pc = rDrain
			add(n, "R re-check: the ring moved")
		} else {
			n.pc = rParked
			add(n, "R parks")
		}
	case rParked:
		if s.ready {
			n.ready = false
			n.pc = rDrain
			add(n, "R woken")
		}
		if s.plan.wait < idleWait {
			n := s
			n.pc = rDrain
			add(n, "R timer")
		}
	}
	return next, names
}

// name formats a step's name, only when failures are being printed.
func (m *modelCheck) name(format string, args ...any) string {
	if !m.names {
		return ""
	}
	return fmt.Sprintf(format, args...)
}

func kindName(urgent bool) string {
	if urgent {
		return "urgent"
	}
	return "other"
}

func (m *modelCheck) explore(s modelState) {
	if m.failed != "" || m.seen[s] {
		return
	}
	m.seen[s] = true
	m.states++
	m.path = append(m.path, s)
	defer func() { m.path = m.path[:len(m.path)-1] }()
	next, _ := m.successors(s)
	if len(next) == 0 {
		switch {
		case !m.done(&s) || s.pc != rParked || !s.plan.idle:
			m.failed = fmt.Sprintf("stuck in a state that is not the idle wait: %+v", s)
		case s.cons != s.prod:
			m.failed = fmt.Sprintf("idle wait with %d record(s) unread (lost wakeup)", s.prod-s.cons)
		case !s.gates.wake || !s.gates.idle:
			m.failed = fmt.Sprintf("idle wait with a gate closed: %+v", s.gates)
		}
		if m.failed != "" {
			m.failed += "\n  " + strings.Join(m.steps(), "\n  ")
		}
		return
	}
	for _, n := range next {
		m.explore(n)
	}
}

// steps names the steps along the path (a failure's trace).
func (m *modelCheck) steps() []string {
	m.names = true
	defer func() { m.names = false }()
	var out []string
	for i := 1; i < len(m.path); i++ {
		next, names := m.successors(m.path[i-1])
		for j, n := range next {
			if n == m.path[i] {
				out = append(out, names[j])
				break
			}
		}
	}
	return out
}

// check explores every interleaving of scripts from an idle reader; it
// returns the first violation with its steps, or "".
func checkWakeupModel(scripts [][]bool, params wakeupParams, legacy legacyReader) (string, int) {
	m := &modelCheck{scripts: scripts, params: params, legacy: legacy, seen: map[modelState]bool{}}
	m.explore(modelState{gates: modelGates{wake: true, idle: true}})
	return m.failed, m.states
}

var (
	modelParams  = wakeupParams{gated: true, coalesce: 20 * time.Millisecond, poll: 20 * time.Millisecond}
	modelScripts = map[string][][]bool{
		"urgent+other":         {{true}, {false}},
		"urgent+urgent":        {{true}, {true}},
		"other,urgent+urgent":  {{false, true}, {true}},
		"urgent,other+other":   {{true, false}, {false}},
		"urgent,urgent+other":  {{true, true}, {false}},
		"three":                {{true}, {false}, {true}},
		"three-other":          {{false}, {false}, {true}},
		"urgent,other+urgent,": {{true, false}, {true, true}},
	}
)

// The reader and the kernel never leave a record unread, or a gate
// closed, while the reader waits for a wakeup.
func TestWakeupModel(t *testing.T) {
	for name, scripts := range modelScripts {
		failed, states := checkWakeupModel(scripts, modelParams, legacyReader{})
		if failed != "" {
			t.Errorf("%s: %s", name, failed)
			continue
		}
		t.Logf("%s: %d states, no lost wakeup", name, states)
	}
}

// The model finds the lost wakeups of the reader before design 029: each
// of the two changes alone leaves one.
func TestWakeupModelFindsLegacyLoss(t *testing.T) {
	for _, legacy := range []legacyReader{
		{noInflight: true},
		{noRecheck: true},
		{noInflight: true, noRecheck: true},
	} {
		found := ""
		for _, scripts := range modelScripts {
			if failed, _ := checkWakeupModel(scripts, modelParams, legacy); failed != "" {
				found = failed
				break
			}
		}
		if found == "" {
			t.Errorf("legacy %+v: no lost wakeup found; the model cannot tell", legacy)
			continue
		}
		t.Logf("legacy %+v: %s", legacy, found)
	}
}
