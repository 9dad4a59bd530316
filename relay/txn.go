package relay

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/pgoutbox/pgoutbox/checkpoint"
	"github.com/pgoutbox/pgoutbox/internal/failpoint"
	"github.com/pgoutbox/pgoutbox/sink"
	"github.com/pgoutbox/pgoutbox/source"
)

// txnCommitter is --exactly-once: events go to Kafka in transactions that also write
// a checkpoint record, so a read_committed consumer sees each event once across any
// crash. On start the newest record says which events are in Kafka (skipRule); those
// are skipped when PostgreSQL sends them again.
//
// A Kafka transaction commits when it is --txn-interval old, holds --txn-max-events
// events, the ledger is full, or the stream has had nothing new for linger: then
// pgoutbox has caught up with the server, and a consumer should see what it has at
// once rather than up to an interval later. Any of these may come in the middle of a
// PostgreSQL transaction: the record then says how many of its events are in Kafka
// (PostgreSQL sends a transaction's changes in the same order every time).
type txnCommitter struct {
	prod  txnProducer
	clock clock
	topic string // checkpoint topic
	key   string // the transactional id: the records' key
	id    checkpoint.Checkpoint

	interval  time.Duration
	maxEvents int
	linger    time.Duration
	// keepEvery is how often keepAlive runs while a commit waits.
	keepEvery time.Duration
	// hold: no commit falls due (a backfill is one Kafka transaction).
	hold bool

	rule skipRule
	// committed is the end LSN that the last committed Kafka transaction covers.
	committed source.LSN

	open     bool
	events   int
	openedAt time.Time
	lastAt   time.Time // when the last event was produced
}

// lingerAfterEvent is how long a Kafka transaction waits for more events once the
// stream has gone quiet. Short: while a backlog streams, messages follow each other
// within microseconds, so this never fires; once caught up it does, and what was
// produced becomes visible within a few milliseconds.
const lingerAfterEvent = 300 * time.Microsecond

// flushStep is how long one step of the flush before a commit waits.
const flushStep = 10 * time.Millisecond

// transactionCommitTimeout bounds a Kafka commit; past it the session restarts and
// the transaction is aborted by the next one's InitTransactions.
const transactionCommitTimeout = 2 * time.Minute

func (c *txnCommitter) begin() error {
	if c.open {
		return nil
	}
	if err := c.prod.BeginTransaction(); err != nil {
		return err
	}
	c.open, c.events = true, 0
	c.openedAt = c.clock.Now()
	return nil
}

func (c *txnCommitter) produced() {
	c.events++
	c.lastAt = c.clock.Now()
}

func (c *txnCommitter) due(now time.Time, full bool) (bool, time.Time) {
	if !c.open || c.hold {
		return false, time.Time{}
	}
	next := c.openedAt.Add(c.interval)
	if idle := c.lastAt.Add(c.linger); idle.Before(next) {
		next = idle
	}
	return full || c.events >= c.maxEvents || !now.Before(next), next
}

func (c *txnCommitter) commit(ctx context.Context, at streamPos, keepAlive func() error) error {
	if !c.open {
		return nil
	}
	rec := c.id
	rec.LSN = at.end
	if at.final != 0 {
		rec.PartialFinal, rec.PartialEvents = at.final, at.events
	}
	rec.UpdatedAt = c.clock.Now().UTC()
	for {
		err := c.prod.ProduceCheckpoint(c.topic, c.key, rec)
		if err == nil {
			break
		}
		if !errors.Is(err, sink.ErrQueueFull) {
			return fmt.Errorf("checkpoint record: %w", err)
		}
		// librdkafka's queue is full (Kafka slow or down): wait for room, and
		// keep the walsender hearing from us meanwhile.
		if err := keepAlive(); err != nil {
			return err
		}
		if sleep(c.clock, 5*time.Millisecond, ctx.Done()); ctx.Err() != nil {
			return fmt.Errorf("checkpoint record: %w", ctx.Err())
		}
	}
	// Wait for every message to be delivered before committing, in steps: a
	// refusal meanwhile dooms the transaction and ends the session (ctx), and
	// CommitTransaction itself would then wait out its timeout.
	for c.prod.Flush(flushStep) > 0 {
		if err := keepAlive(); err != nil {
			return err
		}
		if ctx.Err() != nil {
			return source.ErrInterrupted
		}
	}
	failpoint.Hit("before-kafka-commit")
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), transactionCommitTimeout)
	defer cancel()
	if err := waitFor(cctx, c.clock, c.keepEvery, keepAlive, c.prod.CommitTransaction); err != nil {
		return err
	}
	failpoint.Hit("after-kafka-commit")
	c.open = false
	c.committed = at.end
	return nil
}

func (c *txnCommitter) abort(ctx context.Context) error {
	if !c.open {
		return nil
	}
	c.open = false
	return c.prod.AbortTransaction(ctx)
}

// confirmable caps the acknowledged position at what committed Kafka transactions
// cover: an acknowledged event of an open transaction may still be aborted.
func (c *txnCommitter) confirmable(safe source.LSN) source.LSN {
	if c.open && safe > c.committed {
		return c.committed
	}
	return safe
}

func (c *txnCommitter) skip(final source.LSN, index int) bool { return c.rule.covers(final, index) }

func (c *txnCommitter) pending() bool { return c.open }
