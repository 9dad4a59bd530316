package relay

import (
	"context"
	"errors"
	"fmt"

	"github.com/pgoutbox/pgoutbox/checkpoint"
	"github.com/pgoutbox/pgoutbox/source"
)

// GapError means the slot cannot deliver every event after the checkpoint: the slot
// is missing, was re-created, lost its WAL, or the checkpoint belongs to another
// cluster or slot. pgoutbox refuses to start rather than skip events silently.
type GapError struct {
	Reason string
}

func (e *GapError) Error() string {
	return "gap between checkpoint and slot: " + e.Reason +
		"; pgoutbox will not skip events silently. Find what happened to the slot; to start anyway from the slot's position " +
		"(events in the gap are not published; republish them from the outbox table if needed), run once with --accept-gap"
}

// backfillPending is the checkpoint LSN that marks a slot created for a backfill
// that has not finished. No real position is 0/0.
const backfillPending = 0

// backfillPlan is a backfill to run before streaming: the slot's exported snapshot
// and its consistent point, where the stream takes over.
type backfillPlan struct {
	snapshot   string
	consistent source.LSN
	// unfinished: the slot was created for a backfill that the local checkpoint
	// says did not finish, and snapshot is empty. In exactly-once mode the Kafka
	// checkpoint decides whether it did (see resumeBackfill).
	unfinished bool
}

// prepare checks the server, role, table and publication, creating the publication
// when it is missing.
func (r *relay) prepare(ctx context.Context, conn *source.Conn) (source.Server, error) {
	cfg := r.cfg
	table := cfg.Mapping.FirstTable()
	server, err := conn.Server(ctx)
	if err != nil {
		return server, err
	}
	if err := source.CheckServer(server); err != nil {
		return server, err
	}
	if cfg.SlotFailover && server.Version < 170000 {
		return server, &source.SetupError{Msg: fmt.Sprintf("--slot-failover needs PostgreSQL 17 or newer (server_version_num %d): before 17 a standby does not keep logical slots, so after a promotion the slot is missing and pgoutbox stops with a gap error rather than skip events; run without --slot-failover", server.Version)}
	}
	if cfg.MessagesPrefix != "" && server.Version < 140000 {
		return server, &source.SetupError{Msg: fmt.Sprintf("--messages-prefix needs PostgreSQL 14 or newer (pgoutput's messages option); this server is %d", server.Version)}
	}
	if table == "" {
		return server, r.preparePublication(ctx, conn, "")
	}
	cols, err := conn.Columns(ctx, table)
	if err != nil {
		return server, err
	}
	mapped, err := cfg.Mapping.Columns()
	if err != nil {
		return server, permanent(err)
	}
	if err := source.CheckColumns(table, cols, mapped, cfg.Mapping.PayloadColumn); err != nil {
		return server, err
	}
	if err := conn.CheckRole(ctx, table); err != nil {
		return server, err
	}
	return server, r.preparePublication(ctx, conn, table)
}

// preparePublication creates the publication when missing, or checks it publishes
// the table's inserts. With no table (a tableless outbox), any publication will do:
// pgoutput sends logical messages whatever it publishes.
func (r *relay) preparePublication(ctx context.Context, conn *source.Conn, table string) error {
	cfg := r.cfg
	if table == "" {
		if err := conn.CheckRole(ctx, ""); err != nil {
			return err
		}
	}
	pub, found, err := conn.Publication(ctx, cfg.Publication, table)
	if err != nil {
		return err
	}
	if !found {
		if err := conn.CreatePublication(ctx, cfg.Publication, table); err != nil {
			return err
		}
		r.log.Info().Str("publication", cfg.Publication).Str("table", table).Msg("publication created")
		return nil
	}
	if table == "" {
		return nil
	}
	if err := source.CheckPublication(pub, table); err != nil {
		return err
	}
	if pub.AllTables || pub.TableCount > 1 || pub.Update || pub.Delete {
		r.log.Info().Str("publication", pub.Name).Bool("all_tables", pub.AllTables).Int("tables", pub.TableCount).
			Bool("update", pub.Update).Bool("delete", pub.Delete).
			Msg("publication sends more than inserts into the outbox table; pgoutbox decodes and skips the rest (a dedicated publication costs less)")
	}
	return nil
}

// store returns the checkpoint store for this session.
func (r *relay) store(ctx context.Context, conn *source.Conn) (checkpoint.Store, error) {
	if r.cfg.CheckpointStore == StoreFile {
		return r.file, nil
	}
	s := checkpoint.NewPostgres(conn.PgxConn(), r.cfg.CheckpointTable)
	if err := s.Init(ctx); err != nil {
		return nil, permanent(err)
	}
	return s, nil
}

// position decides where streaming starts: the newer of the checkpoint and the slot's
// confirmed_flush_lsn, after ruling out a gap. It creates the slot on first start.
func (r *relay) position(ctx context.Context, conn *source.Conn, stream *source.Stream, store checkpoint.Store, id checkpoint.Checkpoint, serverVersion int) (checkpoint.Checkpoint, *backfillPlan, error) {
	cfg := r.cfg
	// The slot first, then the checkpoint: an instance that streams saves the
	// checkpoint before each confirm, so a checkpoint read after the slot is never
	// behind it. Read the other way round, a confirm in between would look like a gap.
	slot, found, err := conn.Slot(ctx, cfg.Slot)
	if err != nil {
		return checkpoint.Checkpoint{}, nil, err
	}
	if found {
		if err := source.CheckSlot(slot, id.Database); err != nil {
			return checkpoint.Checkpoint{}, nil, err
		}
		if slot.Active {
			// Another process streams from it (another pgoutbox, or our own
			// previous connection not yet gone): its position is moving, so judge
			// nothing now and stand by.
			return checkpoint.Checkpoint{}, nil, &source.ErrSlotActive{Msg: fmt.Sprintf("replication slot %q is active for PID %d", cfg.Slot, slot.ActivePID)}
		}
	}
	cp, err := store.Load(ctx, cfg.Slot)
	hasCP := err == nil
	if err != nil && !errors.Is(err, checkpoint.ErrNotFound) {
		return cp, nil, permanent(fmt.Errorf("load checkpoint from %s: %w", store.Describe(), err))
	}
	if hasCP {
		if err := sameOrigin(cp, id); err != nil && !cfg.AcceptGap {
			return cp, nil, err
		}
	}
	if hasCP && cp.LSN == backfillPending && sameOrigin(cp, id) == nil {
		// The slot was created for a backfill that did not finish: nothing was
		// confirmed from it, so it is dropped and the backfill starts over.
		if !cfg.Backfill {
			return cp, nil, permanent(fmt.Errorf("a --backfill on slot %q did not finish (checkpoint %s says so); run again with --backfill to restart it", cfg.Slot, store.Describe()))
		}
		if found && cfg.ExactlyOnce {
			// A crash may have come after the backfill's Kafka transaction
			// committed but before the checkpoint was saved: the checkpoint
			// topic knows, once this instance has fenced any other.
			start := id
			start.LSN = backfillPending
			return start, &backfillPlan{consistent: slot.ConfirmedLSN, unfinished: true}, nil
		}
		r.log.Warn().Str("slot", cfg.Slot).Msg("the previous backfill did not finish; starting it over with a new slot (rows it published are published again)")
		if found {
			if err := stream.DropSlot(ctx, cfg.Slot); err != nil {
				return cp, nil, fmt.Errorf("drop slot of the unfinished backfill: %w", err)
			}
		}
		found, hasCP = false, false
	}
	switch {
	case found && slot.WALStatus == "lost":
		if !cfg.AcceptGap {
			return cp, nil, &GapError{Reason: fmt.Sprintf("slot %q has wal_status 'lost': PostgreSQL removed WAL it still needed (max_slot_wal_keep_size), so events after %s are gone from WAL", cfg.Slot, slot.ConfirmedLSN)}
		}
		r.log.Warn().Str("slot", cfg.Slot).Msg("--accept-gap: dropping the lost slot and creating it again; events in the gap are not published")
		if err := stream.DropSlot(ctx, cfg.Slot); err != nil {
			return cp, nil, fmt.Errorf("drop lost slot: %w", err)
		}
		found = false
	case !found && hasCP && !cfg.AcceptGap:
		return cp, nil, &GapError{Reason: fmt.Sprintf("slot %q does not exist, but checkpoint %s says events up to %s were published from it; events committed since may exist only in the dropped slot's WAL", cfg.Slot, store.Describe(), cp.LSN)}
	case found && hasCP && slot.ConfirmedLSN > cp.LSN && !cfg.AcceptGap:
		return cp, nil, &GapError{Reason: fmt.Sprintf("slot %q is confirmed up to %s, past checkpoint %s at %s: the slot was re-created or advanced by another consumer, so events in between may never have been published (for several hosts, use --checkpoint-store postgres)", cfg.Slot, slot.ConfirmedLSN, store.Describe(), cp.LSN)}
	}

	start := id
	if !found {
		created, err := stream.CreateSlot(ctx, cfg.Slot, serverVersion, source.SlotOptions{Failover: cfg.SlotFailover, ExportSnapshot: cfg.Backfill})
		if err != nil {
			return cp, nil, err
		}
		r.log.Info().Str("slot", cfg.Slot).Stringer("consistent_point", created.ConsistentPoint).Msg("replication slot created")
		start.LSN = created.ConsistentPoint
		if cfg.Backfill {
			// Until the backfill is done, the checkpoint says so: a crash
			// restarts it instead of streaming past rows never published.
			marker := start
			marker.LSN = backfillPending
			if err := r.save(ctx, store, marker); err != nil {
				return cp, nil, err
			}
			return start, &backfillPlan{snapshot: created.Snapshot, consistent: created.ConsistentPoint}, nil
		}
	} else {
		if cfg.Backfill {
			r.log.Info().Str("slot", cfg.Slot).Msg("slot exists: --backfill applies only when pgoutbox creates the slot; streaming without it")
		}
		if cfg.SlotFailover {
			failover, err := conn.SlotFailover(ctx, cfg.Slot, serverVersion)
			if err != nil {
				return cp, nil, err
			}
			if !failover {
				if err := stream.AlterSlotFailover(ctx, cfg.Slot); err != nil {
					return cp, nil, err
				}
				r.log.Info().Str("slot", cfg.Slot).Msg("slot is now a failover slot")
			}
		}
		start.LSN = slot.ConfirmedLSN
		if hasCP && cp.LSN > start.LSN && sameOrigin(cp, id) == nil {
			// PostgreSQL 15 may lose a flush-only confirm in a crash; the checkpoint
			// remembers it.
			start.LSN = cp.LSN
		}
	}
	if !hasCP || cp.LSN != start.LSN || sameOrigin(cp, id) != nil {
		if err := r.save(ctx, store, start); err != nil {
			return cp, nil, err
		}
	}
	return start, nil, nil
}

// sameOrigin reports a checkpoint that belongs to another cluster, database or slot.
func sameOrigin(cp, id checkpoint.Checkpoint) error {
	switch {
	case cp.Slot != id.Slot:
		return &GapError{Reason: fmt.Sprintf("the checkpoint belongs to slot %q, not %q", cp.Slot, id.Slot)}
	case cp.SystemID != "" && id.SystemID != "" && cp.SystemID != id.SystemID:
		return &GapError{Reason: fmt.Sprintf("the checkpoint is from another PostgreSQL cluster (system identifier %s, this server is %s): a restored or re-initialized server has different WAL positions", cp.SystemID, id.SystemID)}
	case cp.Database != "" && cp.Database != id.Database:
		return &GapError{Reason: fmt.Sprintf("the checkpoint is from database %q, not %q", cp.Database, id.Database)}
	}
	return nil
}
