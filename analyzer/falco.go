package analyzer

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/containsec/contain/schemas/containv1"
)

// FalcoAlert is an alert in Falco's JSON output format (json_output:
// true), so that tools consuming Falco alerts (falcosidekick, SIEM
// pipelines) consume contain's.
type FalcoAlert struct {
	Hostname     string         `json:"hostname"`
	Output       string         `json:"output"`
	Priority     string         `json:"priority"`
	Rule         string         `json:"rule"`
	Source       string         `json:"source"`
	Tags         []string       `json:"tags"`
	Time         string         `json:"time"`
	OutputFields map[string]any `json:"output_fields"`
}

// ToFalco converts a KIND_ALERT event to Falco's format.
func ToFalco(ev *containv1.Event) (*FalcoAlert, error) {
	a := ev.GetAlert()
	if ev.Kind != containv1.Kind_KIND_ALERT || a == nil {
		return nil, errors.New("falco: not an alert event")
	}
	t := time.Unix(0, ev.WallNs).UTC()
	f := map[string]any{
		"evt.time":                   ev.WallNs,
		"container.id":               ev.ContainerId,
		"container.name":             ev.ContainerName,
		"container.image":            ev.ImageRef,
		"container.image.repository": imageRepository(ev.ImageRef),
		"container.image.digest":     ev.ImageDigest,
		"contain.score":              a.Score,
		"contain.baseline_version":   a.BaselineVersion,
		"contain.count":              a.Count,
		"contain.alert_id":           containv1.FormatID(ev.Id),
	}
	var codes []string
	tags := []string{"container", "contain"}
	seen := map[string]bool{}
	var msgs []string
	for _, r := range a.Reasons {
		codes = append(codes, r.Code)
		msgs = append(msgs, r.Message)
		for _, m := range r.Mitre {
			if !seen[m] {
				seen[m] = true
				tags = append(tags, "mitre_"+m)
			}
		}
	}
	f["contain.reasons"] = codes
	var proc *containv1.Process
	if tr := a.Trigger; tr != nil {
		f["evt.type"] = strings.ToLower(strings.TrimPrefix(tr.Kind.String(), "KIND_"))
		switch b := tr.Body.(type) {
		case *containv1.Event_Exec:
			proc = b.Exec.Proc
			f["proc.exepath"] = b.Exec.Filename
			f["proc.cmdline"] = strings.Join(b.Exec.Argv, " ")
			f["proc.cwd"] = b.Exec.Cwd
		case *containv1.Event_Syscall:
			proc = b.Syscall.Proc
			f["evt.type"] = b.Syscall.Name
		case *containv1.Event_Network:
			proc = b.Network.Proc
			if ap, ok := peerAddr(b.Network.RemoteAddr); ok {
				f["fd.sip"] = ap.String()
				f["fd.sport"] = b.Network.RemotePort
			}
			if ap, ok := peerAddr(b.Network.LocalAddr); ok {
				f["fd.cip"] = ap.String()
			}
			f["fd.lport"] = b.Network.LocalPort
			f["fd.l4proto"] = strings.ToLower(strings.TrimPrefix(b.Network.Protocol.String(), "PROTOCOL_"))
		case *containv1.Event_File:
			proc = b.File.Proc
			f["fd.name"] = b.File.Path
		}
	}
	if proc != nil {
		f["proc.pid"] = proc.Tgid
		f["proc.ppid"] = proc.Ppid
		f["proc.name"] = proc.Comm
		f["user.uid"] = proc.Uid
	}
	out := fmt.Sprintf("%s: %s: %s (container_id=%s container_name=%s image=%s score=%.2f)",
		t.Format("15:04:05.000000000"), a.Priority, strings.Join(msgs, "; "), ev.ContainerId, ev.ContainerName, ev.ImageRef, a.Score)
	return &FalcoAlert{
		Hostname: ev.Host, Output: out, Priority: a.Priority, Rule: a.Rule, Source: "syscall",
		Tags: tags, Time: t.Format(time.RFC3339Nano), OutputFields: f,
	}, nil
}

// FalcoJSON renders an alert event as one line of Falco JSON.
func FalcoJSON(ev *containv1.Event) ([]byte, error) {
	f, err := ToFalco(ev)
	if err != nil {
		return nil, err
	}
	return json.Marshal(f)
}

func imageRepository(ref string) string {
	if i := strings.IndexByte(ref, '@'); i >= 0 {
		ref = ref[:i]
	}
	if i := strings.LastIndexByte(ref, ':'); i > strings.LastIndexByte(ref, '/') {
		ref = ref[:i]
	}
	return ref
}
