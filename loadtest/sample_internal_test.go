package loadtest

import (
	"testing"

	"github.com/containsec/contain/internal/testenv"
)

// The ClickHouse server of the run is found by its listening port, so
// that only its CPU counts.
func TestListeningPIDs(t *testing.T) {
	addr := testenv.ClickHouseAddr(t)
	pids := listeningPIDs([]string{addr})
	if len(pids) != 1 {
		testenv.Unavailable(t, "no single clickhouse-server process found listening on "+addr+" (not local, or /proc not readable)")
	}
	if all, one := clickhouseCPU(nil), clickhouseCPU(pids); one <= 0 || one > all {
		t.Errorf("cpu of the server on %s: %v, of every clickhouse-server: %v", addr, one, all)
	}
	if got := listeningPIDs([]string{"127.0.0.1:1"}); len(got) != 0 {
		t.Errorf("pids listening on port 1: %v, want none", got)
	}
}
