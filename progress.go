package main

import (
	"fmt"
	"io"
	"strings"
	"sync"
)

// progressBar draws one status line at the bottom of a terminal. It is also the
// log's writer: a log line clears the bar, is written, and the bar is drawn again
// below it. Its methods do nothing on a nil bar (stderr is not a terminal).
type progressBar struct {
	mu          sync.Mutex
	w           io.Writer
	done, total int64
	drawn       bool
}

func newProgressBar(w io.Writer) *progressBar { return &progressBar{w: w} }

// Write writes a log line above the bar.
func (b *progressBar) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.drawn {
		fmt.Fprint(b.w, "\r\033[K")
	}
	n, err := b.w.Write(p)
	b.draw()
	return n, err
}

// set updates and redraws the bar.
func (b *progressBar) set(done, total int64) {
	if b == nil {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.done, b.total = done, total
	fmt.Fprint(b.w, "\r\033[K")
	b.draw()
}

func (b *progressBar) draw() {
	fmt.Fprint(b.w, barLine(b.done, b.total, 30))
	b.drawn = true
}

// finish leaves the bar's last state on its own line.
func (b *progressBar) finish() {
	if b == nil {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.drawn {
		fmt.Fprintln(b.w)
		b.drawn = false
	}
}

// barLine renders "[#####.....]  50%  500/1000 rows" in width cells.
func barLine(done, total int64, width int) string {
	frac := 1.0
	if total > 0 {
		frac = min(float64(done)/float64(total), 1)
	}
	full := int(frac * float64(width))
	return fmt.Sprintf("[%s%s] %3.0f%%  %d/%d rows", strings.Repeat("#", full), strings.Repeat(".", width-full), frac*100, done, total)
}
