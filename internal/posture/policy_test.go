package posture

import (
	"testing"

	"github.com/containsec/contain/internal/engines"
)

func TestEvaluate(t *testing.T) {
	base := engines.ContainerConfig{Engine: "docker", ID: "c1", UID: -1,
		Mounts: []engines.Mount{
			{Type: "bind", Destination: "/etc/hosts", RW: true},
			{Type: "proc", Destination: "/proc", RW: true},
			{Type: "tmpfs", Destination: "/tmp", RW: true},
			{Type: "volume", Destination: "/var/lib/data", RW: true},
			{Type: "bind", Destination: "/config", RW: false},
		},
		Volumes: []string{"/var/lib/data"}}
	ro := base
	ro.ReadOnlyRootfs, ro.User = true, "1000"
	if r := Evaluate(ro, PolicyReadOnly); r.Verdict != VerdictPass || r.RunsAsRoot || len(r.WritableMounts) != 2 {
		t.Errorf("read-only, tmpfs and declared volume: %+v", r)
	}
	if r := Evaluate(ro, PolicyNonRoot); r.Verdict != VerdictPass {
		t.Errorf("uid 1000 under non-root: %+v", r)
	}
	rw := base
	rw.Mounts = append(rw.Mounts, engines.Mount{Type: "bind", Destination: "/srv/upload", RW: true})
	r := Evaluate(rw, PolicyReadOnly)
	if r.Verdict != VerdictFail || len(r.Findings) != 2 || r.Findings[0].Code != CodeRootfsWritable || r.Findings[1].Code != CodeMountUndeclared {
		t.Errorf("writable rootfs and an undeclared bind mount: %+v", r)
	}
	if r := Evaluate(rw, PolicyNonRoot); r.Verdict != VerdictFail || r.Findings[0].Code != CodeUserRoot {
		t.Errorf("empty user under non-root: %+v", r)
	}
	for user, root := range map[string]bool{"": true, "0": true, "root:root": true, "0:0": true, "app": false, "1000:1000": false} {
		if got := RunsAsRoot(engines.ContainerConfig{User: user, UID: -1}); got != root {
			t.Errorf("user %q: root %v", user, got)
		}
	}
	if !RunsAsRoot(engines.ContainerConfig{User: "app", UID: 0}) {
		t.Error("uid 0 resolved by the runtime is root whatever the name")
	}
	if _, err := ParsePolicy("writable"); err == nil {
		t.Error("an unknown policy parsed")
	}
}

func TestParseSpecConfig(t *testing.T) {
	spec := `{"root":{"path":"rootfs","readonly":true},"process":{"user":{"uid":1000}},
"mounts":[{"destination":"/proc","type":"proc"},{"destination":"/data","type":"bind","source":"/x","options":["rbind","rw"]},
{"destination":"/ro","source":"/y","options":["rbind","ro"]}]}`
	var cc engines.ContainerConfig
	if err := engines.ParseSpecConfig([]byte(spec), &cc); err != nil {
		t.Fatal(err)
	}
	r := Evaluate(cc, PolicyReadOnly)
	if !cc.ReadOnlyRootfs || cc.UID != 1000 || r.RunsAsRoot || r.Verdict != VerdictFail || len(r.Findings) != 1 || r.Findings[0].Code != CodeMountUndeclared {
		t.Errorf("spec %+v: %+v", cc, r)
	}
}

func FuzzParsePodmanInspect(f *testing.F) {
	f.Add([]byte(`[{"Id":"abc","Name":"p","ImageName":"localhost/x:1","Config":{"User":"","Volumes":{"/data":{}}},
"HostConfig":{"ReadonlyRootfs":true,"Tmpfs":{"/tmp":"rw,size=64m"}},"Mounts":[{"Type":"bind","Destination":"/c","RW":true}]}]`))
	f.Fuzz(func(t *testing.T, b []byte) {
		cs, err := ParsePodmanInspect(b)
		if err != nil {
			return
		}
		for _, c := range cs {
			for _, p := range []string{PolicyReadOnly, PolicyNonRoot} {
				if r := Evaluate(c, p); (r.Verdict == VerdictFail) != (len(r.Findings) > 0) {
					t.Fatalf("verdict %s with findings %v", r.Verdict, r.Findings)
				}
			}
		}
	})
}

func FuzzParseSpecConfig(f *testing.F) {
	f.Add([]byte(`{"root":{"readonly":true},"process":{"user":{"uid":0}},"mounts":[{"destination":"/d","options":["bind"]}]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		var cc engines.ContainerConfig
		if engines.ParseSpecConfig(b, &cc) != nil {
			return
		}
		if cc.UID < 0 {
			t.Fatalf("uid %d from a spec", cc.UID)
		}
	})
}
