package relay

import (
	"context"
	"time"

	"github.com/pgoutbox/pgoutbox/source"
)

// committer decides when produced events count as published, and so how far the
// loop may confirm. At-least-once, an acknowledged event is published
// (ackCommitter). Exactly-once, events are published when the Kafka transaction
// that holds them commits together with a checkpoint record (txnCommitter).
type committer interface {
	// begin is called before an event is produced: the transactional committer
	// opens a Kafka transaction if none is open.
	begin() error
	// produced counts one event produced into the open Kafka transaction.
	produced()
	// due reports whether to commit now, and otherwise when a commit falls due
	// (zero: none is). full says the ledger is full: nothing more can be confirmed
	// before a commit.
	due(now time.Time, full bool) (bool, time.Time)
	// commit publishes what was produced. at is how far the stream was read.
	// keepAlive keeps the walsender hearing from pgoutbox while commit waits.
	commit(ctx context.Context, at streamPos, keepAlive func() error) error
	// abort drops what was produced since the last commit (a backfill
	// interrupted by a shutdown).
	abort(ctx context.Context) error
	// confirmable caps the ledger's safe position at what may be confirmed.
	confirmable(safe source.LSN) source.LSN
	// skip reports whether Kafka already has the index-th event (1-based) of the
	// transaction with final LSN final, so it must not be produced again.
	skip(final source.LSN, index int) bool
	// pending reports whether something was produced since the last commit.
	pending() bool
}

// streamPos is how far the loop has read the stream when it commits: end is the
// end LSN of the newest transaction read whole; inside a transaction, final is its
// final LSN and events how many of its events were read, skipped ones included.
type streamPos struct {
	end    source.LSN
	final  source.LSN
	events int
}

// ackCommitter is at-least-once: an event is published when Kafka acknowledged it.
type ackCommitter struct{}

func (ackCommitter) begin() error                                          { return nil }
func (ackCommitter) produced()                                             {}
func (ackCommitter) due(time.Time, bool) (bool, time.Time)                 { return false, time.Time{} }
func (ackCommitter) commit(context.Context, streamPos, func() error) error { return nil }
func (ackCommitter) abort(context.Context) error                           { return nil }
func (ackCommitter) confirmable(safe source.LSN) source.LSN                { return safe }
func (ackCommitter) skip(source.LSN, int) bool                             { return false }
func (ackCommitter) pending() bool                                         { return false }
