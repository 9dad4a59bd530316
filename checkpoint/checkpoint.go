// Package checkpoint stores the last LSN that pgoutbox confirmed to PostgreSQL.
//
// The checkpoint is written before every confirm, so after a crash pgoutbox replays
// from a position it knows every event before was acknowledged by Kafka. A checkpoint
// that is behind the truth only causes duplicates; one that is ahead loses events,
// which is why stores must make a Save durable before returning.
package checkpoint

import (
	"context"
	"errors"
	"time"

	"github.com/jackc/pglogrepl"
)

// Checkpoint is the durable position of one slot.
//
// SystemID and Database identify the PostgreSQL cluster and database the LSN belongs
// to: an LSN from another cluster means nothing, and starting from it would skip or
// replay events at random, so callers compare them before trusting LSN. Timeline is
// the server's timeline when it was saved: after a promotion, WAL past the switch
// point differs from what the checkpoint saw (0: unknown, from an older pgoutbox).
//
// The exactly-once checkpoint record in Kafka is a Checkpoint too. It may describe a
// PostgreSQL transaction split across Kafka transactions: PartialFinal is its final
// LSN and PartialEvents how many of its events, in stream order, are in Kafka. Local
// stores never hold a partial position.
type Checkpoint struct {
	LSN           pglogrepl.LSN
	Slot          string
	SystemID      string
	Database      string
	Timeline      int32
	PartialFinal  pglogrepl.LSN
	PartialEvents int
	UpdatedAt     time.Time
}

// ErrNotFound is returned by Load when no checkpoint was saved yet.
var ErrNotFound = errors.New("checkpoint not found")

// ErrStale is returned by Save when a shared store holds a newer position for the
// same slot and cluster: another instance confirmed past this one since (this one
// was frozen, or is a zombie), and writing would move the checkpoint back, which a
// later start would read as a gap.
var ErrStale = errors.New("the stored checkpoint is newer: another instance confirmed past this one")

// Store loads and saves checkpoints. Save and Force must be durable when they return.
type Store interface {
	// Load returns the saved checkpoint for the slot, or ErrNotFound.
	Load(ctx context.Context, slot string) (Checkpoint, error)
	// Save durably replaces the slot's checkpoint, or returns ErrStale when the
	// store holds a newer position of the same origin.
	Save(ctx context.Context, cp Checkpoint) error
	// Force durably replaces the slot's checkpoint whatever it holds: for a new
	// slot, --accept-gap, or a start behind it after a timeline switch.
	Force(ctx context.Context, cp Checkpoint) error
	// Describe names the store for logs and errors, e.g. "file /var/lib/pgoutbox/cp".
	Describe() string
}
