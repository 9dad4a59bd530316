package checkpoint

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Conn is the part of *pgx.Conn that PostgresStore uses; *pgxpool.Pool and
// pgx.Tx have it too. It must be an ordinary connection, not the replication one.
type Conn interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// PostgresStore keeps checkpoints in a PostgreSQL table, one row per slot.
//
// It exists for high availability: a standby pgoutbox on another host reads the
// same row, whereas a local file on that host would be stale and look like a gap.
// Put the table in the database the slot belongs to but not in the outbox
// publication, or every checkpoint would be published.
//
// Save is fenced: it never moves a slot's row back to an older position of the same
// cluster and database. An instance frozen past wal_sender_timeout (SIGSTOP, a VM
// pause) wakes up believing it still streams while its standby has taken over and
// confirmed further; its Save gets ErrStale instead of writing an old position that
// a later start would read as a gap. Force writes whatever the row holds.
//
// Every Save writes WAL, so callers should save only when the LSN moved; otherwise
// the checkpoint's own transactions keep the position moving forever.
type PostgresStore struct {
	conn  Conn
	table string // as given, for messages
	ident string // quoted for SQL
	err   error  // a table name that cannot be used
	// timelines: the table has the timeline column (tables created by older
	// versions lack it until an owner adds it; see Init).
	timelines bool

	loadSQL, saveSQL, forceSQL string
}

// NewPostgres returns a store that keeps checkpoints in table, written "name" or
// "schema.name" (e.g. "public.pgoutbox_checkpoint"). The parts are quoted as
// given, without case folding, so write them as they appear in pg_class. An
// unqualified name is resolved through the connection's search_path. A malformed
// name is reported by Init, Load and Save.
func NewPostgres(conn Conn, table string) *PostgresStore {
	s := &PostgresStore{conn: conn, table: table}
	parts := strings.Split(table, ".")
	for _, p := range parts {
		if p == "" || len(parts) > 2 {
			s.err = fmt.Errorf("table name %q: want name or schema.name", table)
			return s
		}
	}
	s.ident = pgx.Identifier(parts).Sanitize()
	s.prepare(true)
	return s
}

// prepare builds the statements, with or without the timeline column.
func (s *PostgresStore) prepare(timelines bool) {
	s.timelines = timelines
	tl, tlArg, tlSet := "0", "", ""
	if timelines {
		tl, tlArg, tlSet = "timeline", ", timeline", ", timeline = excluded.timeline"
	}
	s.loadSQL = "SELECT lsn::text, slot, system_id, database, " + tl + ", updated_at FROM " + s.ident + " WHERE slot = $1"
	values := "$1, $2::pg_lsn, $3, $4, $5"
	if timelines {
		values += ", $6"
	}
	// set_config(..., true) raises synchronous_commit for this statement's own
	// transaction; see Save.
	insert := "INSERT INTO " + s.ident + " AS cp (slot, lsn, system_id, database, updated_at" + tlArg + ") " +
		"SELECT " + values + " FROM (SELECT set_config('synchronous_commit', " +
		"CASE current_setting('synchronous_commit') WHEN 'remote_apply' THEN 'remote_apply' ELSE 'on' END, true)) AS durable " +
		"ON CONFLICT (slot) DO UPDATE SET lsn = excluded.lsn, system_id = excluded.system_id, " +
		"database = excluded.database, updated_at = excluded.updated_at" + tlSet
	s.forceSQL = insert
	s.saveSQL = insert + " WHERE cp.lsn <= excluded.lsn OR cp.system_id <> excluded.system_id OR cp.database <> excluded.database"
}

// Timelines reports whether the table stores the timeline. One created by an older
// pgoutbox does not until its owner runs the ALTER TABLE that Init could not; until
// then a checkpoint ahead of the slot is trusted on any timeline.
func (s *PostgresStore) Timelines() bool { return s.timelines }

// Describe returns "postgres table <table>".
func (s *PostgresStore) Describe() string {
	return "postgres table " + s.table
}

// createSQL creates the table; it is also what Init tells an administrator to run.
func (s *PostgresStore) createSQL() string {
	return "CREATE TABLE IF NOT EXISTS " + s.ident + " (" +
		"slot text PRIMARY KEY, " +
		"lsn pg_lsn NOT NULL, " +
		"system_id text NOT NULL, " +
		"database text NOT NULL, " +
		"updated_at timestamptz NOT NULL DEFAULT now(), " +
		"timeline integer NOT NULL DEFAULT 0)"
}

// alterSQL adds the timeline column to a table created by an older pgoutbox.
func (s *PostgresStore) alterSQL() string {
	return "ALTER TABLE " + s.ident + " ADD COLUMN IF NOT EXISTS timeline integer NOT NULL DEFAULT 0"
}

// Init creates the table if it does not exist and checks that the connection's
// role can use it.
//
// A least-privilege role needs no CREATE privilege when the table already exists
// (CREATE TABLE IF NOT EXISTS would fail on the schema privilege even then, so
// Init looks first). When the table neither exists nor can be created, the error
// gives the SQL an administrator should run.
func (s *PostgresStore) Init(ctx context.Context) error {
	if s.err != nil {
		return fmt.Errorf("init checkpoint table: %w", s.err)
	}
	exists, role, err := s.lookup(ctx)
	if err != nil {
		return fmt.Errorf("init checkpoint table %s: %w", s.table, err)
	}
	if !exists {
		if _, err := s.conn.Exec(ctx, s.createSQL()); err != nil {
			// Another instance may have created it at the same time.
			if again, _, lerr := s.lookup(ctx); lerr != nil || !again {
				return s.createError(role, err)
			}
		}
	}
	if err := s.check(ctx, role); err != nil {
		return err
	}
	var timelines bool
	if err := s.conn.QueryRow(ctx, `SELECT EXISTS (SELECT FROM pg_attribute WHERE attrelid = $1::text::regclass AND attname = 'timeline' AND NOT attisdropped)`,
		s.ident).Scan(&timelines); err != nil {
		return fmt.Errorf("init checkpoint table %s: %w", s.table, err)
	}
	if !timelines {
		// A table of an older pgoutbox. Only its owner may add the column; without
		// it pgoutbox works as before (see Timelines).
		if _, err := s.conn.Exec(ctx, s.alterSQL()); err == nil {
			timelines = true
		}
	}
	s.prepare(timelines)
	return nil
}

// AlterSQL is what an owner runs to let the table store timelines (see Timelines).
func (s *PostgresStore) AlterSQL() string { return s.alterSQL() }

// lookup reports whether the table exists and the name of the current role.
func (s *PostgresStore) lookup(ctx context.Context) (exists bool, role string, err error) {
	err = s.conn.QueryRow(ctx,
		"SELECT to_regclass($1) IS NOT NULL, current_user::text", s.ident).Scan(&exists, &role)
	return exists, role, err
}

func (s *PostgresStore) createError(role string, err error) error {
	grant := "GRANT SELECT, INSERT, UPDATE ON " + s.ident + " TO " + pgx.Identifier{role}.Sanitize()
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "42501" { // insufficient_privilege
		return fmt.Errorf("init checkpoint table %s: the table does not exist and role %q may not create it (%w); as an administrator run: %s; %s",
			s.table, role, err, s.createSQL(), grant)
	}
	return fmt.Errorf("init checkpoint table %s: create: %w; to create it as an administrator run: %s; %s",
		s.table, err, s.createSQL(), grant)
}

// check fails early, with the fix, when the role cannot use the table, instead of
// at the first confirm.
func (s *PostgresStore) check(ctx context.Context, role string) error {
	grant := "GRANT SELECT, INSERT, UPDATE ON " + s.ident + " TO " + pgx.Identifier{role}.Sanitize()
	var sel, ins, upd bool
	err := s.conn.QueryRow(ctx,
		"SELECT has_table_privilege($1, 'SELECT'), has_table_privilege($1, 'INSERT'), has_table_privilege($1, 'UPDATE')",
		s.ident).Scan(&sel, &ins, &upd)
	if err != nil {
		return fmt.Errorf("init checkpoint table %s: check privileges: %w", s.table, err)
	}
	if !sel || !ins || !upd {
		return fmt.Errorf("init checkpoint table %s: role %q needs SELECT, INSERT and UPDATE on it; as an administrator run: %s",
			s.table, role, grant)
	}
	if _, err := s.conn.Exec(ctx, "SELECT slot, lsn, system_id, database, updated_at FROM "+s.ident+" LIMIT 0"); err != nil {
		return fmt.Errorf("init checkpoint table %s: the table exists but does not have the expected columns (%w); expected: %s",
			s.table, err, s.createSQL())
	}
	return nil
}

// Load returns the checkpoint saved for slot, or an error wrapping ErrNotFound.
func (s *PostgresStore) Load(ctx context.Context, slot string) (Checkpoint, error) {
	if s.err != nil {
		return Checkpoint{}, fmt.Errorf("load checkpoint: %w", s.err)
	}
	var cp Checkpoint
	var lsn string
	err := s.conn.QueryRow(ctx, s.loadSQL, slot).Scan(&lsn, &cp.Slot, &cp.SystemID, &cp.Database, &cp.Timeline, &cp.UpdatedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return Checkpoint{}, fmt.Errorf("load checkpoint from postgres table %s: slot %q: %w", s.table, slot, ErrNotFound)
	}
	if err != nil {
		return Checkpoint{}, fmt.Errorf("load checkpoint from postgres table %s: %w", s.table, err)
	}
	if cp.LSN, err = pglogrepl.ParseLSN(lsn); err != nil {
		return Checkpoint{}, fmt.Errorf("load checkpoint from postgres table %s: lsn %q: %w", s.table, lsn, err)
	}
	return cp, nil
}

// Save inserts or replaces the slot's row, unless the row holds a newer position of
// the same cluster and database: then it returns ErrStale and writes nothing. A zero
// UpdatedAt is stored as the time of the Save; PostgreSQL keeps microseconds.
//
// The statement raises synchronous_commit to on for its own transaction (keeping
// remote_apply), so Save returns only once the commit is flushed even where the
// server or role default is off: an asynchronous commit could be lost in a server
// crash after pgoutbox had confirmed the LSN. set_config with is_local in the
// statement itself does this in one round trip and without an explicit
// transaction that a failure could leave open.
func (s *PostgresStore) Save(ctx context.Context, cp Checkpoint) error {
	return s.write(ctx, s.saveSQL, cp)
}

// Force inserts or replaces the slot's row whatever it holds.
func (s *PostgresStore) Force(ctx context.Context, cp Checkpoint) error {
	return s.write(ctx, s.forceSQL, cp)
}

func (s *PostgresStore) write(ctx context.Context, sql string, cp Checkpoint) error {
	if s.err != nil {
		return fmt.Errorf("save checkpoint: %w", s.err)
	}
	if cp.Slot == "" {
		return fmt.Errorf("save checkpoint in postgres table %s: checkpoint has no slot", s.table)
	}
	if cp.PartialEvents != 0 {
		return fmt.Errorf("save checkpoint in postgres table %s: a partial position is not a local checkpoint", s.table)
	}
	if cp.UpdatedAt.IsZero() {
		cp.UpdatedAt = time.Now()
	}
	args := []any{cp.Slot, cp.LSN.String(), cp.SystemID, cp.Database, cp.UpdatedAt}
	if s.timelines {
		args = append(args, cp.Timeline)
	}
	tag, err := s.conn.Exec(ctx, sql, args...)
	if err != nil {
		return fmt.Errorf("save checkpoint in postgres table %s: %w", s.table, err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("save checkpoint %s in postgres table %s: %w", cp.LSN, s.table, ErrStale)
	}
	return nil
}
