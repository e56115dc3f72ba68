package testenv

import (
	"context"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/containsec/contain/internal/cgroups"
)

// UnifiedEnv is set (to "1") in the environment of a test binary that
// RunUnified started inside its cgroup2-only mount namespace.
const UnifiedEnv = "CONTAIN_TEST_UNIFIED_CHILD"

// InUnified reports whether this test binary is RunUnified's child.
func InUnified() bool { return os.Getenv(UnifiedEnv) == "1" }

// unifiedScript runs in the new mount namespace: cgroup2 mounted over
// /sys/fs/cgroup hides a hybrid host's v1 hierarchies, as on a host that
// mounts only cgroup2 there (runc and crun then see unified mode).
const unifiedScript = `mount -t cgroup2 cgroup2 /sys/fs/cgroup && exec "$@"`

// RunUnified runs test t in a cgroup2-only layout. Called from the test
// binary started by `go test`, it re-executes that binary for t alone in a
// new private mount namespace (`unshare --mount --propagation private`)
// with cgroup2 mounted on /sys/fs/cgroup, reports the child's output in
// t's log, fails t when the child fails (skips when it skipped) and
// returns false: the caller returns. Called in that child it checks that
// the layout is unified and returns true: the caller runs the test body.
// The namespace ends with the child; the test body must remove what it
// started (containers, frozen cgroups) as any test does.
func RunUnified(t *testing.T) bool {
	t.Helper()
	if InUnified() {
		if Layout.Mode != cgroups.Unified || Cgroup2Root != "/sys/fs/cgroup" {
			t.Fatalf("RunUnified child: layout %v (error %v), want unified at /sys/fs/cgroup", Layout, layoutErr)
		}
		return true
	}
	if strings.Contains(t.Name(), "/") {
		t.Fatalf("RunUnified: %s is a subtest; call it from a top-level test", t.Name())
	}
	RequireRoot(t)
	unshare := RequireCommand(t, "unshare")
	RequireCommand(t, "mount")
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	timeout := 4 * time.Minute
	if d, ok := t.Deadline(); ok && time.Until(d) < timeout+10*time.Second {
		timeout = time.Until(d) - 10*time.Second
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout+5*time.Second)
	defer cancel()
	args := []string{"--mount", "--propagation", "private", "sh", "-c", unifiedScript, "sh",
		self, "-test.run", "^" + regexp.QuoteMeta(t.Name()) + "$", "-test.count", "1", "-test.v",
		"-test.timeout", timeout.String()}
	cmd := exec.CommandContext(ctx, unshare, args...)
	cmd.Env = append(os.Environ(), UnifiedEnv+"=1")
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.CombinedOutput()
	text := string(out)
	t.Logf("cgroup2-only child (%s):\n%s", strings.Join(cmd.Args, " "), text)
	switch {
	case err != nil:
		t.Fatalf("cgroup2-only child failed: %v", err)
	case strings.Contains(text, "--- SKIP: "+t.Name()+" "):
		t.Skipf("cgroup2-only child skipped (see its log above)")
	case !strings.Contains(text, "--- PASS: "+t.Name()+" "):
		t.Fatalf("cgroup2-only child did not run %s", t.Name())
	}
	return false
}
