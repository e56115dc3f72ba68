package main

import (
	"fmt"
	"io"
	"strings"
	"time"
)

// progressBar draws one self-overwriting line on a terminal: a bar when
// the total is known, else a count, with the rate. A nil bar draws
// nothing.
type progressBar struct {
	w     io.Writer
	what  string
	total uint64
	start time.Time
	last  time.Time
}

func newProgressBar(w io.Writer, what string, total uint64) *progressBar {
	return &progressBar{w: w, what: what, total: total, start: time.Now()}
}

// set redraws at most five times a second.
func (p *progressBar) set(n uint64) {
	if p == nil {
		return
	}
	if now := time.Now(); now.Sub(p.last) >= 200*time.Millisecond {
		p.last = now
		p.draw(n)
	}
}

// done draws the final state and ends the line.
func (p *progressBar) done(n uint64) {
	if p == nil {
		return
	}
	p.draw(n)
	fmt.Fprintln(p.w)
}

func (p *progressBar) draw(n uint64) {
	rate := float64(n) / max(time.Since(p.start).Seconds(), 1e-9)
	if p.total > 0 {
		const width = 30
		frac := min(float64(n)/float64(p.total), 1)
		fill := int(frac * width)
		fmt.Fprintf(p.w, "\r%s [%s%s] %3.0f%% %d/%d events, %.0f/s ", p.what,
			strings.Repeat("#", fill), strings.Repeat(".", width-fill), frac*100, n, p.total, rate)
		return
	}
	fmt.Fprintf(p.w, "\r%s %d events, %.0f/s ", p.what, n, rate)
}
