package relay

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/pgoutbox/pgoutbox/checkpoint"
	"github.com/pgoutbox/pgoutbox/decoder"
	"github.com/pgoutbox/pgoutbox/source"
)

// backfillPlan is a backfill to run before streaming: the slot's exported snapshot
// and its consistent point, where the stream takes over.
type backfillPlan struct {
	snapshot   string
	consistent source.LSN
}

// backfillToken is the ledger token of backfilled rows: they form one pseudo
// transaction that ends at the slot's consistent point.
const backfillToken = 1

// backfill publishes the rows that existed when the slot was created, read in its
// exported snapshot, through the loop's emit path, and waits until Kafka acknowledged
// all of them. Only then is the consistent point checkpointed and streaming starts
// there: every row committed before the snapshot came from the backfill, every row
// after from the stream. In exactly-once mode the whole backfill is one Kafka
// transaction, committed with a checkpoint record at the consistent point, or aborted
// whole.
func (l *loop) backfill(ctx context.Context, conn *source.Conn, plan *backfillPlan, cfg Config) error {
	m := l.m
	m.BackfillRunning.Set(1)
	defer m.BackfillRunning.Set(0)
	if tc, ok := l.com.(*txnCommitter); ok {
		tc.hold = true
		defer func() { tc.hold = false }()
	}
	l.start()
	if err := l.led.Begin(backfillToken, time.Now()); err != nil {
		return err
	}
	l.txn = openTxn{final: backfillToken, commitTime: time.Now()}
	started, lastLog := time.Now(), time.Now()
	rows := 0
	row := func(rel *decoder.Relation, values []decoder.Value) error {
		for l.led.Full() {
			if err := l.waitRoom(ctx); err != nil {
				return err
			}
			if ctx.Err() != nil {
				return errBackfillStopped
			}
		}
		rec, err := l.rows.Map(rel, values)
		if err := l.emit(ctx, rec, err, "backfill"); err != nil {
			return err
		}
		if err := l.settle(ctx); err != nil {
			return err
		}
		rows++
		m.BackfillRows.Inc()
		if time.Since(lastLog) >= 5*time.Second {
			lastLog = time.Now()
			l.log.Info().Int("rows", rows).Dur("elapsed", time.Since(started).Round(time.Second)).Msg("backfill progress")
		}
		return nil
	}
	// Every table in the same snapshot, one after the other.
	var err error
	for _, table := range cfg.Mapping.Tables {
		b := source.Backfill{Table: table, Where: cfg.BackfillWhere, Order: cfg.BackfillOrder}
		l.log.Info().Str("query", b.Query()).Str("snapshot", plan.snapshot).Stringer("consistent_point", plan.consistent).Msg("backfill started")
		if err = conn.ReadBackfill(ctx, plan.snapshot, b, row); err != nil {
			break
		}
	}
	if errors.Is(err, errBackfillStopped) || ctx.Err() != nil {
		// The session's error or the shutdown says why; the checkpoint still says the
		// backfill did not finish, so the next start with --backfill redoes it.
		l.log.Warn().Int("rows", rows).Msg("backfill interrupted; it starts over on the next start with --backfill")
		return nil
	}
	if err != nil {
		return err
	}
	if err := l.led.Commit(plan.consistent); err != nil {
		return err
	}
	l.lastEnd = plan.consistent
	// Wait for every ack (and settle refusals): the consistent point is safe only then.
	for l.led.Safe() < plan.consistent {
		if err := l.settle(ctx); err != nil {
			return err
		}
		if err := l.waitRoom(ctx); err != nil {
			return err
		}
		if ctx.Err() != nil {
			return nil
		}
	}
	if l.com.pending() {
		if err := l.com.commit(ctx, streamPos{end: plan.consistent}, func() error { l.m.Progress(); return nil }); err != nil {
			return err
		}
	}
	cp := l.cp
	cp.LSN = plan.consistent
	if err := l.save(ctx, cp); err != nil {
		return err
	}
	l.cp = cp
	l.led.Reset(plan.consistent)
	l.log.Info().Int("rows", rows).Dur("elapsed", time.Since(started).Round(time.Millisecond)).
		Stringer("consistent_point", plan.consistent).Msg("backfill done; streaming from the slot's consistent point")
	return nil
}

var errBackfillStopped = errors.New("backfill stopped")

// resumeBackfill decides, in exactly-once mode, what became of a backfill that the
// local checkpoint says did not finish. If its Kafka transaction committed (the
// checkpoint record covers the slot's consistent point), it is done and streaming
// starts there. Otherwise Kafka shows none of it to read_committed consumers, as
// InitTransactions aborted it, and the backfill starts over with a new slot.
func (r *relay) resumeBackfill(ctx context.Context, stream *source.Stream, store checkpoint.Store, start checkpoint.Checkpoint,
	consistent, committed source.LSN, serverVersion int) (checkpoint.Checkpoint, *backfillPlan, error) {
	cfg := r.cfg
	if committed >= consistent && consistent != 0 {
		start.LSN = committed
		start.UpdatedAt = time.Now().UTC()
		if err := store.Save(ctx, start); err != nil {
			return start, nil, fmt.Errorf("save checkpoint: %w", err)
		}
		r.log.Info().Stringer("lsn", start.LSN).Msg("the backfill had committed in Kafka before the last stop; streaming from its checkpoint record")
		return start, nil, nil
	}
	r.log.Warn().Str("slot", cfg.Slot).Msg("the previous backfill did not finish and Kafka holds none of it; starting it over with a new slot")
	if err := stream.DropSlot(ctx, cfg.Slot); err != nil {
		return start, nil, fmt.Errorf("drop slot of the unfinished backfill: %w", err)
	}
	created, err := stream.CreateSlot(ctx, cfg.Slot, serverVersion, source.SlotOptions{Failover: cfg.SlotFailover, ExportSnapshot: true})
	if err != nil {
		return start, nil, err
	}
	r.log.Info().Str("slot", cfg.Slot).Stringer("consistent_point", created.ConsistentPoint).Msg("replication slot created")
	start.LSN = backfillPending // the saved marker still says so
	return start, &backfillPlan{snapshot: created.Snapshot, consistent: created.ConsistentPoint}, nil
}
