package testenv

import (
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/containsec/contain/internal/cgroups"
)

// Cgroup mounts of this host as its mount table shows them when the test
// binary starts (this machine is hybrid: the v1 freezer at
// /sys/fs/cgroup/freezer beside cgroup2 at /sys/fs/cgroup/unified; in a
// RunUnified child, cgroup2 alone at /sys/fs/cgroup). "" when not mounted.
var (
	Layout, layoutErr = cgroups.Detect()
	FreezerV1Root     = Layout.FreezerV1
	Cgroup2Root       = Layout.Cgroup2
)

// HandCgroup is a cgroup made by hand (no runtime knows it) holding one
// sleep process, in cgroup2 and, when mounted, the v1 freezer.
type HandCgroup struct {
	Rel       string // path relative to the mounts, e.g. "system.slice"
	Cgroup2   string // "" when cgroup2 is not mounted
	FreezerV1 string // "" when the v1 freezer is not mounted
	Pid       int
}

// Frozen reads whether either hierarchy says the cgroup is frozen.
func (h *HandCgroup) Frozen(t testing.TB) bool {
	t.Helper()
	if h.Cgroup2 != "" {
		b, err := os.ReadFile(filepath.Join(h.Cgroup2, "cgroup.events"))
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(b), "frozen 1") {
			return true
		}
	}
	if h.FreezerV1 != "" {
		b, err := os.ReadFile(filepath.Join(h.FreezerV1, "freezer.state"))
		if err != nil {
			t.Fatal(err)
		}
		if strings.TrimSpace(string(b)) != "THAWED" {
			return true
		}
	}
	return false
}

// MakeCgroup creates cgroup rel (e.g. "system.slice/sshd.service" or a
// 64-hex name) by hand with a sleep process in it, removed at cleanup. A
// directory that already exists (a real host unit) is refused: tests must
// not touch the host's own units.
func MakeCgroup(t testing.TB, rel string) *HandCgroup {
	t.Helper()
	RequireRoot(t)
	h := &HandCgroup{Rel: rel}
	cmd := exec.Command("sleep", "3600")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	h.Pid = cmd.Process.Pid
	var made []string
	t.Cleanup(func() {
		for _, d := range made {
			_ = os.WriteFile(filepath.Join(d, "cgroup.freeze"), []byte("0"), 0)
			_ = os.WriteFile(filepath.Join(d, "freezer.state"), []byte("THAWED"), 0)
		}
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		for i := len(made) - 1; i >= 0; i-- {
			_ = os.Remove(made[i])
		}
	})
	for _, root := range []string{Cgroup2Root, FreezerV1Root} {
		if root == "" {
			continue
		}
		if _, err := os.Stat(root); err != nil {
			continue
		}
		dir := filepath.Join(root, rel)
		if _, err := os.Stat(dir); err == nil {
			t.Fatalf("cgroup %s exists already: refusing to use a real host cgroup", dir)
		}
		// Create each missing level, remembering them for removal.
		parts := strings.Split(filepath.Clean(rel), "/")
		for i := range parts {
			d := filepath.Join(root, filepath.Join(parts[:i+1]...))
			if err := os.Mkdir(d, 0o755); err == nil {
				made = append(made, d)
			} else if !errors.Is(err, fs.ErrExist) {
				t.Fatal(err)
			}
		}
		if err := os.WriteFile(filepath.Join(dir, "cgroup.procs"), []byte(strconv.Itoa(h.Pid)), 0); err != nil {
			t.Fatalf("moving sleep into %s: %v", dir, err)
		}
		if root == Cgroup2Root {
			h.Cgroup2 = dir
		} else {
			h.FreezerV1 = dir
		}
	}
	if h.Cgroup2 == "" && h.FreezerV1 == "" {
		Unavailable(t, "a cgroup2 or v1 freezer mount")
	}
	return h
}
