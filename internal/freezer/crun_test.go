package freezer

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// crunStatus is crun 1.8.1's <root>/<id>/status of a detached container.
const crunStatus = `{
    "pid": 27294,
    "process-start-time": 554308,
    "cgroup-path": "/crtest1",
    "scope": "",
    "rootfs": "rootfs",
    "systemd-cgroup": false,
    "bundle": "/tmp/crunt",
    "created": "2026-12-02T16:42:03.107725Z",
    "owner": "root",
    "detached": true
}`

func FuzzParseCrunStatus(f *testing.F) {
	f.Add([]byte(crunStatus))
	f.Add([]byte(`{"pid":-1}`))
	f.Add([]byte(`not json`))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := ParseCrunStatus(data)
		if err != nil {
			if s != nil {
				t.Fatal("status with error")
			}
			return
		}
		if s.Pid < 0 {
			t.Fatalf("accepted pid %d", s.Pid)
		}
	})
}

// Locate reads crun's status: init pid and start, the cgroup2 directory
// under the configured mount (a path escaping it is dropped), the rootfs
// relative to the bundle and the bundle's annotations.
func TestLocateCrun(t *testing.T) {
	dir := t.TempDir()
	crun := filepath.Join(dir, "crun")
	bundle := filepath.Join(dir, "bundle")
	for _, d := range []string{filepath.Join(crun, "crtest1"), filepath.Join(crun, "esc"), bundle} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	status := []byte(crunStatus)
	status = []byte(strings.ReplaceAll(string(status), "/tmp/crunt", bundle))
	if err := os.WriteFile(filepath.Join(crun, "crtest1", "status"), status, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(bundle, "config.json"), []byte(`{"annotations":{"io.contain.critical":"true"}}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(crun, "esc", "status"), []byte(`{"pid":1,"cgroup-path":"/../../etc"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	roots := Roots{Cgroup2: "/sys/fs/cgroup", CrunRoot: crun}
	tg, err := Locate(roots, "crtest1")
	if err != nil {
		t.Fatal(err)
	}
	if tg.Runtime != RuntimeCrun || tg.InitPid != 27294 || tg.InitStart != 554308 || tg.Cgroup2 != "/sys/fs/cgroup/crtest1" ||
		tg.FreezerV1 != "" || tg.Rootfs != filepath.Join(bundle, "rootfs") || tg.Labels["io.contain.critical"] != "true" ||
		tg.Source != filepath.Join(crun, "crtest1", "status") {
		t.Fatalf("target %+v", tg)
	}
	tg, err = Locate(roots, "esc")
	if err != nil {
		t.Fatal(err)
	}
	if tg.Cgroup2 != "/sys/fs/cgroup/etc" {
		t.Fatalf("escaping cgroup path kept: %q", tg.Cgroup2)
	}
	roots.CrunRoot = ""
	if _, err := Locate(roots, "crtest1"); err == nil {
		t.Fatal("found with crun disabled")
	}
}
