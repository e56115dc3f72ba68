package loadtest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containsec/contain/internal/testenv"
)

// A mountinfo like this host's: ext4 root on vda, a tmpfs, a loop-mounted
// ext4 below /tmp, a mount point with a space.
const testMountinfo = `22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw,discard
23 22 0:21 / /dev/shm rw,nosuid,nodev shared:2 - tmpfs tmpfs rw
40 22 7:0 / /tmp/chcost/mnt rw,relatime shared:20 - ext4 /dev/loop0 rw
41 22 7:1 / /tmp/with\040space rw,relatime shared:21 - xfs /dev/loop1 rw
`

func TestMountOf(t *testing.T) {
	for _, c := range []struct{ dir, mnt, fstype, majMin string }{
		{"/tmp/ch23/data", "/", "ext4", "254:0"},
		{"/dev/shm/ch25/data", "/dev/shm", "tmpfs", "0:21"},
		{"/tmp/chcost/mnt/ch26/data", "/tmp/chcost/mnt", "ext4", "7:0"},
		{"/tmp/chcost/mntx", "/", "ext4", "254:0"}, // a sibling, not below the mount
		{"/tmp/with space/d", "/tmp/with space", "xfs", "7:1"},
	} {
		mnt, fstype, mm := mountOf(testMountinfo, c.dir)
		if mnt != c.mnt || fstype != c.fstype || mm != c.majMin {
			t.Errorf("mountOf(%q) = %q %q %q, want %q %q %q", c.dir, mnt, fstype, mm, c.mnt, c.fstype, c.majMin)
		}
	}
}

// TestClickHouseDataFS finds the test server's data path from the
// status file it holds open, and reports its file system as ext4NoJournal
// sees that path.
func TestClickHouseDataFS(t *testing.T) {
	addr := testenv.ClickHouseAddr(t)
	pids := listeningPIDs([]string{addr})
	if len(pids) != 1 {
		testenv.Unavailable(t, "no single clickhouse-server process found listening on "+addr+" (not local, or /proc not readable)")
	}
	for pid := range pids {
		dir := serverDataDir(pid)
		if st, err := os.Stat(filepath.Join(dir, "status")); err != nil || st.IsDir() {
			t.Fatalf("server %s: data dir %q has no status file (%v)", pid, dir, err)
		}
		dev, noJournal := ext4NoJournal(dir)
		got := clickhouseDataFS(pids)
		if noJournal != (got != "") || (noJournal && !strings.Contains(got, dev)) {
			t.Errorf("data dir %s: ext4NoJournal %v %q, clickhouseDataFS %q", dir, noJournal, dev, got)
		}
		t.Logf("server %s: data in %s; reported %q", pid, dir, got)
	}
}

// Both reports name a no-journal data file system, and only then.
func TestReportsNameDataFS(t *testing.T) {
	const fs = "ext4 without a journal (vda, /tmp/ch/data)"
	for _, c := range []struct {
		name  string
		print func(dataFS string) string
	}{
		{"in-process", func(dataFS string) string {
			var b strings.Builder
			(&Result{CHDataFS: dataFS}).Print(&b)
			return b.String()
		}},
		{"fleet", func(dataFS string) string {
			var b strings.Builder
			(&FleetResult{CHDataFS: dataFS}).Print(&b)
			return b.String()
		}},
	} {
		if out := c.print(fs); !strings.Contains(out, "clickhouse data on "+fs+": ") {
			t.Errorf("%s report with a no-journal data file system does not name it:\n%s", c.name, out)
		}
		if out := c.print(""); strings.Contains(out, "clickhouse data on") {
			t.Errorf("%s report names a data file system it was not given:\n%s", c.name, out)
		}
	}
}

// TestExt4JournalVerdict: ext4NoJournal on two real ext4 file systems,
// loop-mounted, one made with a journal and one without.
func TestExt4JournalVerdict(t *testing.T) {
	testenv.RequireRoot(t)
	mkfs := testenv.RequireCommand(t, "mkfs.ext4")
	for _, journal := range []bool{true, false} {
		dir := t.TempDir()
		img, mnt := filepath.Join(dir, "fs.img"), filepath.Join(dir, "mnt")
		if err := os.Mkdir(mnt, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(img, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Truncate(img, 64<<20); err != nil {
			t.Fatal(err)
		}
		args := []string{"-q", "-F"}
		if !journal {
			args = append(args, "-O", "^has_journal")
		}
		if out, err := exec.Command(mkfs, append(args, img)...).CombinedOutput(); err != nil {
			t.Fatalf("mkfs.ext4: %v\n%s", err, out)
		}
		if out, err := exec.Command("mount", "-o", "loop", img, mnt).CombinedOutput(); err != nil {
			testenv.Unavailable(t, fmt.Sprintf("a loop mount: %v: %s", err, out))
		}
		t.Cleanup(func() { _ = exec.Command("umount", mnt).Run() })
		dev, noJournal := ext4NoJournal(mnt)
		if noJournal == journal || (noJournal && !strings.HasPrefix(dev, "loop")) {
			t.Errorf("ext4 made with journal=%v: ext4NoJournal = %q, %v", journal, dev, noJournal)
		}
	}
}
