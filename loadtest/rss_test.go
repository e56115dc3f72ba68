package loadtest_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/containsec/contain/internal/testenv"
)

// rssBoundMB is contain run's default memory.limit_mb.
const rssBoundMB = 256

// TestRSSUnderBound runs the load-test command (built without the race
// detector, whatever this test runs with, so its RSS is the real one) at
// 10,000 events/s and asserts that its peak RSS (VmHWM of the one process
// that holds the embedded NATS, every stage and the generator) stays under
// contain run's default bound of 256 MiB, with that bound applied as
// contain run applies memory.limit_mb. The CI run publishes 100,000
// events; CONTAIN_TEST_RSS_EVENTS=2000000 makes it the 2M-event run of
// issue 12 (~4 minutes; docs/benchmarks.md, "Bounded memory").
func TestRSSUnderBound(t *testing.T) {
	chAddr := testenv.ClickHouseAddr(t)
	events := int64(100_000)
	if v := os.Getenv("CONTAIN_TEST_RSS_EVENTS"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n <= 0 {
			t.Fatalf("CONTAIN_TEST_RSS_EVENTS=%q: want a positive count", v)
		}
		events = n
	}
	const rate = 10_000
	bin := filepath.Join(t.TempDir(), "loadtest")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/containsec/contain/loadtest/cmd/loadtest").CombinedOutput(); err != nil {
		t.Fatalf("building the load test: %v\n%s", err, out)
	}
	dur := time.Duration(events/rate)*time.Second + time.Minute
	// Publishing, then up to 2 min of drain, 3 x 2 min of counting on a
	// busy server and the database drop.
	ctx, cancel := context.WithTimeout(context.Background(), dur+15*time.Minute)
	defer cancel()
	trace := filepath.Join(t.TempDir(), "memtrace")
	cmd := exec.CommandContext(ctx, bin, "--clickhouse", chAddr, "--rate", strconv.Itoa(rate), "--memtrace", trace,
		"--events", strconv.FormatInt(events, 10), "--duration", dur.String(),
		"--memory-limit-mb", strconv.Itoa(rssBoundMB), "--max-rss-mb", strconv.Itoa(rssBoundMB),
		"--database", "contain_rss_"+strconv.FormatInt(time.Now().UnixNano(), 10))
	out, err := cmd.CombinedOutput()
	summary := regexp.MustCompile(`(?m)^(published|memory|max_rss_mb|RESULT).*$`).FindAllString(string(out), -1)
	t.Logf("%d events at %d/s:\n%s", events, rate, strings.Join(summary, "\n"))
	logTracePeak(t, trace)
	m := regexp.MustCompile(`(?m)^max_rss_mb=(\d+) `).FindStringSubmatch(string(out))
	if m == nil {
		t.Fatalf("no max_rss_mb line (exit %v):\n%s", err, out)
	}
	if rss, _ := strconv.Atoi(m[1]); rss >= rssBoundMB {
		t.Errorf("peak RSS %d MiB, bound %d MiB", rss, rssBoundMB)
	}
	if err != nil {
		t.Errorf("load test failed (%v):\n%s", err, out)
	}
}

// logTracePeak logs the header of the load test's --memtrace and the
// second its RSS peaked (VmHWM reached its final value) and the second
// of its largest live heap: was the peak live heap, or memory the runtime
// held beyond it?
func logTracePeak(t *testing.T, path string) {
	b, err := os.ReadFile(path)
	if err != nil {
		t.Logf("no memory trace: %v", err)
		return
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) < 2 {
		return
	}
	field := func(line string, i int) int {
		f := strings.Fields(line)
		if i >= len(f) {
			return 0
		}
		n, _ := strconv.Atoi(f[i])
		return n
	}
	const hwmCol, liveCol = 2, 3
	peak, live := lines[1], lines[1]
	for _, l := range lines[1:] {
		if field(l, hwmCol) > field(peak, hwmCol) {
			peak = l
		}
		if field(l, liveCol) > field(live, liveCol) {
			live = l
		}
	}
	t.Logf("memory trace (--memtrace):\n%s\nRSS peak:  %s\nlive peak: %s", lines[0], peak, live)
}
