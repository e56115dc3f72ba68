package analyzer

import (
	"testing"

	"github.com/containsec/contain/schemas/containv1"
)

func TestExecName(t *testing.T) {
	for _, c := range []struct {
		x    *containv1.Exec
		want string
	}{
		{&containv1.Exec{Filename: "/bin/wget", Exe: "/bin/busybox", Argv: []string{"wget"}}, "/bin/wget"},
		{&containv1.Exec{Filename: "/proc/self/exe", Exe: "/bin/busybox", Argv: []string{"sleep", "1"}}, "/bin/sleep"},
		{&containv1.Exec{Filename: "/proc/self/exe", Exe: "/bin/busybox", Argv: []string{"wget", "-q"}}, "/bin/wget"},
		{&containv1.Exec{Filename: "/proc/self/exe", Exe: "/bin/busybox", Argv: []string{"busybox"}}, "/bin/busybox"},
		{&containv1.Exec{Filename: "/proc/self/exe", Exe: "/usr/bin/app"}, "/usr/bin/app"},
		{&containv1.Exec{Filename: "/proc/self/exe"}, "/proc/self/exe"},
		{&containv1.Exec{Filename: "/dev/fd/3", Exe: "/memfd:x (deleted)", Argv: []string{"sleep"}}, "/dev/fd/3"},
	} {
		if got := execName(c.x); got != c.want {
			t.Errorf("execName(%v) = %q, want %q", c.x, got, c.want)
		}
	}
}
