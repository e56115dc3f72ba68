package freezer_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containsec/contain/internal/freezer"
	"github.com/containsec/contain/internal/testenv"
)

// TestV1FreezerCaughtInExec: the v1 freezer alone freezes a real
// container at once after its start, while runc init (a multi-threaded
// process) may still be exec'ing the container's process, and then 300
// times over a container that forks and execs without pause; each freeze
// within 1 s (the v1 freezer's share of the default verify_timeout when
// cgroup2 follows). Before the freezer thawed and froze again a cgroup
// stuck in FREEZING, the first freeze failed here every time (runc init
// in D state in begin_new_exec, waiting for its frozen threads: "not
// verified in time", the responder tests' flake under load).
func TestV1FreezerCaughtInExec(t *testing.T) {
	testenv.RequireRoot(t)
	if testenv.FreezerV1Root == "" {
		testenv.Unavailable(t, "the cgroup v1 freezer")
	}
	c := testenv.RunContainer(t, "v1exec", testenv.ContainerSpec{
		Args: []string{"/bin/sh", "-c", "while true; do /bin/true; done"},
	})
	tg := &freezer.Target{ID: c.ID, FreezerV1: filepath.Join(testenv.FreezerV1Root, c.ID)}
	ms, err := freezer.NewMethods([]string{freezer.MethodV1Freezer}, freezer.Roots{}, "")
	if err != nil {
		t.Fatal(err)
	}
	v1 := ms[0]
	var worst time.Duration
	for i := 0; i < 300; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		start := time.Now()
		err := v1.Freeze(ctx, tg)
		took := time.Since(start)
		if err == nil {
			err = v1.Thaw(ctx, tg)
		}
		cancel()
		if err != nil {
			t.Logf("freezer.state: %s", readTrim(filepath.Join(tg.FreezerV1, "freezer.state")))
			for _, p := range strings.Fields(readTrim(filepath.Join(tg.FreezerV1, "cgroup.procs"))) {
				t.Logf("pid %s: %s, wchan %s", p, readTrim("/proc/"+p+"/stat"), readTrim("/proc/"+p+"/wchan"))
			}
			t.Fatalf("freeze %d, after %v: %v", i, took, err)
		}
		worst = max(worst, took)
	}
	t.Logf("300 freezes, the slowest %v", worst)
}

func readTrim(path string) string {
	b, _ := os.ReadFile(path)
	return strings.TrimSpace(string(b))
}
