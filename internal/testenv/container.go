package testenv

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Container is a real runc container on a busybox-static rootfs.
type Container struct {
	ID     string
	Bundle string
	Rootfs string
	// Runtime is the OCI runtime binary that runs it: runc or crun.
	Runtime string
	t       testing.TB
}

// ContainerSpec describes a container to run.
type ContainerSpec struct {
	// Args is the container's process; default: sleep forever.
	Args []string
	// Annotations are written to the OCI config (e.g. the image reference).
	Annotations map[string]string
	// HostNetwork keeps the host's network namespace (loopback reachable).
	HostNetwork bool
	// Edit may change the OCI config before the container starts.
	Edit func(cfg map[string]any)
	// Runtime is the OCI runtime binary: "" or "runc", or "crun" (which
	// runs on a cgroup2-only host only: it refuses hybrid mode).
	Runtime string
}

var busyboxPaths = []string{"/bin/busybox", "/usr/bin/busybox"}

// BusyboxRootfs lays out a busybox-static rootfs under dir and returns it.
func BusyboxRootfs(t testing.TB, dir string) string {
	t.Helper()
	var src string
	for _, p := range busyboxPaths {
		if out, err := exec.Command("file", "-L", p).Output(); err == nil && !bytes.Contains(out, []byte("dynamically")) {
			src = p
			break
		} else if err != nil {
			if _, serr := os.Stat(p); serr == nil {
				src = p
				break
			}
		}
	}
	if src == "" {
		Unavailable(t, "busybox-static (apt-get install busybox-static)")
	}
	rootfs := filepath.Join(dir, "rootfs")
	for _, d := range []string{"bin", "etc", "tmp", "proc", "sys", "dev", "var/www", "data"} {
		if err := os.MkdirAll(filepath.Join(rootfs, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	data, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(rootfs, "bin", "busybox"), data, 0o755); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(src, "--list").Output()
	if err != nil {
		t.Fatalf("busybox --list: %v", err)
	}
	for _, applet := range strings.Fields(string(out)) {
		if applet == "busybox" {
			continue
		}
		_ = os.Symlink("busybox", filepath.Join(rootfs, "bin", applet))
	}
	_ = os.WriteFile(filepath.Join(rootfs, "etc", "passwd"), []byte("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n"), 0o644)
	_ = os.WriteFile(filepath.Join(rootfs, "etc", "shadow"), []byte("root:*:19000:0:99999:7:::\n"), 0o600)
	return rootfs
}

// RunContainer starts a detached runc container and registers its removal.
// The id is made unique per test.
func RunContainer(t testing.TB, name string, spec ContainerSpec) *Container {
	t.Helper()
	c := PrepareContainer(t, name, spec)
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	return c
}

// PrepareContainer lays out a runc bundle (busybox rootfs, OCI config) for
// a container without starting it, and registers its removal, so that a
// test can start many at the same instant with Start.
func PrepareContainer(t testing.TB, name string, spec ContainerSpec) *Container {
	t.Helper()
	RequireRoot(t)
	RequireCommand(t, "runc") // runc spec writes the config, for crun too
	rt := spec.Runtime
	if rt == "" {
		rt = "runc"
	}
	RequireCommand(t, rt)
	dir := t.TempDir()
	rootfs := BusyboxRootfs(t, dir)
	id := fmt.Sprintf("%s-%d-%d", name, os.Getpid(), time.Now().UnixNano()%1e9)
	if out, err := exec.Command("runc", "spec", "--bundle", dir).CombinedOutput(); err != nil {
		t.Fatalf("runc spec: %v: %s", err, out)
	}
	cfgPath := filepath.Join(dir, "config.json")
	raw, err := os.ReadFile(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	var cfg map[string]any
	if err := json.Unmarshal(raw, &cfg); err != nil {
		t.Fatal(err)
	}
	args := spec.Args
	if len(args) == 0 {
		args = []string{"/bin/sh", "-c", "while true; do sleep 1; done"}
	}
	proc := cfg["process"].(map[string]any)
	proc["terminal"] = false
	proc["args"] = args
	cfg["root"].(map[string]any)["readonly"] = false
	if len(spec.Annotations) > 0 {
		ann := map[string]any{}
		for k, v := range spec.Annotations {
			ann[k] = v
		}
		cfg["annotations"] = ann
	}
	if spec.HostNetwork {
		linux := cfg["linux"].(map[string]any)
		var keep []any
		for _, ns := range linux["namespaces"].([]any) {
			if ns.(map[string]any)["type"] != "network" {
				keep = append(keep, ns)
			}
		}
		linux["namespaces"] = keep
	}
	if spec.Edit != nil {
		spec.Edit(cfg)
	}
	raw, _ = json.MarshalIndent(cfg, "", "  ")
	if err := os.WriteFile(cfgPath, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	c := &Container{ID: id, Bundle: dir, Rootfs: rootfs, Runtime: rt, t: t}
	t.Cleanup(c.Remove)
	return c
}

// Start runs the prepared container detached (`runc run -d`); after
// Remove, it starts it again under the same id (a re-create).
func (c *Container) Start() error {
	cmd := exec.Command(c.Runtime, "run", "-d", "--bundle", c.Bundle, c.ID)
	cmd.Stdin = nil
	// A file, not a pipe: the detached container inherits runc's stdio, and
	// Wait would block until the container closed a pipe (never).
	stderr, err := os.CreateTemp(c.Bundle, "runc-stderr-*")
	if err != nil {
		return err
	}
	defer stderr.Close()
	cmd.Stderr = stderr
	if err := cmd.Run(); err != nil {
		msg, _ := os.ReadFile(stderr.Name())
		return fmt.Errorf("%s run %s: %v: %s", c.Runtime, c.ID, err, msg)
	}
	return nil
}

// Remove kills and deletes the container (thawing it first if frozen).
func (c *Container) Remove() {
	_ = exec.Command(c.Runtime, "resume", c.ID).Run()
	if dir, err := c.Cgroup2Dir(); err == nil {
		_ = os.WriteFile(filepath.Join(dir, "cgroup.freeze"), []byte("0"), 0)
	}
	_ = exec.Command(c.Runtime, "kill", c.ID, "KILL").Run()
	_ = exec.Command(c.Runtime, "delete", "-f", c.ID).Run()
}

// State is `runc state` of the container.
type State struct {
	ID     string `json:"id"`
	Pid    int    `json:"pid"`
	Status string `json:"status"`
}

// State reads the container's runtime state.
func (c *Container) State() (State, error) {
	out, err := exec.Command(c.Runtime, "state", c.ID).Output()
	if err != nil {
		return State{}, fmt.Errorf("%s state %s: %w", c.Runtime, c.ID, err)
	}
	var s State
	err = json.Unmarshal(out, &s)
	return s, err
}

// Exec runs a command inside the container and returns its output. It
// times out (and is killed) after timeout, as runc exec into a frozen
// container hangs.
func (c *Container) Exec(timeout time.Duration, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, c.Runtime, append([]string{"exec", c.ID}, args...)...)
	cmd.WaitDelay = time.Second
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// FreezerState reads the container's v1 freezer state (THAWED, FREEZING,
// FROZEN).
func (c *Container) FreezerState() (string, error) {
	b, err := os.ReadFile(filepath.Join(FreezerV1Root, c.ID, "freezer.state"))
	return strings.TrimSpace(string(b)), err
}

// CgroupID is the cgroup v2 inode of the container, as eBPF's
// bpf_get_current_cgroup_id() reports it.
func (c *Container) CgroupID() (uint64, error) {
	dir, err := c.Cgroup2Dir()
	if err != nil {
		return 0, err
	}
	var st statT
	if err := stat(dir, &st); err != nil {
		return 0, err
	}
	return st.Ino, nil
}

// Cgroup2Path is the container's cgroup2 path relative to the mount (its
// init's "0::" line of /proc/<pid>/cgroup), e.g. "/<id>".
func (c *Container) Cgroup2Path() (string, error) {
	s, err := c.State()
	if err != nil {
		return "", err
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(s.Pid) + "/cgroup")
	if err != nil {
		return "", err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "0::"); ok {
			return rest, nil
		}
	}
	return "", fmt.Errorf("no cgroup v2 line for pid %d", s.Pid)
}

// Cgroup2Dir is the container's cgroup2 directory under Cgroup2Root.
func (c *Container) Cgroup2Dir() (string, error) {
	if Cgroup2Root == "" {
		return "", fmt.Errorf("no cgroup2 mount")
	}
	p, err := c.Cgroup2Path()
	if err != nil {
		return "", err
	}
	return filepath.Join(Cgroup2Root, p), nil
}

// Cgroup2Frozen reads the container's cgroup.events "frozen" value.
func (c *Container) Cgroup2Frozen() (bool, error) {
	dir, err := c.Cgroup2Dir()
	if err != nil {
		return false, err
	}
	b, err := os.ReadFile(filepath.Join(dir, "cgroup.events"))
	if err != nil {
		return false, err
	}
	return strings.Contains(string(b), "frozen 1"), nil
}
