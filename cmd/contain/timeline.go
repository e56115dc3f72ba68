package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/spf13/cobra"

	"github.com/containsec/contain/schemas/containv1"
	"github.com/containsec/contain/store"
)

func init() { extraCommands = append(extraCommands, timelineCommand) }

func timelineCommand(opts *globalOpts) *cobra.Command {
	var (
		around, format string
		window         time.Duration
	)
	cmd := &cobra.Command{
		Use:   "timeline CONTAINER",
		Short: "Print a container's timeline and process tree from ClickHouse",
		Long: `timeline reads one container's events, alerts and responder actions from
the store's ClickHouse database (store.addr, store.database) and prints its
process tree and a time-ordered timeline: what ran, what it opened,
connected to and changed, with alerts (!!) and actions (=>) in place.

CONTAINER is a container id, an id prefix of 8+ characters, or a name.
--around ALERT_ID centres the window on that alert; without it the window
ends at the container's last stored event. --window is the half-width
around an alert, or the whole width back from the last event.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if format != "text" && format != "json" {
				return fmt.Errorf("--format: %q is not text or json", format)
			}
			cfg, err := opts.load(cmd)
			if err != nil {
				return err
			}
			r, err := store.OpenReader(cfg.Store)
			if err != nil {
				return fmt.Errorf("timeline: %w", err)
			}
			defer r.Close()
			tl, err := buildTimeline(cmd.Context(), r, args[0], around, window)
			if err != nil {
				return fmt.Errorf("timeline: %w", err)
			}
			if format == "json" {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(tl)
			}
			return tl.writeText(cmd.OutOrStdout())
		},
	}
	cmd.Flags().StringVar(&around, "around", "", "centre the window on this alert id")
	cmd.Flags().DurationVar(&window, "window", 5*time.Minute, "half-width around --around, else width back from the last event")
	cmd.Flags().StringVar(&format, "format", "text", "text or json")
	return cmd
}

// timeline is what `contain timeline` prints.
type timeline struct {
	Container string            `json:"container"`
	From      time.Time         `json:"from"`
	To        time.Time         `json:"to"`
	Around    *store.AlertRow   `json:"around,omitempty"`
	Tree      []*procNode       `json:"process_tree"`
	Entries   []timelineEntry   `json:"entries"`
	Alerts    []store.AlertRow  `json:"alerts"`
	Actions   []store.ActionRow `json:"actions"`
}

// timelineEntry is one line of the timeline.
type timelineEntry struct {
	Time   time.Time `json:"time"`
	Kind   string    `json:"kind"` // an event kind, "alert" or "action"
	ID     string    `json:"id"`
	PID    uint32    `json:"pid,omitempty"`
	Comm   string    `json:"comm,omitempty"`
	Detail string    `json:"detail"`
}

// procNode is a process of the tree.
type procNode struct {
	PID      uint32      `json:"pid"`
	PPID     uint32      `json:"ppid"`
	Comm     string      `json:"comm"`
	Exec     string      `json:"exec,omitempty"` // the last exec: filename and argv
	Start    time.Time   `json:"first_seen"`
	Exit     *int32      `json:"exit_code,omitempty"`
	Alerts   int         `json:"alerts,omitempty"`
	Children []*procNode `json:"children,omitempty"`
}

func buildTimeline(ctx context.Context, r *store.Reader, container, around string, window time.Duration) (*timeline, error) {
	tl := &timeline{Container: container}
	sel := store.Selection{Container: container}
	if around != "" {
		id, err := uuid.Parse(around)
		if err != nil {
			return nil, fmt.Errorf("--around %q: %w", around, err)
		}
		as, err := r.Alerts(ctx, store.Selection{}, id)
		if err != nil {
			return nil, err
		}
		if len(as) == 0 {
			return nil, fmt.Errorf("no alert %s in the store", id)
		}
		tl.Around = &as[0]
		tl.From, tl.To = as[0].Time.Add(-window), as[0].Time.Add(window)
	} else {
		last, err := r.LastEvent(ctx, store.Selection{Container: container})
		if err != nil {
			return nil, err
		}
		if last.IsZero() {
			return nil, fmt.Errorf("no events of container %q in the store", container)
		}
		tl.From, tl.To = last.Add(-window), last.Add(time.Second)
	}
	sel.From, sel.To = tl.From.Truncate(time.Second), tl.To
	procs := map[uint32]*procNode{}
	node := func(pid, ppid uint32, comm string, at time.Time) *procNode {
		n := procs[pid]
		if n == nil {
			n = &procNode{PID: pid, PPID: ppid, Comm: comm, Start: at}
			procs[pid] = n
		}
		if comm != "" {
			n.Comm = comm
		}
		if n.PPID == 0 {
			n.PPID = ppid
		}
		return n
	}
	if err := r.Events(ctx, sel, func(ev *containv1.Event) error {
		at := time.Unix(0, ev.GetWallNs()).UTC()
		e := timelineEntry{Time: at, Kind: kindName(ev), ID: uuidText(ev.GetId()), Detail: eventDetail(ev)}
		if p := procOfEvent(ev); p != nil && p.GetTgid() != 0 {
			e.PID, e.Comm = p.GetTgid(), p.GetComm()
			n := node(p.GetTgid(), p.GetPpid(), p.GetComm(), at)
			if x := ev.GetExec(); x != nil {
				n.Exec = strings.TrimSpace(x.GetFilename() + " " + strings.Join(x.GetArgv(), " "))
			}
			if lc := ev.GetProcess(); lc != nil {
				switch lc.GetOp() {
				case containv1.ProcessLifecycle_OP_EXIT:
					code := lc.GetExitCode()
					n.Exit = &code
				default:
					if c := lc.GetChildTgid(); c != 0 {
						node(c, p.GetTgid(), p.GetComm(), at)
					}
				}
			}
		}
		tl.Entries = append(tl.Entries, e)
		return nil
	}); err != nil {
		return nil, err
	}
	var err error
	if tl.Alerts, err = r.Alerts(ctx, sel, uuid.Nil); err != nil {
		return nil, err
	}
	if tl.Actions, err = r.Actions(ctx, sel); err != nil {
		return nil, err
	}
	for _, a := range tl.Alerts {
		tl.Entries = append(tl.Entries, timelineEntry{Time: a.Time, Kind: "alert", ID: a.ID.String(), PID: a.TriggerPID, Comm: a.TriggerComm,
			Detail: fmt.Sprintf("%.2f %s %s: %s", a.Score, a.Priority, a.Rule, strings.Join(a.ReasonMessages, "; "))})
		if n := procs[a.TriggerPID]; n != nil {
			n.Alerts++
		}
	}
	for _, a := range tl.Actions {
		tl.Entries = append(tl.Entries, timelineEntry{Time: a.Time, Kind: "action", ID: a.ID.String(),
			Detail: strings.TrimSpace(fmt.Sprintf("%s %s by %s %s (alert %s)", a.Type, a.Result, a.Actor, a.Method, a.AlertID))})
	}
	slices.SortStableFunc(tl.Entries, func(a, b timelineEntry) int { return a.Time.Compare(b.Time) })
	tl.Tree = treeOf(procs)
	return tl, nil
}

// treeOf links processes to their parents; roots have no known parent.
func treeOf(procs map[uint32]*procNode) []*procNode {
	var roots []*procNode
	for _, n := range procs {
		if p := procs[n.PPID]; p != nil && p != n {
			p.Children = append(p.Children, n)
		} else {
			roots = append(roots, n)
		}
	}
	order := func(s []*procNode) {
		slices.SortFunc(s, func(a, b *procNode) int {
			if c := a.Start.Compare(b.Start); c != 0 {
				return c
			}
			return int(a.PID) - int(b.PID)
		})
	}
	for _, n := range procs {
		order(n.Children)
	}
	order(roots)
	return roots
}

func (tl *timeline) writeText(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "container %s, %s .. %s (UTC)\n", tl.Container, tl.From.UTC().Format(time.RFC3339), tl.To.UTC().Format(time.RFC3339))
	if a := tl.Around; a != nil {
		fmt.Fprintf(&b, "around alert %s at %s: %.2f %s %s\n", a.ID, a.Time.Format(time.RFC3339Nano), a.Score, a.Rule, strings.Join(a.ReasonCodes, ","))
	}
	b.WriteString("\nprocess tree\n")
	var walk func(n *procNode, prefix string, last bool)
	walk = func(n *procNode, prefix string, last bool) {
		branch, next := "├─ ", "│  "
		if last {
			branch, next = "└─ ", "   "
		}
		line := fmt.Sprintf("%d %s", n.PID, n.Comm)
		if n.Exec != "" {
			line += "  " + n.Exec
		}
		if n.Exit != nil {
			line += fmt.Sprintf("  [exit %d]", *n.Exit)
		}
		if n.Alerts > 0 {
			line += fmt.Sprintf("  !! %d alert(s)", n.Alerts)
		}
		fmt.Fprintf(&b, "%s%s%s\n", prefix, branch, line)
		for i, c := range n.Children {
			walk(c, prefix+next, i == len(n.Children)-1)
		}
	}
	for i, n := range tl.Tree {
		walk(n, "", i == len(tl.Tree)-1)
	}
	b.WriteString("\ntimeline\n")
	for _, e := range tl.Entries {
		mark := "  "
		switch e.Kind {
		case "alert":
			mark = "!!"
		case "action":
			mark = "=>"
		}
		who := ""
		if e.PID != 0 {
			who = fmt.Sprintf("%d/%s", e.PID, e.Comm)
		}
		fmt.Fprintf(&b, "%s %s %-9s %-20s %s\n", e.Time.Format("15:04:05.000000"), mark, e.Kind, who, e.Detail)
	}
	fmt.Fprintf(&b, "\n%d events, %d alerts, %d actions\n", len(tl.Entries)-len(tl.Alerts)-len(tl.Actions), len(tl.Alerts), len(tl.Actions))
	_, err := io.WriteString(w, b.String())
	return err
}

func kindName(ev *containv1.Event) string {
	return strings.ToLower(strings.TrimPrefix(ev.GetKind().String(), "KIND_"))
}

func uuidText(id []byte) string {
	if len(id) == 16 {
		return uuid.UUID(id).String()
	}
	return fmt.Sprintf("%x", id)
}

func procOfEvent(ev *containv1.Event) *containv1.Process {
	switch {
	case ev.GetExec() != nil:
		return ev.GetExec().GetProc()
	case ev.GetSyscall() != nil:
		return ev.GetSyscall().GetProc()
	case ev.GetNetwork() != nil:
		return ev.GetNetwork().GetProc()
	case ev.GetFile() != nil:
		return ev.GetFile().GetProc()
	case ev.GetProcess() != nil:
		return ev.GetProcess().GetProc()
	}
	return nil
}

func addrText(b []byte) string {
	if a, ok := netip.AddrFromSlice(b); ok {
		return a.Unmap().String()
	}
	return "?"
}

// eventDetail is a one-line summary of an event's body.
func eventDetail(ev *containv1.Event) string {
	switch {
	case ev.GetExec() != nil:
		x := ev.GetExec()
		s := strings.TrimSpace(x.GetFilename() + " " + strings.Join(x.GetArgv(), " "))
		if x.GetCwd() != "" {
			s += " (cwd " + x.GetCwd() + ")"
		}
		return s
	case ev.GetSyscall() != nil:
		s := ev.GetSyscall()
		return fmt.Sprintf("%s x%d ret %d", s.GetName(), max(s.GetCount(), 1), s.GetRet())
	case ev.GetNetwork() != nil:
		n := ev.GetNetwork()
		op := strings.ToLower(strings.TrimPrefix(n.GetOp().String(), "OP_"))
		proto := strings.ToLower(strings.TrimPrefix(n.GetProtocol().String(), "PROTOCOL_"))
		return fmt.Sprintf("%s %s %s:%d result %d", op, proto, addrText(n.GetRemoteAddr()), n.GetRemotePort(), n.GetResult())
	case ev.GetFile() != nil:
		f := ev.GetFile()
		s := strings.ToLower(strings.TrimPrefix(f.GetOp().String(), "OP_")) + " " + f.GetPath()
		if f.GetNewPath() != "" {
			s += " -> " + f.GetNewPath()
		}
		return fmt.Sprintf("%s result %d", s, f.GetResult())
	case ev.GetProcess() != nil:
		p := ev.GetProcess()
		op := strings.ToLower(strings.TrimPrefix(p.GetOp().String(), "OP_"))
		if p.GetOp() == containv1.ProcessLifecycle_OP_EXIT {
			return fmt.Sprintf("%s code %d", op, p.GetExitCode())
		}
		return fmt.Sprintf("%s child %d", op, p.GetChildTgid())
	case ev.GetLoss() != nil:
		l := ev.GetLoss()
		return fmt.Sprintf("lost %d (%s: %s)", l.GetCount(), l.GetSource(), l.GetReason())
	case ev.GetContainer() != nil:
		c := ev.GetContainer()
		return fmt.Sprintf("container %s runtime %s init %d", ev.GetContainerName(), c.GetRuntime(), c.GetInitPid())
	}
	return ""
}
