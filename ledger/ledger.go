// Package ledger owns what pgoutbox has in flight to Kafka, and so decides which LSN
// it may confirm to PostgreSQL.
//
// Events are produced to Kafka asynchronously and their delivery reports come back
// in any order, one partition overtaking another. PostgreSQL skips on restart every
// transaction whose commit record starts before the confirmed LSN, so confirming one
// byte too far loses a transaction. The Ledger says the commit end LSN of the newest
// transaction such that it and every earlier transaction are committed and fully
// acknowledged, and nothing further.
//
// It is the one place that counts events: per transaction its events, the acks still
// awaited, the events Kafka refused and the ones whose produce failed, and its commit
// time; over all of them what is in flight, what a crash would publish again, and how
// far behind the confirmed position is in time. Nothing else in pgoutbox keeps count.
package ledger

import (
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/jackc/pglogrepl"
)

// LSN is a PostgreSQL WAL position.
type LSN = pglogrepl.LSN

// Errors returned by the Ledger, wrapped with the call and LSN. Every one of them
// means the caller's view of the stream and the Ledger's have diverged; the safe
// reaction is to restart the pipeline from the last checkpoint.
var (
	// ErrOpen: Begin while another transaction has not seen its Commit.
	ErrOpen = errors.New("a transaction is already open")
	// ErrNotOpen: Add or Commit outside a transaction.
	ErrNotOpen = errors.New("no open transaction")
	// ErrOrder: an LSN that goes backwards or is not a valid position.
	ErrOrder = errors.New("lsn out of order")
	// ErrUnknownToken: a report for a transaction the Ledger does not hold, either
	// never begun, already safe, or forgotten by Reset.
	ErrUnknownToken = errors.New("unknown token")
	// ErrDoubleAck: a report for a transaction with no event in flight.
	ErrDoubleAck = errors.New("no event in flight")
	// ErrNotBlocked: Redo for a transaction with no refused event.
	ErrNotBlocked = errors.New("no refused event")
)

// Refusal is an event Kafka refused: the Ledger keeps its transaction from becoming
// safe until the caller decides what to do with it (Redo under the same token, or
// stop).
type Refusal struct {
	Token LSN
	Err   error
}

// Ledger follows the transactions whose events are in flight to Kafka, and the safe
// ones not yet confirmed.
//
// It is safe for concurrent use: the replication loop begins, adds, commits and
// confirms; the delivery-report goroutine calls Done and Refuse. Changed wakes a loop
// that waits for either.
//
// Invariants, holding between any two calls:
//
//   - The ring holds, oldest first, every transaction that is not yet safe. Final
//     LSNs are strictly increasing along the ring, and so are the end LSNs of its
//     committed transactions; each final is at least the end of the transaction
//     before it, as in the WAL.
//   - Only the newest transaction of the ring can be open (Commit not seen); it is
//     open if and only if open is set.
//   - A transaction is complete when it is committed, no event awaits an ack and
//     none is blocked (refused, or its produce failed). The oldest transaction of the
//     ring is never complete: Done and Commit retire complete transactions the moment
//     they reach the head, so safe is always up to date.
//   - safe is the end LSN of the last retired transaction, or the position given to
//     Advance or Reset since; it only decreases through Reset. No transaction of the
//     ring has a final LSN below safe, so confirming safe never makes PostgreSQL skip
//     an unpublished transaction.
//   - inflight is the sum of pending over the ring; blocked transactions stay in the
//     ring until Redo unblocks them, or forever.
//   - retired holds the transactions retired since the last Confirm that covered
//     them, oldest first, with strictly increasing ends, all at most safe;
//     confirmed <= safe.
//   - The ring is empty exactly when the Ledger is idle.
type Ledger struct {
	mu sync.Mutex

	// buf holds the ring; its first transaction is buf[start] and it has count of
	// them, wrapping around the end of buf.
	buf   []txn
	start int
	count int
	open  bool

	inflight int
	// ringCommitted counts the events of the committed transactions in the ring.
	ringCommitted int
	safe          LSN
	// last is the end LSN of the newest committed transaction since New or Reset:
	// the next transaction cannot begin before it.
	last LSN

	retired       []retiredTxn
	retiredHead   int
	retiredEvents int
	confirmed     LSN
	// confirmedAt is the commit time of the newest confirmed transaction.
	confirmedAt time.Time

	refusals []Refusal
	changed  chan struct{}

	maxEvents int
	maxTxns   int
}

// retiredTxn is a safe transaction that is not yet confirmed, with the transactions
// without events that followed it: its events are confirmed with end, the entry is
// gone with lastEnd.
type retiredTxn struct {
	end, lastEnd LSN
	at, lastAt   time.Time
	events       int
}

// New returns a Ledger whose Full reports true once maxEvents events are in flight,
// maxEvents events of committed transactions are not yet confirmed, or maxTxns
// committed transactions wait to become safe. Both limits must be at least 1; New
// panics otherwise, as that is a configuration bug.
func New(maxEvents, maxTxns int) *Ledger {
	if maxEvents < 1 || maxTxns < 1 {
		panic(fmt.Sprintf("ledger: limits must be positive, got maxEvents %d, maxTxns %d", maxEvents, maxTxns))
	}
	return &Ledger{maxEvents: maxEvents, maxTxns: maxTxns, changed: make(chan struct{}, 1)}
}

// Changed is signalled after a delivery report was recorded (Done or Refuse). A loop
// that waits for room, for safety or for a refusal waits on it.
func (l *Ledger) Changed() <-chan struct{} { return l.changed }

func (l *Ledger) signal() {
	select {
	case l.changed <- struct{}{}:
	default:
	}
}

// Begin starts a transaction; final is BeginMessage.FinalLSN, the start of its commit
// record, and at its commit time. final must be at least the end LSN of the previous
// transaction and the safe position: WAL records do not overlap, and a transaction
// that begins before a confirmed position would be skipped by PostgreSQL on restart,
// so either case means positions were mixed up.
func (l *Ledger) Begin(final LSN, at time.Time) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case l.open:
		return fmt.Errorf("begin %s: %w", final, ErrOpen)
	case final == 0:
		return fmt.Errorf("begin %s: invalid final LSN: %w", final, ErrOrder)
	case final < l.last:
		return fmt.Errorf("begin %s: before the end %s of the previous transaction: %w", final, l.last, ErrOrder)
	case final < l.safe:
		return fmt.Errorf("begin %s: before the safe position %s: %w", final, l.safe, ErrOrder)
	}
	if l.count == len(l.buf) {
		l.grow()
	}
	*l.at(l.count) = txn{final: final, commitTime: at}
	l.count++
	l.open = true
	return nil
}

// Add records that one more event of the open transaction is in flight and returns
// its token, the final LSN of the transaction, which rides with the Kafka message and
// comes back with its delivery report. Add works when Full is true: a transaction
// larger than maxEvents must still stream, so the caller decides when to wait. Outside
// a transaction Add returns ErrNotOpen, so a protocol error restarts the pipeline
// instead of the process.
func (l *Ledger) Add() (LSN, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.open {
		return 0, fmt.Errorf("add: %w", ErrNotOpen)
	}
	x := l.at(l.count - 1)
	x.events++
	x.pending++
	l.inflight++
	return x.final, nil
}

// Cancel takes back an Add whose produce failed before the message reached the
// producer, so no report will come for it. The event was not published, so its
// transaction is blocked: it never becomes safe. The caller stops the pipeline, which
// restarts from the checkpoint.
func (l *Ledger) Cancel(token LSN) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	x, _, err := l.pendingTxn("cancel", token)
	if err != nil {
		return err
	}
	x.pending--
	x.blocked++
	l.inflight--
	return nil
}

// Commit closes the open transaction; end is CommitMessage.TransactionEndLSN, the
// position that may be confirmed once the transaction is safe. It must be above the
// transaction's final LSN; passing CommitLSN instead, which equals the final LSN, is
// an error because confirming it replays the transaction.
func (l *Ledger) Commit(end LSN) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.open {
		return fmt.Errorf("commit %s: %w", end, ErrNotOpen)
	}
	x := l.at(l.count - 1)
	if end <= x.final {
		return fmt.Errorf("commit %s: not after final LSN %s: %w", end, x.final, ErrOrder)
	}
	x.end = end
	l.open = false
	l.last = end
	l.ringCommitted += x.events
	l.retire()
	return nil
}

// Done records the delivery of one event of the transaction identified by token, in
// any order and possibly before that transaction's Commit. An unknown token or a
// transaction with nothing in flight is an error: the ack is a duplicate or stale,
// and ignoring it would hide a miscount that could confirm an unpublished event.
func (l *Ledger) Done(token LSN) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	x, i, err := l.pendingTxn("done", token)
	if err != nil {
		return err
	}
	x.pending--
	l.inflight--
	if i == 0 {
		l.retire()
	}
	l.signal()
	return nil
}

// Refuse records that Kafka refused one event of the transaction token: it no longer
// awaits an ack, but its transaction is blocked until the caller, having taken the
// refusal with TakeRefusals, produces something in its place under the same token
// (Redo) — or stops.
func (l *Ledger) Refuse(token LSN, why error) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	x, _, err := l.pendingTxn("refuse", token)
	if err != nil {
		return err
	}
	x.pending--
	x.blocked++
	l.inflight--
	l.refusals = append(l.refusals, Refusal{Token: token, Err: why})
	l.signal()
	return nil
}

// TakeRefusals returns the refusals recorded since the last call, oldest first.
func (l *Ledger) TakeRefusals() []Refusal {
	l.mu.Lock()
	defer l.mu.Unlock()
	r := l.refusals
	l.refusals = nil
	return r
}

// Redo unblocks one refused event of the transaction token and puts one event back
// in flight under it: the caller produces a replacement (a dead-letter record) whose
// report retires it like any other.
func (l *Ledger) Redo(token LSN) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	i, ok := l.find(token)
	if !ok {
		return fmt.Errorf("redo %s: %w", token, ErrUnknownToken)
	}
	x := l.at(i)
	if x.blocked == 0 {
		return fmt.Errorf("redo %s: %w", token, ErrNotBlocked)
	}
	x.blocked--
	x.pending++
	l.inflight++
	return nil
}

// pendingTxn finds the transaction of token with an event awaiting its report.
func (l *Ledger) pendingTxn(op string, token LSN) (*txn, int, error) {
	i, ok := l.find(token)
	if !ok {
		return nil, 0, fmt.Errorf("%s %s: %w", op, token, ErrUnknownToken)
	}
	x := l.at(i)
	if x.pending == 0 {
		return nil, 0, fmt.Errorf("%s %s: %w", op, token, ErrDoubleAck)
	}
	return x, i, nil
}

// Safe returns the position to confirm: the end LSN of the newest transaction that,
// with every transaction before it, is committed and complete, or a later position
// given to Advance. It is 0 before anything is safe and never decreases except through
// Reset.
func (l *Ledger) Safe() LSN {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.safe
}

// Advance moves the safe position to pos if the Ledger is idle and pos is ahead of
// it, and reports whether it moved. It serves keepalives: with an idle outbox
// PostgreSQL sends nothing but keepalives, and unless their position is confirmed the
// slot pins WAL forever. Whether pos may be confirmed is decided by the in-flight
// state, never by comparing LSNs.
func (l *Ledger) Advance(pos LSN) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.count > 0 || pos <= l.safe {
		return false
	}
	l.safe = pos
	return true
}

// Confirm records that lsn, at most Safe, was saved and confirmed: the transactions
// that end at or before it are forgotten. It returns the commit time of the newest
// confirmed transaction, or zero when nothing is unconfirmed or in flight (caught up),
// for the lag metric.
func (l *Ledger) Confirm(lsn LSN) (time.Time, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if lsn > l.safe {
		return time.Time{}, fmt.Errorf("confirm %s: past the safe position %s: %w", lsn, l.safe, ErrOrder)
	}
	if lsn > l.confirmed {
		l.confirmed = lsn
	}
	for l.retiredHead < len(l.retired) && l.retired[l.retiredHead].end <= l.confirmed {
		r := &l.retired[l.retiredHead]
		l.retiredEvents -= r.events
		r.events = 0
		if !r.at.IsZero() {
			l.confirmedAt = r.at
		}
		if r.lastEnd > l.confirmed {
			// Only some of the folded transactions are confirmed: the entry
			// now stands for the rest.
			r.end, r.at = r.lastEnd, r.lastAt
			break
		}
		if !r.lastAt.IsZero() {
			l.confirmedAt = r.lastAt
		}
		l.retiredHead++
	}
	if l.retiredHead == len(l.retired) {
		l.retired, l.retiredHead = l.retired[:0], 0
	} else if l.retiredHead > len(l.retired)/2 {
		l.retired = l.retired[:copy(l.retired, l.retired[l.retiredHead:])]
		l.retiredHead = 0
	}
	if l.count == 0 && len(l.retired) == 0 {
		return time.Time{}, nil
	}
	return l.confirmedAt, nil
}

// Confirmed returns the position last given to Confirm (or Reset).
func (l *Ledger) Confirmed() LSN {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.confirmed
}

// Idle reports whether nothing is in flight: no open transaction, no event awaiting
// its ack or blocked, and no committed transaction waiting on an earlier one.
func (l *Ledger) Idle() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.count == 0
}

// Drained reports whether no event awaits a delivery report. Blocked events do not:
// their fate is the caller's.
func (l *Ledger) Drained() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.inflight == 0
}

// Full reports whether the caller should wait before producing more: maxEvents
// events are in flight, maxEvents events of committed transactions are not yet
// confirmed (what a crash would publish again), or maxTxns committed transactions
// are not yet safe. The open transaction counts only for the first: it cannot be
// confirmed before its commit arrives, so waiting on Full always ends once the events
// already produced are acked and confirmed, even in the middle of a transaction
// larger than the window and even with maxTxns 1.
func (l *Ledger) Full() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.inflight >= l.maxEvents || l.ringCommitted+l.retiredEvents >= l.maxEvents || l.committed() >= l.maxTxns
}

// InFlight returns the number of events produced and not yet reported.
func (l *Ledger) InFlight() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.inflight
}

// Unconfirmed returns the number of events produced and not yet confirmed, the open
// transaction's included: what a crash now would publish again.
func (l *Ledger) Unconfirmed() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := l.ringCommitted + l.retiredEvents
	if l.open {
		n += l.at(l.count - 1).events
	}
	return n
}

// Open returns the final LSN of the open transaction, if there is one.
func (l *Ledger) Open() (final LSN, ok bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.open {
		return 0, false
	}
	return l.at(l.count - 1).final, true
}

// Newest returns the final LSN of the newest transaction begun since Reset, safe or
// not, or 0.
func (l *Ledger) Newest() LSN {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.count > 0 {
		return l.at(l.count - 1).final
	}
	return 0
}

// Reset forgets every transaction, event and refusal and sets the safe and confirmed
// positions to pos, even below the current ones: the pipeline restarts from the
// checkpoint pos and PostgreSQL sends again every transaction after it. A replayed
// transaction gets the same token as before, so the caller must make sure no delivery
// report of the old producer reaches the Ledger after Reset.
func (l *Ledger) Reset(pos LSN) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.start, l.count, l.open = 0, 0, false
	l.inflight, l.ringCommitted = 0, 0
	l.safe, l.confirmed, l.last = pos, pos, 0
	l.retired, l.retiredHead, l.retiredEvents = l.retired[:0], 0, 0
	l.confirmedAt = time.Time{}
	l.refusals = nil
	l.shrink()
}

// committed returns the number of committed transactions in the ring.
func (l *Ledger) committed() int {
	if l.open {
		return l.count - 1
	}
	return l.count
}
