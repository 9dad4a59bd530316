// Package relay runs pgoutbox's pipeline: it streams the outbox table's inserts from a
// replication slot, produces them to Kafka, and confirms the slot only after Kafka has
// acknowledged them and the checkpoint is saved.
//
// A session is one replication connection plus the state that goes with it: the
// ledger of what is in flight, the loop that reads, produces and confirms, the
// goroutine that records delivery reports, and a committer (at-least-once or Kafka
// transactions). Any error ends the session; Run starts a new one from the checkpoint
// after a capped exponential backoff, unless the error is one a retry cannot fix (a
// setup mistake, a gap, a row that cannot be published under --on-error=fail).
package relay

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/rs/zerolog"

	"github.com/pgoutbox/pgoutbox/checkpoint"
	"github.com/pgoutbox/pgoutbox/metrics"
	"github.com/pgoutbox/pgoutbox/outbox"
	"github.com/pgoutbox/pgoutbox/sink"
	"github.com/pgoutbox/pgoutbox/source"
)

// Error policies for rows Kafka cannot take.
const (
	OnErrorFail       = "fail"
	OnErrorDeadLetter = "dead-letter"
)

// Checkpoint stores.
const (
	StoreFile     = "file"
	StorePostgres = "postgres"
)

// Config is everything a relay needs. main builds it from flags.
type Config struct {
	PostgresURL string
	Slot        string
	Publication string
	Mapping     outbox.Config
	Kafka       sink.Config

	CheckpointStore string // StoreFile or StorePostgres
	CheckpointFile  string
	CheckpointTable string

	// MaxInFlight bounds events produced but not acknowledged; reading from
	// PostgreSQL pauses at the limit.
	MaxInFlight int
	// StatusInterval is how often the confirmed position is sent to PostgreSQL. It
	// must stay well below the server's wal_sender_timeout.
	StatusInterval time.Duration
	// ReceiveTimeout: silence from the server for this long means the replication
	// connection is dead (a partition that drops packets). 0: the server's
	// wal_sender_timeout; negative: off.
	ReceiveTimeout time.Duration
	// ShutdownTimeout bounds the wait for in-flight acks on shutdown.
	ShutdownTimeout time.Duration
	// AcceptGap starts despite a gap between the checkpoint and the slot.
	AcceptGap bool
	// OnError is the policy for rows Kafka cannot take.
	OnError         string
	DeadLetterTopic string
	// SyncGuard is auto, on or off: hold each transaction back until it is visible
	// on the primary (for synchronous replication; auto: when it is configured).
	SyncGuard string
	// SlotFailover creates the slot as a PostgreSQL 17 failover slot.
	SlotFailover bool
	// RetryActive is how long to wait before retrying a slot another process streams from.
	RetryActive time.Duration
	// MaxBackoff caps the wait between reconnect attempts.
	MaxBackoff time.Duration

	// TransactionHeaders adds pgoutbox.lsn, pgoutbox.xid and pgoutbox.index to
	// every record.
	TransactionHeaders bool

	// MessagesPrefix, when set, also publishes transactional logical decoding
	// messages with this prefix (pg_logical_emit_message), mapped from JSON.
	MessagesPrefix string

	// Backfill publishes the rows that exist when the slot is created (first start
	// only), read in the slot's snapshot; BackfillWhere selects them, BackfillOrder
	// orders them.
	Backfill      bool
	BackfillWhere string
	BackfillOrder string

	// ExactlyOnce publishes with Kafka transactions that also carry the checkpoint.
	ExactlyOnce bool
	// CheckpointTopic is the compacted topic of the exactly-once checkpoint records.
	CheckpointTopic string
	// TransactionalID names the transactional producer; empty derives it from the slot.
	TransactionalID string
	// TxnInterval is the longest a Kafka transaction stays open: read_committed
	// consumers see events at most this late.
	TxnInterval time.Duration
	// TxnMaxEvents commits a Kafka transaction once it holds this many events, even
	// in the middle of a PostgreSQL transaction.
	TxnMaxEvents int

	Log     zerolog.Logger
	Metrics *metrics.Metrics
}

// Validate checks the configuration without touching PostgreSQL or Kafka.
func (c *Config) Validate() error {
	if c.PostgresURL == "" {
		return errors.New("--postgres-url is required")
	}
	if c.Kafka.Brokers == "" {
		return errors.New("--kafka-brokers is required")
	}
	mapping := c.Mapping
	if mapping.FirstTable() == "" {
		if c.MessagesPrefix == "" {
			return errors.New("--table must not be empty unless --messages-prefix publishes a tableless outbox")
		}
		if c.Backfill {
			return errors.New("--backfill needs a --table")
		}
		mapping.Tables = []string{"message.outbox"} // validate the rest of the mapping
	}
	if err := mapping.Validate(); err != nil {
		return err
	}
	if err := validSlotName(c.Slot); err != nil {
		return err
	}
	if c.Publication == "" {
		return errors.New("--publication must not be empty")
	}
	switch c.CheckpointStore {
	case StoreFile:
		if c.CheckpointFile == "" {
			return errors.New("--checkpoint-file must not be empty")
		}
	case StorePostgres:
		if _, _, err := outbox.SplitTable(c.CheckpointTable); err != nil {
			return fmt.Errorf("--checkpoint-table: %w", err)
		}
	default:
		return fmt.Errorf("--checkpoint-store %q: want file or postgres", c.CheckpointStore)
	}
	switch c.OnError {
	case OnErrorFail:
	case OnErrorDeadLetter:
		if err := outbox.ValidTopic(c.DeadLetterTopic); err != nil {
			return fmt.Errorf("--dead-letter-topic: %w", err)
		}
	default:
		return fmt.Errorf("--on-error %q: want fail or dead-letter", c.OnError)
	}
	switch c.SyncGuard {
	case "", SyncGuardAuto, SyncGuardOn, SyncGuardOff:
	default:
		return fmt.Errorf("--sync-guard %q: want auto, on or off", c.SyncGuard)
	}
	if c.MaxInFlight < 1 {
		return errors.New("--max-in-flight must be at least 1")
	}
	if c.StatusInterval <= 0 {
		return errors.New("--status-interval must be positive")
	}
	if err := sink.CheckProperties(c.Kafka.Properties); err != nil {
		return err
	}
	if c.ExactlyOnce {
		if err := outbox.ValidTopic(c.CheckpointTopic); err != nil {
			return fmt.Errorf("--checkpoint-topic: %w", err)
		}
		if c.TxnInterval <= 0 || c.TxnMaxEvents < 1 {
			return errors.New("--txn-interval and --txn-max-events must be positive")
		}
	}
	return nil
}

// TxnID is the transactional.id of the exactly-once producer: fixed per slot, so a
// restarted or standby instance fences the one before it.
func (c *Config) TxnID() string {
	if c.TransactionalID != "" {
		return c.TransactionalID
	}
	return "pgoutbox-" + c.Slot
}

// validSlotName applies PostgreSQL's rule for slot names (slot.c ReplicationSlotValidateName).
func validSlotName(name string) error {
	if name == "" || len(name) > 63 {
		return fmt.Errorf("--slot %q: a slot name has 1 to 63 characters", name)
	}
	for _, c := range name {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_') {
			return fmt.Errorf("--slot %q: a slot name may contain only lower case letters, digits and underscores", name)
		}
	}
	return nil
}

// Permanent wraps an error no retry can fix.
type Permanent struct{ Err error }

func (e *Permanent) Error() string { return e.Err.Error() }
func (e *Permanent) Unwrap() error { return e.Err }

func permanent(err error) error { return &Permanent{Err: err} }

// IsPermanent reports whether Run gives up on err instead of retrying.
func IsPermanent(err error) bool {
	var p *Permanent
	var gap *GapError
	return errors.As(err, &p) || errors.As(err, &gap) || source.IsSetup(err)
}

// relay is the state that outlives a session.
type relay struct {
	cfg      Config
	log      zerolog.Logger
	m        *metrics.Metrics
	file     checkpoint.Store
	streamed bool // a session has streamed at least once
	iso      isolation
	// warnedTimeline: the checkpoint table's missing timeline column was logged;
	// loggedGuard: that the sync guard is on.
	warnedTimeline, loggedGuard bool
}

// Run streams until ctx ends or a permanent error. It returns nil after a clean
// shutdown in which every in-flight event was acknowledged and confirmed.
func Run(ctx context.Context, cfg Config) error {
	if err := cfg.Validate(); err != nil {
		return permanent(err)
	}
	if cfg.Metrics == nil {
		cfg.Metrics = metrics.New("dev")
	}
	if cfg.RetryActive == 0 {
		cfg.RetryActive = 5 * time.Second
	}
	if cfg.MaxBackoff == 0 {
		cfg.MaxBackoff = 30 * time.Second
	}
	if cfg.ShutdownTimeout == 0 {
		cfg.ShutdownTimeout = 30 * time.Second
	}
	r := &relay{cfg: cfg, log: cfg.Log, m: cfg.Metrics, iso: isolation{poison: map[string]outbox.RowError{}}}
	if cfg.CheckpointStore == StoreFile {
		r.file = checkpoint.NewFile(cfg.CheckpointFile)
	}
	const minBackoff = 250 * time.Millisecond
	backoff := minBackoff
	for attempt := 1; ; attempt++ {
		started := time.Now()
		err := r.session(ctx)
		if ctx.Err() != nil {
			return stopped(err)
		}
		if err == nil {
			err = errors.New("session ended without error")
		}
		if IsPermanent(err) {
			return err
		}
		if errors.Is(err, errLeaveIsolation) {
			r.iso.until = 0
			r.log.Info().Msg("past the refused batch; batching events again")
			continue // at once: nothing failed
		}
		var connErr *source.ConnectError
		if !r.streamed && errors.As(err, &connErr) {
			// Nothing ever worked: a wrong host or port, not an outage.
			return permanent(fmt.Errorf("%w; check --postgres-url", err))
		}
		r.m.Reconnects.Inc()
		r.m.Streaming.Set(0)
		var active *source.ErrSlotActive
		wait := backoff
		if errors.As(err, &active) {
			wait = cfg.RetryActive
			r.m.StandingBy(true)
			r.m.NotReady("streaming", metrics.ReasonStandingBy)
			r.log.Info().Str("slot", cfg.Slot).Str("reason", active.Msg).Dur("retry_in", wait).
				Msg("slot is in use by another process (another pgoutbox?); standing by")
		} else {
			r.m.StandingBy(false)
			if time.Since(started) > time.Minute {
				backoff, attempt, wait = minBackoff, 1, minBackoff
			}
			r.m.NotReady("streaming", "reconnecting: "+err.Error())
			r.log.Warn().Err(err).Int("attempt", attempt).Dur("retry_in", wait).Msg("pipeline stopped; reconnecting")
			backoff = min(backoff*2, cfg.MaxBackoff)
		}
		if !r.pause(ctx, jitter(wait)) {
			return nil
		}
	}
}

// stopped is what Run returns for a session that ended because ctx did: nil, unless
// the stop itself found something wrong (events left unconfirmed, a row that cannot
// be published). An error the stop caused — a connection or set-up interrupted by
// SIGTERM — is no failure.
func stopped(err error) error {
	var stop *stopError
	var row *RowFailedError
	if errors.As(err, &stop) || errors.As(err, &row) {
		return err
	}
	return nil
}

// pause waits d, marking the relay alive meanwhile (standing by or backing off is
// progress), and reports false if ctx ended first.
func (r *relay) pause(ctx context.Context, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for {
		r.m.Progress()
		left := time.Until(deadline)
		if left <= 0 {
			return true
		}
		t := time.NewTimer(min(left, time.Second))
		select {
		case <-ctx.Done():
			t.Stop()
			return false
		case <-t.C:
		}
	}
}

// jitter spreads retries of many instances by ±20%.
func jitter(d time.Duration) time.Duration {
	return d - d/5 + time.Duration(rand.Int64N(int64(d/5)*2+1))
}
