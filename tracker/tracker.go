// Package tracker decides which LSN pgoutbox may confirm to PostgreSQL.
//
// Events are produced to Kafka asynchronously and their delivery reports come
// back in any order, one partition overtaking another. PostgreSQL skips on
// restart every transaction whose commit record starts before the confirmed
// LSN, so confirming one byte too far loses a transaction. The Tracker confirms
// the commit end LSN of the newest transaction such that it and every earlier
// transaction are committed and fully acknowledged, and nothing further.
package tracker

import (
	"errors"
	"fmt"

	"github.com/jackc/pglogrepl"
)

// Errors returned by the Tracker, wrapped with the call and LSN. Every one of
// them means the caller's view of the stream and the Tracker's have diverged;
// the safe reaction is to restart the pipeline from the last checkpoint.
var (
	// ErrOpen: Begin while another transaction has not seen its Commit.
	ErrOpen = errors.New("a transaction is already open")
	// ErrNotOpen: Add or Commit outside a transaction.
	ErrNotOpen = errors.New("no open transaction")
	// ErrOrder: an LSN that goes backwards or is not a valid position.
	ErrOrder = errors.New("lsn out of order")
	// ErrUnknownToken: Done for a transaction the Tracker does not hold,
	// either never begun, already confirmed, or forgotten by Reset.
	ErrUnknownToken = errors.New("unknown token")
	// ErrDoubleAck: Done for a transaction with no event in flight.
	ErrDoubleAck = errors.New("no event in flight")
)

// Tracker follows the transactions whose events are in flight to Kafka.
//
// It is a ring buffer of transactions in stream order, in the manner of etcd
// raft's Inflights, and it is not safe for concurrent use: the caller holds a
// mutex around every call, since delivery reports arrive on another goroutine.
//
// Invariants, holding between any two calls:
//
//   - The ring holds, oldest first, every transaction that is not yet safe.
//     Final LSNs are strictly increasing along the ring, and so are the end
//     LSNs of its committed transactions; each final is at least the end of
//     the transaction before it, as in the WAL.
//   - Only the newest transaction of the ring can be open (Commit not seen);
//     it is open if and only if open is set.
//   - The oldest transaction of the ring is never complete (committed with
//     no event in flight): Done and Commit retire complete transactions the
//     moment they reach the head, so safe is always up to date and Full and
//     Idle never wait for a call to Safe.
//   - safe is the end LSN of the last retired transaction, or the position
//     given to Advance or Reset since; it only decreases through Reset.
//     No transaction of the ring has a final LSN below safe, so confirming
//     safe never makes PostgreSQL skip an unpublished transaction.
//   - inflight is the sum of pending over the ring.
//   - The ring is empty exactly when the Tracker is idle.
type Tracker struct {
	// buf holds the ring; its first transaction is buf[start] and it has
	// count of them, wrapping around the end of buf.
	buf   []txn
	start int
	count int
	// open reports whether the newest transaction of the ring is open.
	open bool

	inflight int
	safe     pglogrepl.LSN
	// last is the end LSN of the newest committed transaction since New or
	// Reset: the next transaction cannot begin before it.
	last pglogrepl.LSN

	maxEvents int
	maxTxns   int
}

// New returns a Tracker whose Full reports true once maxEvents events are in
// flight or maxTxns committed transactions wait to become safe. Both limits
// must be at least 1; New panics otherwise, as that is a configuration bug.
func New(maxEvents, maxTxns int) *Tracker {
	if maxEvents < 1 || maxTxns < 1 {
		panic(fmt.Sprintf("tracker: limits must be positive, got maxEvents %d, maxTxns %d", maxEvents, maxTxns))
	}
	return &Tracker{maxEvents: maxEvents, maxTxns: maxTxns}
}

// Begin starts a transaction; final is BeginMessage.FinalLSN, the start of its
// commit record. It must be at least the end LSN of the previous transaction
// and the safe position: WAL records do not overlap, and a transaction that
// begins before a confirmed position would be skipped by PostgreSQL on
// restart, so either case means positions were mixed up.
func (t *Tracker) Begin(final pglogrepl.LSN) error {
	if t.open {
		return fmt.Errorf("begin %s: %w", final, ErrOpen)
	}
	if final == 0 {
		return fmt.Errorf("begin %s: invalid final LSN: %w", final, ErrOrder)
	}
	if final < t.last {
		return fmt.Errorf("begin %s: before the end %s of the previous transaction: %w", final, t.last, ErrOrder)
	}
	if final < t.safe {
		return fmt.Errorf("begin %s: before the safe position %s: %w", final, t.safe, ErrOrder)
	}
	if t.count == len(t.buf) {
		t.grow()
	}
	*t.at(t.count) = txn{final: final}
	t.count++
	t.open = true
	return nil
}

// Add records that one more event of the open transaction is in flight and
// returns its token, the final LSN of the transaction, which rides with the
// Kafka message and comes back to Done with its delivery report. Add works
// when Full is true: a transaction larger than maxEvents must still stream,
// so the caller decides when to wait. Outside a transaction Add returns
// ErrNotOpen rather than panicking, so a protocol error restarts the pipeline
// instead of the process.
func (t *Tracker) Add() (pglogrepl.LSN, error) {
	if !t.open {
		return 0, fmt.Errorf("add: %w", ErrNotOpen)
	}
	x := t.at(t.count - 1)
	x.pending++
	t.inflight++
	return x.final, nil
}

// Commit closes the open transaction; end is CommitMessage.TransactionEndLSN,
// the position that may be confirmed once the transaction is safe. It must be
// above the transaction's final LSN; passing CommitLSN instead, which equals
// the final LSN, is an error because confirming it replays the transaction.
func (t *Tracker) Commit(end pglogrepl.LSN) error {
	if !t.open {
		return fmt.Errorf("commit %s: %w", end, ErrNotOpen)
	}
	x := t.at(t.count - 1)
	if end <= x.final {
		return fmt.Errorf("commit %s: not after final LSN %s: %w", end, x.final, ErrOrder)
	}
	x.end = end
	t.open = false
	t.last = end
	t.retire()
	return nil
}

// Done records the delivery of one event of the transaction identified by
// token, in any order and possibly before that transaction's Commit. An
// unknown token or a transaction with nothing in flight is an error: the ack
// is a duplicate or stale, and ignoring it would hide a miscount that could
// confirm an unpublished event.
func (t *Tracker) Done(token pglogrepl.LSN) error {
	i, ok := t.find(token)
	if !ok {
		return fmt.Errorf("done %s: %w", token, ErrUnknownToken)
	}
	x := t.at(i)
	if x.pending == 0 {
		return fmt.Errorf("done %s: %w", token, ErrDoubleAck)
	}
	x.pending--
	t.inflight--
	if i == 0 {
		t.retire()
	}
	return nil
}

// Safe returns the position to confirm: the end LSN of the newest transaction
// that, with every transaction before it, is committed and fully acknowledged,
// or a later position given to Advance. It is 0 before anything is safe and
// never decreases except through Reset. Safe transactions have already left
// the ring when Done or Commit made them safe, so Safe is a plain read.
func (t *Tracker) Safe() pglogrepl.LSN {
	return t.safe
}

// Advance moves the safe position to pos if the Tracker is idle and pos is
// ahead of it, and reports whether it moved. It serves keepalives: with an
// idle outbox PostgreSQL sends nothing but keepalives, and unless their
// position is confirmed the slot pins WAL forever. Whether pos may be
// confirmed is decided by the in-flight state, never by comparing LSNs.
func (t *Tracker) Advance(pos pglogrepl.LSN) bool {
	if !t.Idle() || pos <= t.safe {
		return false
	}
	t.safe = pos
	return true
}

// Idle reports whether nothing is in flight: no open transaction, no event
// awaiting its ack and no committed transaction waiting on an earlier one.
func (t *Tracker) Idle() bool {
	return t.count == 0
}

// Full reports whether the caller should wait for acks before producing more:
// maxEvents events are in flight, or maxTxns committed transactions are not
// yet safe. The open transaction is not counted, so waiting on Full always
// ends once the events already produced are acked, even in the middle of a
// transaction and even with maxTxns 1.
func (t *Tracker) Full() bool {
	return t.inflight >= t.maxEvents || t.committed() >= t.maxTxns
}

// InFlight returns the number of events produced and not yet acked.
func (t *Tracker) InFlight() int {
	return t.inflight
}

// Open returns the final LSN of the open transaction, if there is one.
func (t *Tracker) Open() (final pglogrepl.LSN, ok bool) {
	if !t.open {
		return 0, false
	}
	return t.at(t.count - 1).final, true
}

// Reset forgets every transaction and event in flight and sets the safe
// position to pos, even below the current one: the pipeline restarts from
// the checkpoint pos and PostgreSQL sends again every transaction after it.
// A replayed transaction gets the same token as before, so the caller must
// make sure no delivery report of the old producer reaches Done after Reset.
func (t *Tracker) Reset(pos pglogrepl.LSN) {
	t.start, t.count, t.open = 0, 0, false
	t.inflight = 0
	t.safe = pos
	t.last = 0
	t.shrink()
}

// committed returns the number of committed transactions in the ring.
func (t *Tracker) committed() int {
	if t.open {
		return t.count - 1
	}
	return t.count
}
