package collector

import (
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/containsec/contain/internal/metrics"
	"github.com/containsec/contain/internal/testenv"
	"github.com/containsec/contain/schemas/containv1"
)

// With wakeup coalescing (the default), a loop of execs wakes the reader
// a few times, not once per exec, loses none of them, and an exec after a
// quiet spell wakes it again at once (the gate reopened). Without it,
// every exec wakes the reader.
func TestIntegrationWakeupCoalescing(t *testing.T) {
	const execs = 1000
	for _, tc := range []struct {
		name     string
		coalesce time.Duration
	}{{"coalesce-20ms", 20 * time.Millisecond}, {"no-coalescing", 0}} {
		t.Run(tc.name, func(t *testing.T) {
			_, js, m := startCollector(t, func(c *Config) { c.WakeupCoalesce = tc.coalesce })
			raw := consumeRaw(t, js)
			ctr := testenv.RunContainer(t, "colgate"+strconv.Itoa(int(tc.coalesce.Milliseconds())), testenv.ContainerSpec{})
			kernel := func() float64 { return testutil.ToFloat64(m.ReaderWakeups.WithLabelValues("kernel")) }
			// The container's start is behind us.
			raw.waitFor(t, 10*time.Second, "the container's first event", func(evs []*containv1.Event) bool {
				return countEvents(evs, ctr.ID, func(*containv1.Event) bool { return true }) > 0
			})

			before := kernel()
			out, err := ctr.Exec(2*time.Minute, "/bin/sh", "-c", fmt.Sprintf(
				`i=0; while [ $i -lt %d ]; do cat /dev/null; i=$((i+1)); done; echo $i`, execs))
			if err != nil || strings.TrimSpace(out) != strconv.Itoa(execs) {
				t.Fatalf("runc exec: %v: %q", err, out)
			}
			evs := raw.waitFor(t, 20*time.Second, "every exec of the loop", func(evs []*containv1.Event) bool {
				return countEvents(evs, ctr.ID, isCatExec) >= execs
			})
			if got := countEvents(evs, ctr.ID, isCatExec); got != execs {
				t.Fatalf("exec events %d, loop counted %d", got, execs)
			}
			wakeups := kernel() - before
			t.Logf("%d execs: %.0f kernel wakeups of the reader, %.0f timer polls", execs, wakeups,
				testutil.ToFloat64(m.ReaderWakeups.WithLabelValues("timer")))
			if tc.coalesce > 0 && wakeups > execs/4 {
				t.Fatalf("%.0f kernel wakeups for %d execs with coalescing", wakeups, execs)
			}
			if tc.coalesce == 0 && wakeups < execs/2 {
				t.Fatalf("only %.0f kernel wakeups for %d execs without coalescing: the test cannot tell", wakeups, execs)
			}

			// Quiet, then one exec: the gate is open again, so it wakes the
			// reader (a kernel wakeup), and it is published. The gate is
			// the host's: execs in other containers keep it closed while
			// they come, so a few tries are allowed.
			woke := false
			for try := 1; try <= 5 && !woke; try++ {
				time.Sleep(50 * time.Millisecond)
				before = kernel()
				if out, err := ctr.Exec(15*time.Second, "/bin/sh", "-c", "cat /dev/null; true"); err != nil {
					t.Fatalf("runc exec: %v: %s", err, out)
				}
				raw.waitFor(t, 10*time.Second, "the exec after the quiet spell", func(evs []*containv1.Event) bool {
					return countEvents(evs, ctr.ID, isCatExec) == execs+try
				})
				woke = kernel() > before
			}
			if !woke {
				t.Fatal("an exec after a quiet spell never woke the reader")
			}
			if d := testutil.ToFloat64(m.Errors.WithLabelValues(metrics.StageCollector, "wake_gate")); d != 0 {
				t.Fatalf("%v wake_gate errors", d)
			}
		})
	}
}
