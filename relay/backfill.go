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

// backfillToken is the tracker token of backfilled rows: they form one pseudo
// transaction that ends at the slot's consistent point.
const backfillToken = 1

// backfill publishes the rows that existed when the slot was created, read in its
// exported snapshot, and waits until Kafka acknowledged all of them. Only then is the
// consistent point checkpointed and streaming starts there: every row committed
// before the snapshot came from the backfill, every row after from the stream.
func (s *session) backfill(ctx, reports context.Context) error {
	r, m := s.r, s.r.m
	plan := s.plan
	m.BackfillRunning.Set(1)
	defer m.BackfillRunning.Set(0)
	b := source.Backfill{Table: r.cfg.Mapping.FirstTable(), Where: r.cfg.BackfillWhere, Order: r.cfg.BackfillOrder}
	r.log.Info().Str("query", b.Query()).Str("snapshot", plan.snapshot).Stringer("consistent_point", plan.consistent).Msg("backfill started")

	s.mu.Lock()
	s.tr.Reset(0)
	err := s.tr.Begin(backfillToken)
	s.mu.Unlock()
	if err != nil {
		return err
	}
	s.commitTime = time.Now()
	started, lastLog := time.Now(), time.Now()
	rows := 0
	err = s.conn.ReadBackfill(ctx, plan.snapshot, b, func(rel *decoder.Relation, values []decoder.Value) error {
		for s.full() {
			s.wait(ctx, reports, time.Now().Add(time.Second))
			if ctx.Err() != nil || reports.Err() != nil {
				return errBackfillStopped
			}
		}
		rec, err := s.mapper.Map(rel, values)
		if err := s.emit(rec, err, "backfill"); err != nil {
			return err
		}
		rows++
		m.BackfillRows.Inc()
		if time.Since(lastLog) >= 5*time.Second {
			lastLog = time.Now()
			r.log.Info().Int("rows", rows).Dur("elapsed", time.Since(started).Round(time.Second)).Msg("backfill progress")
		}
		return nil
	})
	if errors.Is(err, errBackfillStopped) || ctx.Err() != nil {
		// The session's error or the shutdown says why; the checkpoint still says the
		// backfill did not finish, so the next start with --backfill redoes it.
		r.log.Warn().Int("rows", rows).Msg("backfill interrupted; it starts over on the next start with --backfill")
		return nil
	}
	if err != nil {
		return err
	}
	s.mu.Lock()
	err = s.tr.Commit(plan.consistent)
	s.mu.Unlock()
	if err != nil {
		return err
	}
	// Wait for every ack; the consistent point is safe only then.
	for {
		s.mu.Lock()
		safe := s.tr.Safe()
		s.mu.Unlock()
		if safe >= plan.consistent {
			break
		}
		s.wait(ctx, reports, time.Now().Add(time.Second))
		if ctx.Err() != nil || reports.Err() != nil {
			return nil
		}
	}
	if s.eos != nil && s.eos.open {
		// In exactly-once mode the backfill is one Kafka transaction, committed
		// whole with a checkpoint record at the consistent point, or aborted whole
		// by the next start's InitTransactions.
		s.eos.lastComplete = plan.consistent
		if err := s.commitKafka(false); err != nil {
			return err
		}
	}
	cp := s.cp
	cp.LSN = plan.consistent
	if err := r.save(ctx, s.store, cp); err != nil {
		return err
	}
	s.cp = cp
	s.mu.Lock()
	s.tr.Reset(plan.consistent)
	s.mu.Unlock()
	s.unconfirmed, s.openEvents = 0, 0
	r.log.Info().Int("rows", rows).Dur("elapsed", time.Since(started).Round(time.Millisecond)).
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
	plan *backfillPlan, eos *exactlyOnce, serverVersion int) (checkpoint.Checkpoint, *backfillPlan, error) {
	cfg := r.cfg
	if eos.committed >= plan.consistent {
		start.LSN = eos.committed
		if err := r.save(ctx, store, start); err != nil {
			return start, nil, err
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
