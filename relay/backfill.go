package relay

import (
	"context"
	"errors"
	"time"

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
	b := source.Backfill{Table: r.cfg.Mapping.Table, Where: r.cfg.BackfillWhere, Order: r.cfg.BackfillOrder}
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
