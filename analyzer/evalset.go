package analyzer

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"text/tabwriter"
)

// Trace is one trace and the file it came from.
type Trace struct {
	Name string
	Sys  []uint32
}

// TraceSet is what `contain eval` reads: training traces, held-out normal
// traces and attack traces by family.
type TraceSet struct {
	Train  [][]uint32
	Normal []Trace
	Attack map[string][]Trace
}

func unnamed(ts [][]uint32) []Trace {
	out := make([]Trace, len(ts))
	for i, t := range ts {
		out[i] = Trace{Sys: t}
	}
	return out
}

// readNamed reads every regular file of dir as a trace, in name order.
func readNamed(dir string) ([]Trace, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("reading traces: %w", err)
	}
	var out []Trace
	for _, e := range ents {
		if !e.Type().IsRegular() {
			continue
		}
		t, err := readTraceFile(filepath.Join(dir, e.Name()))
		if err != nil {
			return nil, err
		}
		out = append(out, Trace{Name: e.Name(), Sys: t})
	}
	return out, nil
}

// ReadTraceSet reads the three directories of `contain eval`; each
// subdirectory of attackDir is a family, files directly in it the family
// "attack".
func ReadTraceSet(trainDir, normalDir, attackDir string) (TraceSet, error) {
	var set TraceSet
	var err error
	if set.Train, err = ReadTraces(trainDir); err != nil {
		return set, err
	}
	if set.Normal, err = readNamed(normalDir); err != nil {
		return set, err
	}
	ents, err := os.ReadDir(attackDir)
	if err != nil {
		return set, fmt.Errorf("reading attack traces: %w", err)
	}
	set.Attack = map[string][]Trace{}
	for _, e := range ents {
		p := filepath.Join(attackDir, e.Name())
		switch {
		case e.IsDir():
			ts, err := readNamed(p)
			if err != nil {
				return set, err
			}
			set.Attack[e.Name()] = ts
		case e.Type().IsRegular():
			t, err := readTraceFile(p)
			if err != nil {
				return set, err
			}
			set.Attack["attack"] = append(set.Attack["attack"], Trace{Name: e.Name(), Sys: t})
		}
	}
	return set, nil
}

// RecordingResult is one recording's alarms at the 1% threshold.
type RecordingResult struct {
	// Set is "normal" or the attack family.
	Set  string `json:"set"`
	Name string `json:"name"`
	// Traces, Alarms (traces above the threshold) and Runs (alarms in a
	// row, in name order, counted once).
	Traces int `json:"traces"`
	Alarms int `json:"alarms"`
	Runs   int `json:"alarm_runs"`
}

// RecordingOf is the recording a trace file belongs to: its name without
// the extension and a trailing "-NNN" (httpd-0003.txt is of httpd).
func RecordingOf(name string) string {
	name = strings.TrimSuffix(name, filepath.Ext(name))
	if i := strings.LastIndexByte(name, '-'); i > 0 && strings.Trim(name[i+1:], "0123456789") == "" && i+1 < len(name) {
		return name[:i]
	}
	return name
}

// recordings counts alarms per recording; traces are in name order.
func recordings(set string, ts []Trace, scores []float64, threshold float64) []RecordingResult {
	var out []RecordingResult
	idx := map[string]int{}
	prev := map[string]bool{}
	for i, t := range ts {
		if t.Name == "" {
			continue
		}
		rec := RecordingOf(t.Name)
		j, ok := idx[rec]
		if !ok {
			j = len(out)
			idx[rec] = j
			out = append(out, RecordingResult{Set: set, Name: rec})
		}
		r := &out[j]
		r.Traces++
		alarm := scores[i] > threshold
		if alarm {
			r.Alarms++
			if !prev[rec] {
				r.Runs++
			}
		}
		prev[rec] = alarm
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// WriteRecordings prints the per-recording counts.
func (r *EvalResult) WriteRecordings(w io.Writer) error {
	if len(r.Recordings) == 0 {
		return nil
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SET\tRECORDING\tTRACES\tALARMS@1%\tALARM RUNS")
	for _, x := range r.Recordings {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\n", x.Set, x.Name, x.Traces, x.Alarms, x.Runs)
	}
	return tw.Flush()
}

// EvalCompare runs every model of EvalModels on set.
func EvalCompare(set TraceSet, cfg EvalConfig) ([]*EvalResult, error) {
	var out []*EvalResult
	for _, m := range EvalModels {
		c := cfg
		c.Model = m
		if m == ModelNGram && cfg.Model != ModelNGram {
			c.Window = 0 // the window's unit differs
		}
		r, err := EvalSet(set, c)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", m, err)
		}
		out = append(out, r)
	}
	return out, nil
}

// WriteCompare prints results side by side: per model, AUC, detection at
// 1% and 5%, and the alarm runs on normal recordings and the attack
// recordings with at least one alarm, at the 1% threshold.
func WriteCompare(w io.Writer, rs []*EvalResult) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "MODEL\tAUC\tDET@1%\tDET@5%\tNORMAL ALARM RUNS@1%\tATTACK RECORDINGS HIT@1%")
	for _, r := range rs {
		runs, hit, recs := 0, 0, 0
		for _, x := range r.Recordings {
			if x.Set == "normal" {
				runs += x.Runs
				continue
			}
			recs++
			if x.Alarms > 0 {
				hit++
			}
		}
		fmt.Fprintf(tw, "%s\t%.4f\t%.1f%%\t%.1f%%\t%d\t%d/%d\n", r.Model, r.AUC, 100*r.DetectedAt1, 100*r.DetectedAt5, runs, hit, recs)
	}
	return tw.Flush()
}
