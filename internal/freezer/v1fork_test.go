package freezer_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/containsec/contain/internal/freezer"
	"github.com/containsec/contain/internal/testenv"
)

// TestV1FreezerCaughtInExec: the v1 freezer alone freezes a real
// container at once after its start, while runc init (a multi-threaded
// process) may still be exec'ing the container's process, and then 300
// times over a container that forks and execs without pause while runc
// exec runs in it again and again; each freeze within 1 s (the v1 freezer's share of the default verify_timeout when
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
	// runc exec in a loop: its runc init (multi-threaded) joins the
	// container and execs, so freezes keep landing in an exec.
	stop := make(chan struct{})
	var execs atomic.Int64
	go func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := c.Exec(10*time.Second, "/bin/true"); err == nil {
				execs.Add(1)
			}
		}
	}()
	defer close(stop)
	var worst time.Duration
	var stuck, i int
	// At least 300 freezes and 20 runc exec, within 20 s.
	for end := time.Now().Add(20 * time.Second); i < 300 || (execs.Load() < 20 && time.Now().Before(end)); i++ {
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
		if took >= 50*time.Millisecond {
			stuck++ // FREEZING past the first thaw-and-refreeze
		}
	}
	t.Logf("%d freezes, %d stuck in FREEZING for 50 ms or more, the slowest %v; %d runc exec meanwhile", i, stuck, worst, execs.Load())
}

func readTrim(path string) string {
	b, _ := os.ReadFile(path)
	return strings.TrimSpace(string(b))
}
