package relay

import (
	"context"
	"fmt"
	"time"

	"github.com/pgoutbox/pgoutbox/source"
)

// Sync guard modes (--sync-guard).
const (
	SyncGuardAuto = "auto"
	SyncGuardOn   = "on"
	SyncGuardOff  = "off"
)

// With synchronous replication a commit record is flushed on the primary — and
// decoded by the walsender and sent to pgoutbox — before the synchronous standbys
// have confirmed it: CommitTransaction (xact.c) writes and flushes the commit, then
// waits in SyncRepWaitForLSN (syncrep.c), and only then ProcArrayEndTransaction makes
// the transaction visible. Published at once, its event could be a phantom: if the
// primary fails during the wait and a standby that never received the commit is
// promoted, the transaction never happened. So under the guard a transaction is
// produced only once it is visible on the primary: its xid is no longer in progress
// in pg_current_snapshot(). A backend waiting for its standby is still in progress
// there; one whose wait was cancelled (statement timeout, pg_cancel_backend) has
// committed locally, and its event is real.

// visibility says whether a transaction that pgoutbox received is visible yet.
type visibility interface {
	visible(ctx context.Context, xid uint32) (bool, error)
}

// snapshotGuard answers from pg_current_snapshot(), one query for every transaction
// the last snapshot covers: a backlog of old transactions costs one query, a live
// stream about one per transaction that arrives after the last snapshot.
type snapshotGuard struct {
	snapshot func(ctx context.Context) (source.Snapshot, error)
	last     source.Snapshot
	have     bool
	queries  int // snapshots read, for tests and the log
}

func (g *snapshotGuard) visible(ctx context.Context, xid uint32) (bool, error) {
	if g.have && g.last.Visible(xid) {
		return true, nil // visibility never goes back
	}
	s, err := g.snapshot(ctx)
	if err != nil {
		return false, err
	}
	g.last, g.have = s, true
	g.queries++
	return s.Visible(xid), nil
}

// guardPoll is how soon the loop first asks again while a transaction is not
// visible; each later ask waits twice as long, up to guardPollMax. A synchronous
// standby confirms within a millisecond or two when it is up; when it is down, a
// commit waits for minutes, and polling every millisecond cost the primary some 600
// snapshot queries a second (e2e TestSyncGuardHoldsUnconfirmedCommit).
const (
	guardPoll    = time.Millisecond
	guardPollMax = 100 * time.Millisecond
)

// waitVisible holds the transaction xid back until the guard says it is visible,
// keeping the walsender alive meanwhile.
func (l *loop) waitVisible(ctx context.Context, xid uint32) error {
	wait := guardPoll
	for {
		cctx, cancel := context.WithTimeout(ctx, saveTimeout)
		ok, err := l.guard.visible(cctx, xid)
		cancel()
		if err != nil {
			return fmt.Errorf("sync guard: %w", err)
		}
		if ok {
			return nil
		}
		if err := l.keepAlive(ctx)(); err != nil {
			return err
		}
		if sleep(l.clock, wait, ctx.Done()); ctx.Err() != nil {
			return source.ErrInterrupted
		}
		wait = min(2*wait, guardPollMax)
	}
}

// syncGuard decides whether the guard is on: always with on, never with off, and
// with auto when the server has synchronous standbys configured.
func syncGuard(ctx context.Context, mode string, conn *source.Conn) (bool, error) {
	switch mode {
	case SyncGuardOn:
		return true, nil
	case SyncGuardOff:
		return false, nil
	}
	names, err := conn.SynchronousStandbys(ctx)
	if err != nil {
		return false, err
	}
	return names != "", nil
}
