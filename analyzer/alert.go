package analyzer

import (
	"crypto/sha256"
	"math"
	"sort"
	"strconv"

	"google.golang.org/protobuf/proto"

	"github.com/containsec/contain/schemas/containv1"
)

// rarity lowers the weight of a deviation the image already showed after
// convergence (in any of its containers): 1 the first time, towards 0.5.
func rarity(sightings uint32) float64 {
	return 0.5 + 0.5/(1+float64(sightings)/10)
}

// noveltyCodes are the anomalies: deviations from the baseline, whose
// weight falls as the image keeps showing them (rarity). A behaviour is
// named by what it did and keeps its class's score however often the
// image's containers show it: a credential read in the tenth replica
// attacked the same way must still pause.
var noveltyCodes = map[string]bool{
	CodeExecUnseen: true, CodeExecArgv: true, CodeExecEdge: true, CodeUIDUnseen: true, CodeUIDRoot: true,
	CodeExecUndeclaredUID: true, CodeSyscallUnseen: true, CodeSyscallRoutine: true, CodeSyscallSensitive: true,
	CodeSyscallSequence: true, CodePeerUnseen: true, CodePeerNewAddress: true, CodePeerUndeclared: true,
	CodeListenNew: true, CodeListenUndeclared: true, CodeWriteUnseen: true, CodeWriteUndeclared: true,
	CodeCommitUnallowed: true, CodeWriteReadonly: true,
}

// raise turns the deviations one event showed (e.devs) into at most one
// alert: it scores them, lets a converged baseline absorb what scores
// below AbsorbBelow, drops what scores below MinAlertScore or falls in its
// group's window, and combines the reasons of one process tree.
func (e *Engine) raise(c *container, b *Baseline, ev *containv1.Event) []*containv1.Event {
	if e.seenBefore(ev.Id) {
		e.stats.Duplicates++
		return nil
	}
	e.stats.Deviations++
	reasons, score, top := e.scoreDeviations(b)
	if b.Phase == PhaseConverged {
		e.absorbDeviations(b, score)
	}
	if score < e.cfg.MinAlertScore {
		e.stats.BelowMin++
		return nil
	}
	combined, why := e.combine(c, ev, reasons)
	count, ok := e.ungrouped(c, ev.WallNs)
	if !ok {
		e.stats.Grouped++
		return nil
	}
	sort.SliceStable(reasons, func(i, j int) bool { return reasons[i].Score > reasons[j].Score })
	if combined > score {
		// Last: the reasons before it say what happened.
		score = combined
		reasons = append(reasons, &containv1.Reason{Code: CodeIncidentCombine, Message: why, Score: combined})
		e.stats.Combined++
	}
	e.stats.Alerts++
	id := AlertID(ev.Id)
	c.noteIncident(id, ev.WallNs, int64(e.cfg.IncidentWindow))
	return []*containv1.Event{alertEvent(ev, id, &containv1.Alert{
		IncidentId:      c.incident,
		Score:           score,
		Reasons:         reasons,
		Rule:            classes[e.devs[top].code].rule,
		Priority:        Priority(score),
		BaselineVersion: strconv.FormatUint(b.Version, 10),
		EvidenceIds:     [][]byte{ev.Id},
		Count:           count,
		Trigger:         proto.Clone(ev).(*containv1.Event),
		Pod:             c.pod,
		Namespace:       c.namespace,
		Labels:          c.labels,
	})}
}

// scoreDeviations scores each deviation of e.devs (its class's score,
// lowered by rarity once the baseline has converged, counting the
// sighting) and returns the reasons, their noisy-OR and the index of the
// top one.
func (e *Engine) scoreDeviations(b *Baseline) (reasons []*containv1.Reason, score float64, top int) {
	reasons = make([]*containv1.Reason, 0, len(e.devs))
	miss := 1.0
	topScore := -1.0
	for i, d := range e.devs {
		cl := classes[d.code]
		sev := e.scores[d.code]
		r := 1.0
		if b.Phase != PhaseLearning && noveltyCodes[d.code] {
			sk := d.code + "\x00" + d.subject
			r = rarity(b.sightings[sk])
			if len(b.sightings) < 4*e.cfg.MaxItems {
				b.sightings[sk]++
			}
		}
		s := sev * r
		miss *= 1 - s
		mitre := cl.mitre
		if len(d.mitre) > 0 {
			mitre = d.mitre
		}
		reasons = append(reasons, &containv1.Reason{Code: d.code, Message: d.msg, Score: round3(s), Mitre: mitre})
		if s > topScore {
			top, topScore = i, s
		}
	}
	return reasons, round3(1 - miss), top
}

// absorbDeviations learns, into a converged baseline, the deviations that
// can be absorbed when the event scores below AbsorbBelow.
func (e *Engine) absorbDeviations(b *Baseline, score float64) {
	for _, d := range e.devs {
		if d.absorb != nil && score < e.cfg.AbsorbBelow {
			d.absorb()
			b.Version++
			b.dirty = true
			e.stats.Absorbed++
		}
	}
}

// ungrouped reports whether the deviations (e.devs) may raise an alert
// at wallNs: not when every one's (code, subject) group raised one less
// than GroupWindow ago; the primary's (e.devs[0]) group then counts it. A
// deviation new to the window raises the alert whatever the others: a
// bulk deletion by a process whose unseen executable alerted a moment
// before is not hidden in that executable's group. count is the alerts
// it stands for (itself and those grouped since the primary's last).
func (e *Engine) ungrouped(c *container, wallNs int64) (count uint64, ok bool) {
	win := int64(e.cfg.GroupWindow)
	live := func(g *group) bool {
		if g == nil || win <= 0 {
			return false
		}
		d := wallNs - g.start
		if d < 0 {
			d = -d
		}
		return d < win
	}
	fresh := false
	for _, d := range e.devs {
		if !live(c.groups[d.code+"\x00"+d.subject]) {
			fresh = true
			break
		}
	}
	primary := e.devs[0].code + "\x00" + e.devs[0].subject
	if !fresh {
		c.groups[primary].suppressed++
		return 0, false
	}
	count = 1
	if len(c.groups)+len(e.devs) > 1024 {
		clear(c.groups)
	}
	for i, d := range e.devs {
		gk := d.code + "\x00" + d.subject
		g := c.groups[gk]
		switch {
		case g == nil:
			if c.groups == nil {
				c.groups = map[string]*group{}
			}
			c.groups[gk] = &group{start: wallNs}
		case !live(g):
			if i == 0 {
				count += g.suppressed
			}
			g.start, g.suppressed = wallNs, 0
		}
	}
	return count, true
}

// noteIncident starts a new incident with the alert id when the
// container's last alert is window or more away (or there is none, or
// window is 0), and moves the incident's time on.
func (c *container) noteIncident(id []byte, wallNs, window int64) {
	gap := wallNs - c.incidentNs
	if gap < 0 {
		gap = -gap
	}
	if c.incident == nil || window <= 0 || gap >= window {
		c.incident = id
	}
	c.incidentNs = max(c.incidentNs, wallNs)
}

// alertEvent wraps an alert raised by trigger in its event: the trigger's
// container, image and times.
func alertEvent(trigger *containv1.Event, id []byte, alert *containv1.Alert) *containv1.Event {
	return &containv1.Event{
		Id:            id,
		Host:          trigger.Host,
		ContainerId:   trigger.ContainerId,
		ContainerName: trigger.ContainerName,
		ImageRef:      trigger.ImageRef,
		ImageDigest:   trigger.ImageDigest,
		MonoNs:        trigger.MonoNs,
		WallNs:        trigger.WallNs,
		Kind:          containv1.Kind_KIND_ALERT,
		SchemaVersion: containv1.SchemaVersion,
		CgroupId:      trigger.CgroupId,
		ProfileRef:    trigger.ProfileRef,
		Body:          &containv1.Event_Alert{Alert: alert},
	}
}

func round3(x float64) float64 { return math.Round(x*1000) / 1000 }

// AlertID derives an alert's id from its trigger's id, so that a replay
// raises alerts with the same ids (and JetStream can de-duplicate them).
func AlertID(trigger []byte) []byte {
	h := sha256.Sum256(append([]byte("contain.alert\x00"), trigger...))
	id := h[:16]
	id[6] = (id[6] & 0x0f) | 0x80
	id[8] = (id[8] & 0x3f) | 0x80
	return id
}
