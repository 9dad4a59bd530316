package relay

import (
	"context"
	"testing"

	"github.com/pgoutbox/pgoutbox/source"
)

// fakeVisibility says a transaction is visible after a number of asks.
type fakeVisibility struct {
	after int // asks answered "not yet"
	asks  int
}

func (f *fakeVisibility) visible(context.Context, uint32) (bool, error) {
	f.asks++
	return f.asks > f.after, nil
}

// TestLoopSyncGuard: a transaction whose commit waits for a synchronous standby is
// not produced until it is visible, and the walsender keeps hearing from pgoutbox
// while it waits.
func TestLoopSyncGuard(t *testing.T) {
	h := newHarness(t, 100)
	g := &fakeVisibility{after: 2000} // two seconds of 1 ms polls
	h.l.guard = g
	h.stream.push(relationMsg())
	h.stream.push(txn(0x2000, 0x2050, "e1")...)
	h.turns(1) // the Relation
	produced := len(h.prod.messages())
	h.turns(1) // the Begin: waits here
	if produced != 0 {
		t.Fatalf("produced before the transaction was visible")
	}
	if g.asks <= g.after {
		t.Fatalf("the Begin returned after %d asks, before the transaction was visible", g.asks)
	}
	if n := len(h.stream.statuses); n < 1 {
		t.Fatalf("%d status updates while holding a transaction back for 2 s", n)
	}
	h.until(5, "e1", func() bool { return len(h.prod.messages()) == 1 })
}

// TestSnapshotGuardBatches: one snapshot serves every transaction it shows
// finished; a transaction it does not cover asks for a new one.
func TestSnapshotGuardBatches(t *testing.T) {
	snaps := []source.Snapshot{
		{Xmin: 100, Xmax: 110, Xip: []uint64{105}},
		{Xmin: 106, Xmax: 130},
	}
	g := &snapshotGuard{snapshot: func(context.Context) (source.Snapshot, error) {
		s := snaps[0]
		if len(snaps) > 1 {
			snaps = snaps[1:]
		}
		return s, nil
	}}
	ask := func(xid uint32, want bool) {
		t.Helper()
		if got, err := g.visible(context.Background(), xid); err != nil || got != want {
			t.Fatalf("visible(%d) = %v, %v; want %v", xid, got, err, want)
		}
	}
	ask(90, true)  // first snapshot
	ask(101, true) // the same one
	ask(109, true) // the same one
	ask(105, true) // in progress in the first: asks again, and the second shows it finished
	if g.queries != 2 {
		t.Fatalf("%d snapshots for four transactions, want 2", g.queries)
	}
	ask(120, true) // covered by the second
	if g.queries != 2 {
		t.Fatalf("%d snapshots, want still 2", g.queries)
	}
}
