package source

import "testing"

// TestSnapshotVisible: a transaction is visible when it finished before the
// snapshot: below xmin, or below xmax and not in progress; ids wrap by epoch. (A
// transaction pgoutbox asks about has its commit record flushed, so it started
// before any snapshot taken since; an id at or after xmax asks for a newer one.)
func TestSnapshotVisible(t *testing.T) {
	const epoch = 3 << 32
	s := Snapshot{Xmin: epoch + 100, Xmax: epoch + 200, Xip: []uint64{epoch + 100, epoch + 150}}
	for _, c := range []struct {
		xid  uint32
		want bool
	}{
		{50, true},    // before xmin
		{100, false},  // in progress (xmin itself)
		{120, true},   // finished between
		{150, false},  // in progress: waiting for a synchronous standby, say
		{199, true},   // finished just before xmax
		{200, false},  // not started when the snapshot was taken
		{5000, false}, // later still: a newer snapshot is needed
	} {
		if got := s.Visible(c.xid); got != c.want {
			t.Errorf("Visible(%d) = %v, want %v", c.xid, got, c.want)
		}
	}
	// Across the epoch boundary: xmax just past 2^32·3, the xid from the epoch before.
	w := Snapshot{Xmin: epoch - 10, Xmax: epoch + 5, Xip: []uint64{epoch - 2}}
	if !w.Visible(0xFFFFFFF0) || w.Visible(0xFFFFFFFE) || !w.Visible(3) || w.Visible(5) {
		t.Errorf("wrap-around: %v %v %v %v", w.Visible(0xFFFFFFF0), w.Visible(0xFFFFFFFE), w.Visible(3), w.Visible(5))
	}
}
