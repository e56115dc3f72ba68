package commits

import (
	"os"
	"path/filepath"
	"strings"

	"github.com/containsec/contain/internal/engines"
	"github.com/containsec/contain/schemas/containv1"
)

// maxString bounds a string taken from an engine.
const maxString = 1024

// safe bounds s and makes it valid UTF-8.
func safe(s string) string {
	out, _, _ := containv1.SafeString([]byte(s), maxString)
	return out
}

// summarise counts changes into c and keeps up to maxPaths of them, each
// "A /path", "C /path" or "D /path".
func summarise(c *containv1.Commit, changes []engines.Change, maxPaths int) {
	for _, ch := range changes {
		switch ch.Kind {
		case 'A':
			c.FilesAdded++
		case 'D':
			c.FilesDeleted++
		default:
			c.FilesChanged++
		}
		if len(c.Paths) >= maxPaths {
			c.PathsTruncated = true
			continue
		}
		kind := ch.Kind
		if kind != 'A' && kind != 'D' {
			kind = 'C'
		}
		c.Paths = append(c.Paths, string(kind)+" "+safe(ch.Path))
	}
}

// flagModes records, of c's added and changed paths, the regular files of
// upper (the writable layer's host directory) with an execute bit and
// those with the setuid or setgid bit, up to maxPaths each. A path is
// resolved inside upper only (no symlink is followed).
func flagModes(c *containv1.Commit, changes []engines.Change, upper string, maxPaths int) {
	if upper == "" {
		return
	}
	for _, ch := range changes {
		if ch.Kind == 'D' || !strings.HasPrefix(ch.Path, "/") {
			continue
		}
		p := filepath.Join(upper, filepath.Clean(ch.Path))
		if !strings.HasPrefix(p, filepath.Clean(upper)+"/") {
			continue
		}
		fi, err := os.Lstat(p)
		if err != nil || !fi.Mode().IsRegular() {
			continue
		}
		if fi.Mode()&(os.ModeSetuid|os.ModeSetgid) != 0 && len(c.Setuid) < maxPaths {
			c.Setuid = append(c.Setuid, safe(ch.Path))
		}
		if fi.Mode()&0o111 != 0 && len(c.Executables) < maxPaths {
			c.Executables = append(c.Executables, safe(ch.Path))
		}
	}
}
