package analyzer

import (
	"path"
	"strings"
	"testing"
)

// The loops isTmpPath and isSystemPath replace: each directory compared
// in turn.
func isTmpPathRef(p string) bool {
	for _, pre := range tmpDirs {
		if strings.HasPrefix(p, pre) {
			return true
		}
	}
	return false
}

func isSystemPathRef(p string) bool {
	for _, d := range systemDirs {
		if under(p, d) {
			return true
		}
	}
	return false
}

var pathClassSeeds = []string{"", "/", "/tmp", "/tmp/", "/tmp/x", "/var/tmp/x", "/var/run/x", "/run/", "/dev/shm/x", "/dev/mqueue/q",
	"/dev/null", "/etc", "/etc/", "/etcx", "/bin/sh", "/boot/x", "/sbin", "/usr/lib/x", "/lib", "/lib64/ld", "/lib32/x",
	"/root/.ssh", "/var/spool/cron/x", "/var/spool/cronx", "/var/log/app.log", "tmp/", "//tmp/"}

// TestPathClasses: the switch-dispatched path classes answer as the
// loops over their directory lists, for every directory with and
// without a slash and a suffix.
func TestPathClasses(t *testing.T) {
	paths := append([]string(nil), pathClassSeeds...)
	for _, d := range append(append([]string(nil), tmpDirs...), systemDirs...) {
		d = strings.TrimSuffix(d, "/")
		paths = append(paths, d, d+"/", d+"x", d+"/x", d[:len(d)-1])
	}
	for _, p := range paths {
		checkPathClasses(t, p)
	}
}

func checkPathClasses(t *testing.T, p string) {
	t.Helper()
	if got, want := isTmpPath(p), isTmpPathRef(p); got != want {
		t.Fatalf("isTmpPath(%q) = %v, reference %v", p, got, want)
	}
	if got, want := isSystemPath(p), isSystemPathRef(p); got != want {
		t.Fatalf("isSystemPath(%q) = %v, reference %v", p, got, want)
	}
}

func FuzzPathClasses(f *testing.F) {
	for _, p := range pathClassSeeds {
		f.Add(p)
	}
	f.Fuzz(checkPathClasses)
}

// isCronPathRef is the condition isCronPath replaces, as classifyFile
// wrote it.
func isCronPathRef(t, base string) bool {
	return under(t, "/etc/cron.d") || under(t, "/etc/cron.daily") || under(t, "/etc/cron.hourly") || under(t, "/etc/cron.weekly") ||
		under(t, "/etc/cron.monthly") || t == "/etc/crontab" || t == "/etc/anacrontab" || under(t, "/var/spool/cron") ||
		under(t, "/var/spool/anacron") || under(t, "/etc/systemd") || under(t, "/lib/systemd/system") ||
		under(t, "/usr/lib/systemd/system") || strings.HasSuffix(base, ".timer") || under(t, "/etc/init.d") ||
		t == "/etc/rc.local" || under(t, "/etc/periodic")
}

var cronSeeds = []string{"/etc/cron.d", "/etc/cron.d/x", "/etc/cron.daily/x", "/etc/cron.hourly", "/etc/cron.weekly/y",
	"/etc/cron.monthly/z", "/etc/crontab", "/etc/crontabx", "/etc/anacrontab", "/var/spool/cron/crontabs/root",
	"/var/spool/anacron/x", "/etc/systemd/system/x.service", "/lib/systemd/system/x", "/usr/lib/systemd/system/y",
	"/tmp/x.timer", "/etc/init.d/x", "/etc/rc.local", "/etc/periodic/daily/x", "/etc/passwd", "/var/log/app.log", "", "/"}

// TestCronPath: isCronPath answers as the condition it replaces.
func TestCronPath(t *testing.T) {
	for _, p := range cronSeeds {
		checkCronPath(t, p)
		checkCronPath(t, p+"x")
		checkCronPath(t, p+"/")
	}
}

func checkCronPath(t *testing.T, p string) {
	t.Helper()
	base := path.Base(p)
	if got, want := isCronPath(p, base), isCronPathRef(p, base); got != want {
		t.Fatalf("isCronPath(%q) = %v, reference %v", p, got, want)
	}
}

func FuzzCronPath(f *testing.F) {
	for _, p := range cronSeeds {
		f.Add(p)
	}
	f.Fuzz(checkCronPath)
}

// BenchmarkPathClasses is isTmpPath, isSystemPath and isCronPath of the
// fleet mix's paths and executables, and the loops they replace. Per
// op: one path.
//
//	go test ./analyzer -run '^$' -bench PathClasses -count 5
func BenchmarkPathClasses(b *testing.B) {
	paths := []string{"/var/log/app/app.log", "/var/lib/app/cache/123.dat", "/tmp/app-upload-77.dat",
		"/usr/local/bin/app", "/usr/bin/logrotate", "/srv/app/data"}
	b.Run("reference", func(b *testing.B) {
		n := 0
		for i := 0; i < b.N; i++ {
			p := paths[i%len(paths)]
			if isTmpPathRef(p) || isSystemPathRef(p) || isCronPathRef(p, path.Base(p)) {
				n++
			}
		}
	})
	b.Run("switch", func(b *testing.B) {
		n := 0
		for i := 0; i < b.N; i++ {
			p := paths[i%len(paths)]
			if isTmpPath(p) || isSystemPath(p) || isCronPath(p, path.Base(p)) {
				n++
			}
		}
	})
}
