package relay

import (
	"context"
	"fmt"
	"time"

	"github.com/pgoutbox/pgoutbox/checkpoint"
	"github.com/pgoutbox/pgoutbox/internal/failpoint"
	"github.com/pgoutbox/pgoutbox/sink"
	"github.com/pgoutbox/pgoutbox/source"
)

// exactlyOnce is the state of --exactly-once: events go to Kafka in transactions that
// also write a checkpoint record, so a read_committed consumer sees each event once
// across any crash. On start, the newest record says which events are in Kafka;
// those are skipped when PostgreSQL sends them again.
//
// A PostgreSQL transaction larger than --txn-max-events is split across Kafka
// transactions; the record then also says how many of its events are in Kafka, and
// replay skips exactly those (PostgreSQL sends a transaction's changes in the same
// order every time).
type exactlyOnce struct {
	id checkpoint.Checkpoint // identity for the records

	// skipBefore: a transaction whose commit starts before it is wholly in Kafka.
	skipBefore source.LSN
	// skipFinal, skipEvents: the first skipEvents events of the transaction with
	// final LSN skipFinal are in Kafka.
	skipFinal  source.LSN
	skipEvents int

	final        source.LSN // of the current PostgreSQL transaction
	index        int        // events of it seen so far, skipped ones included
	skipping     bool       // the current transaction is wholly in Kafka
	skipFirst    int        // events of the current transaction still to skip
	open         bool       // a Kafka transaction is open
	events       int        // events in the open Kafka transaction
	due          time.Time  // when the open Kafka transaction should commit
	committed    source.LSN // end LSN covered by the last committed Kafka transaction
	lastComplete source.LSN // end LSN of the newest PostgreSQL transaction fully produced
}

// startExactlyOnce creates the transactional producer, fencing older instances, and
// reads the newest checkpoint record.
func (r *relay) startExactlyOnce(ctx context.Context, id checkpoint.Checkpoint) (*exactlyOnce, error) {
	cfg := r.cfg
	r.closeProducer()
	kcfg := cfg.Kafka
	kcfg.Isolate = r.isolating
	p, err := sink.NewTransactional(kcfg, cfg.TxnID(), r.log)
	if err != nil {
		return nil, permanent(err)
	}
	r.producer = p
	// Bounded: the walsender waits for replies meanwhile (wal_sender_timeout).
	ictx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := p.InitTransactions(ictx); err != nil {
		return nil, r.eosSetup(err)
	}
	if err := p.EnsureCheckpointTopic(ictx, cfg.CheckpointTopic); err != nil {
		return nil, r.eosSetup(err)
	}
	kcp, found, err := sink.ReadCheckpoint(ictx, cfg.Kafka, cfg.CheckpointTopic, cfg.TxnID())
	if err != nil {
		return nil, r.eosSetup(err)
	}
	if !found {
		kcp = sink.TxnCheckpoint{Slot: id.Slot, SystemID: id.SystemID, Database: id.Database}
	}
	if err := p.EndStaleTransaction(ictx, cfg.CheckpointTopic, cfg.TxnID(), kcp); err != nil {
		return nil, err
	}
	e := &exactlyOnce{id: id}
	if found {
		if err := sameOrigin(checkpoint.Checkpoint{Slot: kcp.Slot, SystemID: kcp.SystemID, Database: kcp.Database}, id); err != nil && !cfg.AcceptGap {
			return nil, fmt.Errorf("checkpoint topic %s: %w", cfg.CheckpointTopic, err)
		}
		e.skipBefore = kcp.LSN
		e.skipFinal, e.skipEvents = kcp.PartialFinal, kcp.PartialEvents
		e.committed = kcp.LSN
		r.log.Info().Str("topic", cfg.CheckpointTopic).Stringer("lsn", kcp.LSN).Int("partial_events", kcp.PartialEvents).
			Msg("exactly-once: events up to the checkpoint record are in Kafka and will be skipped")
	}
	e.lastComplete = e.committed
	return e, nil
}

// eosSetup makes a missing ACL of the exactly-once mode permanent, with what to grant;
// other errors (Kafka down) are retried.
func (r *relay) eosSetup(err error) error {
	if !sink.Unauthorized(err) {
		return err
	}
	return permanent(fmt.Errorf("%w; --exactly-once needs the Kafka principal to have WRITE and DESCRIBE on TransactionalId %q, "+
		"and READ, WRITE and DESCRIBE (CREATE unless it exists) on topic %q", err, r.cfg.TxnID(), r.cfg.CheckpointTopic))
}

// begin notes a new PostgreSQL transaction and whether Kafka already has it.
func (e *exactlyOnce) begin(final source.LSN) {
	e.final, e.index = final, 0
	e.skipping = final < e.skipBefore
	e.skipFirst = 0
	if final == e.skipFinal {
		e.skipFirst = e.skipEvents
	}
}

// skip counts one event of the current transaction and reports whether Kafka has it.
func (e *exactlyOnce) skip() bool {
	e.index++
	return e.skipping || e.index <= e.skipFirst
}

// full reports whether the open Kafka transaction should commit at this boundary.
func (e *exactlyOnce) full(now time.Time) bool {
	return !now.Before(e.due)
}

// confirmable caps the acknowledged position at what committed Kafka transactions
// cover: an acknowledged event of an open transaction may still be aborted.
func (e *exactlyOnce) confirmable(acked source.LSN) source.LSN {
	if e.open && acked > e.committed {
		return e.committed
	}
	return acked
}

// commitWaiting commits the open Kafka transaction, which waits for every message
// to be delivered — minutes if Kafka is down. Meanwhile it keeps confirming the
// position PostgreSQL already has, so the walsender does not time out.
func (s *session) commitWaiting() error {
	ctx, cancel := context.WithTimeout(context.Background(), transactionCommitTimeout)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- s.prod.CommitTransaction(ctx) }()
	tick := time.NewTicker(s.r.cfg.StatusInterval)
	defer tick.Stop()
	for {
		select {
		case err := <-done:
			return err
		case <-tick.C:
			if err := s.confirmIfDue(); err != nil {
				cancel()
				<-done
				return err
			}
		}
	}
}

// transactionCommitTimeout bounds a Kafka commit; past it the session restarts and
// the transaction is aborted by the next one's InitTransactions.
const transactionCommitTimeout = 2 * time.Minute

// ensureKafkaTxn opens a Kafka transaction if none is open.
func (s *session) ensureKafkaTxn() error {
	e := s.eos
	if e.open {
		return nil
	}
	if err := s.prod.BeginTransaction(); err != nil {
		return err
	}
	e.open, e.events = true, 0
	e.due = time.Now().Add(s.r.cfg.TxnInterval)
	return nil
}

// commitKafka writes the checkpoint record and commits the open Kafka transaction.
// partial means the current PostgreSQL transaction is only partly in it.
func (s *session) commitKafka(partial bool) error {
	e := s.eos
	cp := sink.TxnCheckpoint{Slot: e.id.Slot, SystemID: e.id.SystemID, Database: e.id.Database,
		LSN: e.lastComplete, UpdatedAt: time.Now().UTC()}
	if partial {
		cp.PartialFinal, cp.PartialEvents = e.final, e.index
	}
	for {
		err := s.prod.ProduceCheckpoint(s.r.cfg.CheckpointTopic, s.r.cfg.TxnID(), cp)
		if err == nil {
			break
		}
		if err != sink.ErrQueueFull {
			return fmt.Errorf("checkpoint record: %w", err)
		}
		time.Sleep(time.Millisecond)
	}
	failpoint.Hit("before-kafka-commit")
	if err := s.commitWaiting(); err != nil {
		return err
	}
	failpoint.Hit("after-kafka-commit")
	e.open = false
	e.committed = e.lastComplete
	return nil
}
