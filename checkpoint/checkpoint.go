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
// replay events at random, so callers compare them before trusting LSN.
type Checkpoint struct {
	LSN       pglogrepl.LSN `json:"lsn"`
	Slot      string        `json:"slot"`
	SystemID  string        `json:"system_id"`
	Database  string        `json:"database"`
	UpdatedAt time.Time     `json:"updated_at"`
}

// ErrNotFound is returned by Load when no checkpoint was saved yet.
var ErrNotFound = errors.New("checkpoint not found")

// Store loads and saves checkpoints. Save must be durable when it returns.
type Store interface {
	// Load returns the saved checkpoint for the slot, or ErrNotFound.
	Load(ctx context.Context, slot string) (Checkpoint, error)
	// Save durably replaces the slot's checkpoint.
	Save(ctx context.Context, cp Checkpoint) error
	// Describe names the store for logs and errors, e.g. "file /var/lib/pgoutbox/cp".
	Describe() string
}
