package loadtest

import (
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/containsec/contain/internal/metrics"
)

// Result is what one run measured.
type Result struct {
	Config   Config
	Database string
	Gen      GeneratorStats

	// Samples are taken every SampleEvery from the start of the
	// generator; Samples[GenEndSample] is taken when it stopped.
	Samples      []Sample
	GenEndSample int

	// Drain is the time from the generator's end until every consumer had
	// nothing pending (DrainTimedOut: it did not within DrainTimeout).
	Drain         time.Duration
	DrainTimedOut bool

	StageIn, StageOut map[string]float64
	// Dropped, Malformed and Errors are the non-zero series of
	// contain_dropped_total, contain_malformed_messages_total and
	// contain_errors_total, keyed by their joined labels.
	// The store's duplicate skips (contain_dropped_total{reason=
	// "duplicate"}: redelivered rows it already held) are no loss: they
	// are in SkippedDuplicates, not Dropped.
	Dropped, Malformed, Errors map[string]float64
	SkippedDuplicates          float64

	// Rows and RowsDistinct count the events table: count() and
	// uniqExact(event_id). AlertRows counts the alerts table.
	Rows, RowsDistinct, AlertRows uint64

	// ProbeLag: probe event wall time → its row seen in ClickHouse.
	// ProbesLost: probes never seen.
	ProbeLag   LagSummary
	ProbesLost int
	// AlertLag: trigger wall time → alert received on
	// contain.v1.alerts.>; ActionLag: → the responder's action received.
	AlertLag, ActionLag LagSummary
	Alerts, Actions     int64
	ActionResults       map[string]int64
	BadMessages         int64
	StageErrors         []error

	// CHBefore and CHAfter are ClickHouse's server-wide InsertQuery,
	// InsertedRows and MergedRows counters around the run.
	CHBefore, CHAfter map[string]uint64

	Before, GenEnd, End   Usage
	LoadBefore, LoadAfter string
	// CHDataFS names the file system of the ClickHouse server's data when
	// it inflates the server's CPU per event (ext4 without a journal,
	// loadtest/chfs.go); empty otherwise or when it cannot tell.
	CHDataFS string
}

// Check returns why the run lost or dropped anything, or nil.
func (r *Result) Check() error {
	var errs []error
	if r.Gen.Failed > 0 {
		errs = append(errs, fmt.Errorf("%d events failed to publish", r.Gen.Failed))
	}
	if r.RowsDistinct != uint64(r.Gen.Events) {
		errs = append(errs, fmt.Errorf("lost: %d events published, %d distinct rows in %s.events", r.Gen.Events, r.RowsDistinct, r.Database))
	}
	if r.DrainTimedOut {
		errs = append(errs, fmt.Errorf("consumers still had messages pending %v after the generator stopped", r.Config.DrainTimeout))
	}
	for k, v := range r.Dropped {
		errs = append(errs, fmt.Errorf("dropped %v (%s)", v, k))
	}
	for k, v := range r.Malformed {
		errs = append(errs, fmt.Errorf("malformed %v (%s)", v, k))
	}
	if r.Config.MaxRSS > 0 && r.End.PeakRSS > r.Config.MaxRSS {
		errs = append(errs, fmt.Errorf("peak RSS %d MiB over the bound %d MiB", r.End.PeakRSS>>20, r.Config.MaxRSS>>20))
	}
	if r.ProbesLost > 0 {
		errs = append(errs, fmt.Errorf("%d probe events never seen in ClickHouse", r.ProbesLost))
	}
	errs = append(errs, r.StageErrors...)
	return errors.Join(errs...)
}

// genWindow is the generator's run time as sampled.
func (r *Result) genWindow() time.Duration { return r.Gen.Elapsed }

// rate is a stage's events/s over the generator's run, and its peak over
// one sample interval.
func (r *Result) rate(in bool, stage string) (avg, peak float64) {
	if len(r.Samples) < 2 || r.GenEndSample < 1 {
		return 0, 0
	}
	get := func(s Sample) float64 {
		if in {
			return s.In[stage]
		}
		return s.Out[stage]
	}
	first, end := r.Samples[0], r.Samples[r.GenEndSample]
	if d := end.At.Sub(first.At).Seconds(); d > 0 {
		avg = (get(end) - get(first)) / d
	}
	for i := 1; i < len(r.Samples); i++ {
		d := r.Samples[i].At.Sub(r.Samples[i-1].At).Seconds()
		if d > 0.2 {
			peak = max(peak, (get(r.Samples[i])-get(r.Samples[i-1]))/d)
		}
	}
	return avg, peak
}

func (r *Result) maxPending() map[string]uint64 {
	out := map[string]uint64{}
	for _, s := range r.Samples {
		for k, v := range s.Pending {
			out[k] = max(out[k], v)
		}
	}
	return out
}

// Print writes the summary table.
func (r *Result) Print(w io.Writer) {
	g := r.Config.Generator
	target := "as fast as possible"
	if g.Rate > 0 {
		target = fmt.Sprintf("%.0f ev/s", g.Rate)
	}
	el := r.Gen.Elapsed.Seconds()
	fmt.Fprintf(w, "contain load test: %d hosts × %d containers, %d images, target %s, database %s\n",
		g.Hosts, g.ContainersPerHost, g.Images, target, r.Database)
	fmt.Fprintf(w, "published: %d events in %d batches (%.1f MB) over %.1fs = %.0f ev/s (%d container, %d deviations); drain %v%s\n",
		r.Gen.Events, r.Gen.Batches, float64(r.Gen.Bytes)/1e6, el, float64(r.Gen.Events)/el,
		r.Gen.Containers, r.Gen.Deviations, r.Drain.Round(time.Millisecond), map[bool]string{true: " (TIMED OUT)"}[r.DrainTimedOut])

	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "stage\tevents in\tevents out\tin/s (run avg)\tin/s (peak 1s)\t")
	for _, s := range []string{metrics.StageEnricher, metrics.StageAnalyzer, metrics.StageStore, metrics.StageResponder} {
		avg, peak := r.rate(true, s)
		fmt.Fprintf(tw, "%s\t%.0f\t%.0f\t%.0f\t%.0f\t\n", s, r.StageIn[s], r.StageOut[s], avg, peak)
	}
	tw.Flush()
	fmt.Fprintln(w, "(store counts events + alerts + actions rows; analyzer out = alerts; responder out = actions)")

	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "lag\tn\tp50\tp90\tp99\tmax\t")
	for _, l := range []struct {
		name string
		s    LagSummary
	}{{"event → ClickHouse row", r.ProbeLag}, {"event → alert", r.AlertLag}, {"event → action (dry run)", r.ActionLag}} {
		fmt.Fprintf(tw, "%s\t%d\t%v\t%v\t%v\t%v\t\n", l.name, l.s.N, rd(l.s.P50), rd(l.s.P90), rd(l.s.P99), rd(l.s.Max))
	}
	tw.Flush()
	fmt.Fprintf(w, "(row lag resolution: the %v probe poll; n = probes, 1 per host per %v)\n", r.Config.ProbePoll, r.Config.Generator.ProbeEvery)

	pend := r.maxPending()
	keys := make([]string, 0, len(pend))
	for k := range pend {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s %d", k, pend[k]))
	}
	fmt.Fprintf(w, "max consumer pending (msgs, pending+ack pending): %s\n", strings.Join(parts, ", "))

	cpu := r.End.CPU - r.Before.CPU
	ch := r.End.ClickHouseCPU - r.Before.ClickHouseCPU
	wall := r.End.At.Sub(r.Before.At)
	busy := r.End.MachineBusy - r.Before.MachineBusy
	total := r.End.MachineTotal - r.Before.MachineTotal
	others := busy - cpu - ch
	pct := func(d time.Duration) float64 { return 100 * d.Seconds() / wall.Seconds() }
	fmt.Fprintf(w, "cpu over %.1fs (generator start → drained), %% of one core: contain+nats+generator %.0f%%, clickhouse %.0f%%, rest of machine %.0f%%; machine busy %.0f%% of %.0f cores\n",
		wall.Seconds(), pct(cpu), pct(ch), pct(max(others, 0)), 100*busy.Seconds()/max(total.Seconds(), 1e-9), total.Seconds()/wall.Seconds())
	if r.Gen.Events > 0 {
		fmt.Fprintf(w, "cpu per event: %.1f µs in this process, %.1f µs in clickhouse\n",
			float64(cpu.Microseconds())/float64(r.Gen.Events), float64(ch.Microseconds())/float64(r.Gen.Events))
	}
	if r.CHDataFS != "" {
		fmt.Fprintln(w, dataFSNote(r.CHDataFS))
	}
	var heap, heapSys uint64
	for _, s := range r.Samples {
		heap, heapSys = max(heap, s.HeapInuse), max(heapSys, s.HeapSys)
	}
	fmt.Fprintf(w, "memory: peak heap in use %.0f MB, heap sys %.0f MB, peak RSS %.0f MB; load avg before %s, after %s\n",
		float64(heap)/1e6, float64(heapSys)/1e6, float64(r.End.PeakRSS)/1e6, r.LoadBefore, r.LoadAfter)
	fmt.Fprintf(w, "max_rss_mb=%d bound_mb=%d\n", r.End.PeakRSS>>20, r.Config.MaxRSS>>20)
	fmt.Fprintf(w, "clickhouse: %d distinct event ids, %d rows (%d duplicates from redelivery; %.0f redelivered rows skipped by the store), %d alert rows\n",
		r.RowsDistinct, r.Rows, r.Rows-min(r.Rows, r.RowsDistinct), r.SkippedDuplicates, r.AlertRows)
	d := func(k string) uint64 { return r.CHAfter[k] - min(r.CHAfter[k], r.CHBefore[k]) }
	if n := d("InsertQuery"); n > 0 {
		fmt.Fprintf(w, "clickhouse server (all clients): %d INSERTs (%.0f/s, %.0f rows each), %d rows merged (%.1f× inserted)\n",
			n, float64(n)/wall.Seconds(), float64(d("InsertedRows"))/float64(n), d("MergedRows"), float64(d("MergedRows"))/max(float64(d("InsertedRows")), 1))
	}
	fmt.Fprintf(w, "alerts: %d received for %d deviations injected; actions %d %v\n", r.Alerts, r.Gen.Deviations, r.Actions, r.ActionResults)
	fmt.Fprintf(w, "dropped: %v  malformed: %v  errors: %v\n", orNone(r.Dropped), orNone(r.Malformed), orNone(r.Errors))
	if err := r.Check(); err != nil {
		fmt.Fprintf(w, "RESULT: FAIL\n%v\n", err)
	} else {
		fmt.Fprintf(w, "RESULT: OK (published %d == distinct rows %d, nothing dropped)\n", r.Gen.Events, r.RowsDistinct)
	}
}

func rd(d time.Duration) time.Duration {
	switch {
	case d > time.Second:
		return d.Round(10 * time.Millisecond)
	case d > time.Millisecond:
		return d.Round(100 * time.Microsecond)
	}
	return d.Round(time.Microsecond)
}

func orNone(m map[string]float64) any {
	if len(m) == 0 {
		return "none"
	}
	return m
}
