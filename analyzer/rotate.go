package analyzer

import (
	"path"
	"regexp"
	"strings"

	"github.com/containsec/contain/schemas/containv1"
)

// Log rotation is lifecycle, not log clearing. A rotator (logrotate, an
// application's own) renames a log to a rotated name (app.log.1,
// app.log-20261203) or copies it there and truncates it, re-creates it,
// compresses the rotated copy and deletes the oldest. None of that empties
// a log nobody kept: these operations are not named defense.log_clear.
// Emptying or deleting a current log without a rotated copy still is.

// rotationWindowNs is how long after a log's rotation its truncation or
// re-creation counts as part of it.
const rotationWindowNs = int64(60e9)

// rotatedName matches a rotated log's suffix: .1, -20261203, _2026-12-03,
// .old, each optionally compressed.
var rotatedName = regexp.MustCompile(`^(.+?)([.\-_](\d{1,3}|\d{8}(\d{2,6})?|\d{4}-\d{2}-\d{2}([T_.-][\d:.-]+)?)|\.old)(\.(gz|xz|bz2|zst|lz4|z))?$`)

// rotationStem is the log a rotated name p was rotated from.
func rotationStem(p string) (string, bool) {
	m := rotatedName.FindStringSubmatch(p)
	if m == nil || strings.HasSuffix(m[1], "/") {
		return "", false
	}
	return m[1], true
}

// rotationFilter drops the log-clearing hits of f that are rotation, and
// records rotations. While the baseline learns (learn) it keeps them, to be
// learned: the image's own rotation of that log is then known when its
// rotation is not (after a restart of the analyzer, the copy of a
// copytruncate not seen before its truncation).
func rotationFilter(c *container, f *containv1.File, now int64, hits []hit, learn bool) []hit {
	if !isLogPath(f.Path) && !isLogPath(f.NewPath) {
		return hits // shell histories are not rotated
	}
	rotation := false
	switch f.Op {
	case containv1.File_OP_RENAME, containv1.File_OP_LINK:
		// app.log -> app.log.1: the log is rotated.
		if stem, ok := rotationStem(f.NewPath); ok && stem == f.Path {
			c.noteRotation(f.Path, now)
			rotation = true
		} else if stem, ok := rotationStem(f.Path); ok && strings.HasPrefix(f.NewPath, stem) {
			// app.log.1 -> app.log.2: shifting rotated copies.
			rotation = true
		}
	case containv1.File_OP_CREATE:
		// The copy of copytruncate or of compression: app.log.1, app.log.1.gz.
		if stem, ok := rotationStem(f.Path); ok {
			c.noteRotation(stem, now)
		}
	case containv1.File_OP_UNLINK:
		// The oldest rotated copy, or the uncompressed one compressed.
		_, rotation = rotationStem(f.Path)
	}
	if !rotation {
		if at, ok := c.rotated[fileTarget(f)]; ok && now-at < rotationWindowNs && now >= at {
			rotation = true // truncated or re-created after its rotation
		}
	}
	if !rotation || learn {
		return hits
	}
	kept := hits[:0]
	for _, h := range hits {
		if h.code != CodeLogClear {
			kept = append(kept, h)
		}
	}
	return kept
}

func (c *container) noteRotation(log string, now int64) {
	roomIn(&c.rotated, maxTrees)
	c.rotated[strings.Clone(log)] = now // kept: log may point into a payload
}

func isLogPath(p string) bool {
	if p == "" {
		return false // no new path
	}
	return under(p, "/var/log") || loginRecords[strings.TrimRightFunc(path.Base(p), func(r rune) bool { return r == '.' || r >= '0' && r <= '9' })]
}
