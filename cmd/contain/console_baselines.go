package main

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/containsec/contain/analyzer"
	"github.com/containsec/contain/console"
)

// maxChanges bounds the changes listed per baseline.
const maxChanges = 40

// describeBaseline fills what the image declares, what was learned beyond
// it, and what the newest version changed, from the baseline's history.
func describeBaseline(ctx context.Context, st *analyzer.Store, bl *console.Baseline) {
	docs, _, err := st.History(ctx, bl.Key)
	if err != nil || len(docs) == 0 {
		return
	}
	cur := docs[len(docs)-1]
	for i := len(docs) - 1; i >= 0; i-- {
		if docs[i].Op != "" {
			bl.LastOp = docs[i].Op + " by " + docs[i].OpActor
			break
		}
	}
	if p := cur.Profile; p != nil {
		var parts []string
		if len(p.Entrypoint) > 0 {
			parts = append(parts, "entrypoint "+strings.Join(p.Entrypoint, " "))
		}
		if p.Executables != nil {
			parts = append(parts, fmt.Sprintf("%d executables", len(p.Executables)))
		}
		if p.ListenPorts != nil {
			parts = append(parts, "ports ["+strings.Join(p.ListenPorts, " ")+"]")
		}
		if p.Peers != nil {
			parts = append(parts, "peers ["+strings.Join(p.Peers, " ")+"]")
		}
		if p.WritablePaths != nil {
			parts = append(parts, "writable ["+strings.Join(p.WritablePaths, " ")+"]")
		}
		bl.Declared = strings.Join(parts, "; ")
		if p.Executables != nil {
			for _, e := range sortedKeys(cur.Executables) {
				if !slices.Contains(p.Executables, e) {
					bl.Undeclared = append(bl.Undeclared, e)
				}
			}
		}
		if p.ListenPorts != nil {
			for _, port := range sortedKeys(cur.ListenPorts) {
				if !slices.Contains(p.ListenPorts, port) && !slices.Contains(p.ListenPorts, strings.TrimSuffix(port, "/tcp")) {
					bl.Undeclared = append(bl.Undeclared, "port "+port)
				}
			}
		}
	}
	if len(docs) < 2 {
		return
	}
	prev := docs[len(docs)-2]
	for _, set := range []struct {
		name      string
		old, next map[string]uint32
	}{
		{"exec", prev.Executables, cur.Executables},
		{"edge", prev.Edges, cur.Edges},
		{"syscall", prev.Syscalls, cur.Syscalls},
		{"peer", prev.Peers, cur.Peers},
		{"port", prev.ListenPorts, cur.ListenPorts},
		{"write", prev.WritePrefixes, cur.WritePrefixes},
		{"read", prev.SensitiveReads, cur.SensitiveReads},
		{"uid", prev.UIDs, cur.UIDs},
		{"behaviour", prev.Behaviours, cur.Behaviours},
	} {
		for _, k := range sortedKeys(set.next) {
			if _, ok := set.old[k]; !ok && len(bl.Changes) < maxChanges {
				bl.Changes = append(bl.Changes, "+"+set.name+" "+k)
			}
		}
		for _, k := range sortedKeys(set.old) {
			if _, ok := set.next[k]; !ok && len(bl.Changes) < maxChanges {
				bl.Changes = append(bl.Changes, "-"+set.name+" "+k)
			}
		}
	}
	if cur.Phase != prev.Phase {
		bl.Changes = append(bl.Changes, "phase "+prev.Phase+" → "+cur.Phase)
	}
}

func sortedKeys(m map[string]uint32) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
