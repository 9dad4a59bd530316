package source

import (
	"context"
	"fmt"
)

// Snapshot is pg_current_snapshot(): transactions with ids below Xmin are finished,
// those at or above Xmax had not started, and Xip lists those in progress between.
// Ids are 64-bit (xid8: epoch and xid).
type Snapshot struct {
	Xmin, Xmax uint64
	Xip        []uint64
}

// CurrentSnapshot reads pg_current_snapshot(), which every role may call.
func (c *Conn) CurrentSnapshot(ctx context.Context) (Snapshot, error) {
	var s Snapshot
	var xip []string
	// pg_snapshot has no equality operator, so the in-progress ids come from a
	// subquery rather than an aggregate grouped by the snapshot.
	err := c.conn.QueryRow(ctx, `SELECT pg_snapshot_xmin(s)::text::bigint, pg_snapshot_xmax(s)::text::bigint,
			ARRAY(SELECT x::text FROM pg_snapshot_xip(s) x)
		FROM pg_current_snapshot() s`).Scan(&s.Xmin, &s.Xmax, &xip)
	if err != nil {
		return s, fmt.Errorf("read pg_current_snapshot(): %w", err)
	}
	for _, x := range xip {
		var v uint64
		if _, err := fmt.Sscan(x, &v); err != nil {
			return s, fmt.Errorf("read pg_current_snapshot(): xip %q: %w", x, err)
		}
		s.Xip = append(s.Xip, v)
	}
	return s, nil
}

// Visible reports whether the transaction with 32-bit id xid (as pgoutput's Begin
// message carries it) had finished when s was taken. Ids compare modulo 2^32, as
// PostgreSQL's TransactionIdPrecedes does: an id at or after Xmax had not finished
// (it may have started since), one before it is Xmax less the distance.
func (s Snapshot) Visible(xid uint32) bool {
	x32 := uint32(s.Xmax)
	if int32(xid-x32) >= 0 {
		return false
	}
	full := s.Xmax - uint64(x32-xid)
	if full < s.Xmin {
		return true
	}
	for _, x := range s.Xip {
		if x == full {
			return false
		}
	}
	return true
}

// SynchronousStandbys returns synchronous_standby_names: not empty when commits wait
// for synchronous standbys.
func (c *Conn) SynchronousStandbys(ctx context.Context) (string, error) {
	var names string
	if err := c.conn.QueryRow(ctx, `SELECT current_setting('synchronous_standby_names')`).Scan(&names); err != nil {
		return "", fmt.Errorf("read synchronous_standby_names: %w", err)
	}
	return names, nil
}
