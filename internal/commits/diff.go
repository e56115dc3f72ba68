package commits

import (
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
