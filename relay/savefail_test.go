package relay

import (
	"fmt"
	"syscall"
	"testing"
	"time"

	"github.com/pgoutbox/pgoutbox/source"
)

// TestLoopSaveFailsRetriesAtStatusInterval: while the checkpoint cannot be saved and
// the window of unconfirmed events is full, the loop retries the save once per
// status interval, waiting in between, rather than on every turn: an early confirm
// (window half full) must not spin on a save that keeps failing (e2e
// TestCheckpointDiskFailure counted 25,000 failed saves a second, each with a status
// update to PostgreSQL).
func TestLoopSaveFailsRetriesAtStatusInterval(t *testing.T) {
	h := newHarness(t, 4)
	attempts := 0
	h.store.err = func() error { attempts++; return &checkpointErr{syscall.EROFS} }
	h.stream.push(relationMsg())
	for i := range 4 {
		base := source.LSN(0x2000 + i*0x100)
		h.stream.push(txn(base, base+0x50, fmt.Sprintf("e%d", i))...)
	}
	h.until(40, "four events", func() bool { return len(h.prod.messages()) == 4 })
	h.turns(2)
	h.ackAll()
	start, attempts0, statuses0 := h.clock.Now(), attempts, len(h.stream.statuses)
	h.turns(50)
	elapsed := h.clock.Now().Sub(start)
	limit := int(elapsed/h.l.cfg.statusInterval) + 1
	if n := attempts - attempts0; n > limit {
		t.Fatalf("%d save attempts in 50 turns and %s of loop time; want at most %d (one per status interval)", n, elapsed, limit)
	}
	if n := len(h.stream.statuses) - statuses0; n > limit {
		t.Fatalf("%d status updates in 50 turns and %s of loop time; want at most %d", n, elapsed, limit)
	}
	if got := h.stream.last(); got != startLSN {
		t.Fatalf("confirmed %s that could not be saved", got)
	}
	if elapsed < time.Second {
		t.Fatalf("the loop did not wait: %s of loop time in 50 turns", elapsed)
	}
}
