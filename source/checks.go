package source

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

const defaultConnectTimeout = 10 * time.Second

// Server describes the PostgreSQL server and database pgoutbox streams from.
type Server struct {
	Version  int    // server_version_num, e.g. 150004
	SystemID string // pg_control_system().system_identifier: names the cluster
	Database string
	User     string
	WALLevel string
}

// Server reads the facts about the server that decide whether pgoutbox can run.
func (c *Conn) Server(ctx context.Context) (Server, error) {
	var s Server
	err := c.conn.QueryRow(ctx, `SELECT current_setting('server_version_num')::int,
		current_setting('wal_level'), current_database(), current_user`).Scan(&s.Version, &s.WALLevel, &s.Database, &s.User)
	if err != nil {
		return s, fmt.Errorf("read server settings: %w", err)
	}
	// pg_control_system() is readable by every role since PostgreSQL 10; on a server
	// that restricts it, IDENTIFY_SYSTEM on the replication connection says the same.
	if err := c.conn.QueryRow(ctx, `SELECT system_identifier::text FROM pg_control_system()`).Scan(&s.SystemID); err != nil {
		s.SystemID = ""
	}
	return s, nil
}

// CheckServer rejects servers pgoutbox cannot stream from.
func CheckServer(s Server) error {
	if s.Version < 100000 {
		return setupErr(nil, "PostgreSQL %d.%d is too old: pgoutbox needs PostgreSQL 10 or newer for logical replication", s.Version/10000, s.Version/100%100)
	}
	if s.WALLevel != "logical" {
		return setupErr(nil, "wal_level is %q but logical replication needs wal_level = logical; set it in postgresql.conf (or ALTER SYSTEM SET wal_level = logical) and restart PostgreSQL", s.WALLevel)
	}
	return nil
}

// CheckRole verifies the role may stream (REPLICATION) and read the table (SELECT);
// with an empty table, only the first.
func (c *Conn) CheckRole(ctx context.Context, table string) error {
	var repl, super bool
	var user string
	err := c.conn.QueryRow(ctx, `SELECT rolreplication, rolsuper, rolname FROM pg_roles WHERE rolname = current_user`).Scan(&repl, &super, &user)
	if err != nil {
		return fmt.Errorf("read role attributes: %w", err)
	}
	if !repl && !super {
		return setupErr(nil, "role %q lacks the REPLICATION attribute; run ALTER ROLE %s REPLICATION as a superuser (see sql/role.sql)", user, pgx.Identifier{user}.Sanitize())
	}
	if table == "" {
		return nil // a tableless outbox reads no table
	}
	var canSelect bool
	if err := c.conn.QueryRow(ctx, `SELECT has_table_privilege(current_user, $1::text::regclass, 'SELECT')`, regName(table)).Scan(&canSelect); err != nil {
		return fmt.Errorf("check SELECT on %s: %w", table, err)
	}
	if !canSelect {
		return setupErr(nil, "role %q lacks SELECT on %s; run GRANT SELECT ON %s TO %s (see sql/role.sql)", user, table, table, pgx.Identifier{user}.Sanitize())
	}
	return nil
}

// regName quotes "schema.table" for a regclass cast. pgoutbox takes names as
// PostgreSQL stores them (as pgoutput and pg_publication_tables report them), so a
// table created as "Outbox" is --table public.Outbox, matched exactly, not folded.
func regName(table string) string {
	schema, rel, _ := strings.Cut(table, ".")
	return pgx.Identifier{schema, rel}.Sanitize()
}

// Column is one column of the outbox table.
type Column struct {
	Name     string
	Type     string // format_type, e.g. "jsonb", "character varying(64)"
	BaseType string // for a domain, the type it is based on; else Type
	// NotNull is pg_attribute.attnotnull, which a Relation message does not carry:
	// Debezium's json-envelope schemas mark a NOT NULL column "optional":false.
	NotNull bool
}

// Columns lists the table's columns, or a SetupError when the table does not exist.
func (c *Conn) Columns(ctx context.Context, table string) ([]Column, error) {
	var exists bool
	if err := c.conn.QueryRow(ctx, `SELECT to_regclass($1) IS NOT NULL`, regName(table)).Scan(&exists); err != nil {
		return nil, fmt.Errorf("look up table %s: %w", table, err)
	}
	if !exists {
		return nil, setupErr(nil, "table %s does not exist; create it (see sql/outbox.sql) or name it with --table", table)
	}
	rows, err := c.conn.Query(ctx, `SELECT a.attname, format_type(a.atttypid, a.atttypmod),
			format_type(CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE a.atttypid END, NULL), a.attnotnull
		FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
		WHERE a.attrelid = $1::text::regclass AND a.attnum > 0 AND NOT a.attisdropped
		ORDER BY a.attnum`, regName(table))
	if err != nil {
		return nil, fmt.Errorf("read columns of %s: %w", table, err)
	}
	cols, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Column, error) {
		var col Column
		err := r.Scan(&col.Name, &col.Type, &col.BaseType, &col.NotNull)
		return col, err
	})
	if err != nil {
		return nil, fmt.Errorf("read columns of %s: %w", table, err)
	}
	return cols, nil
}

// payloadTypes are the base types whose stored form can be a Kafka value as is.
var payloadTypes = map[string]bool{"jsonb": true, "json": true, "text": true, "character varying": true, "character": true, "bytea": true}

// CheckColumns verifies that every mapped column exists and that the payload column
// has a type whose stored form is a sensible Kafka value.
func CheckColumns(table string, cols []Column, mapped []string, payload string) error {
	byName := map[string]Column{}
	var names []string
	for _, c := range cols {
		byName[c.Name] = c
		names = append(names, c.Name)
	}
	for _, m := range mapped {
		if _, ok := byName[m]; !ok {
			return setupErr(nil, "table %s has no column %q (it has %s); set the column flags to match the table", table, m, strings.Join(names, ", "))
		}
	}
	base := byName[payload].BaseType
	if i := strings.IndexByte(base, '('); i >= 0 {
		base = base[:i]
	}
	if !payloadTypes[base] {
		return setupErr(nil, "payload column %q of %s has type %s; pgoutbox publishes jsonb, json, text, varchar or bytea payloads", payload, table, byName[payload].Type)
	}
	return nil
}

// Publication is a publication's relevant settings.
type Publication struct {
	Name       string
	AllTables  bool
	Insert     bool
	Update     bool
	Delete     bool
	HasTable   bool // the outbox table is in the publication
	TableCount int
}

// Publication reads the publication, or reports found=false.
func (c *Conn) Publication(ctx context.Context, name, table string) (pub Publication, found bool, err error) {
	schema, rel, _ := strings.Cut(table, ".")
	err = c.conn.QueryRow(ctx, `SELECT p.pubname, p.puballtables, p.pubinsert, p.pubupdate, p.pubdelete,
			EXISTS (SELECT 1 FROM pg_publication_tables t WHERE t.pubname = p.pubname AND t.schemaname = $2 AND t.tablename = $3),
			(SELECT count(*) FROM pg_publication_tables t WHERE t.pubname = p.pubname)
		FROM pg_publication p WHERE p.pubname = $1`, name, schema, rel).
		Scan(&pub.Name, &pub.AllTables, &pub.Insert, &pub.Update, &pub.Delete, &pub.HasTable, &pub.TableCount)
	if errors.Is(err, pgx.ErrNoRows) {
		return pub, false, nil
	}
	if err != nil {
		return pub, false, fmt.Errorf("read publication %q: %w", name, err)
	}
	return pub, true, nil
}

// CheckPublication verifies an existing publication publishes the table's inserts.
func CheckPublication(pub Publication, table string) error {
	if !pub.HasTable {
		return setupErr(nil, "publication %q does not include table %s (was the table dropped and re-created?); run ALTER PUBLICATION %s ADD TABLE %s, or name another publication with --publication", pub.Name, table, pub.Name, table)
	}
	if !pub.Insert {
		return setupErr(nil, "publication %q does not publish inserts; run ALTER PUBLICATION %s SET (publish = 'insert')", pub.Name, pub.Name)
	}
	return nil
}

// CreatePublication creates "FOR TABLE t1, t2 WITH (publish = 'insert')", or with no
// table a publication of no table: pgoutput still sends logical messages.
func (c *Conn) CreatePublication(ctx context.Context, name string, tables []string) error {
	sql := fmt.Sprintf(`CREATE PUBLICATION %s`, pgx.Identifier{name}.Sanitize())
	if len(tables) > 0 {
		idents := make([]string, len(tables))
		for i, t := range tables {
			schema, rel, _ := strings.Cut(t, ".")
			idents[i] = pgx.Identifier{schema, rel}.Sanitize()
		}
		sql = fmt.Sprintf(`CREATE PUBLICATION %s FOR TABLE %s WITH (publish = 'insert')`,
			pgx.Identifier{name}.Sanitize(), strings.Join(idents, ", "))
	}
	if _, err := c.conn.Exec(ctx, sql); err != nil {
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && pgErr.Code == "42501" {
			who := "the tables' owner"
			if len(tables) == 0 {
				who = "a role with CREATE on the database"
			}
			return setupErr(nil, "publication %q does not exist and this role may not create it (%s); run as %s: %s (see sql/publication.sql)", name, pgErr.Message, who, sql)
		}
		return fmt.Errorf("create publication %q: %w", name, err)
	}
	return nil
}

// Slot is a row of pg_replication_slots.
type Slot struct {
	Name          string
	Plugin        string
	Type          string // logical or physical
	Database      string
	Active        bool
	ActivePID     int32
	Temporary     bool
	RestartLSN    LSN
	ConfirmedLSN  LSN
	WALStatus     string // reserved, extended, unreserved, lost (PostgreSQL 13+)
	RetainedBytes int64  // WAL kept for the slot: current WAL position - restart_lsn
}

// Slot reads the slot, or reports found=false.
func (c *Conn) Slot(ctx context.Context, name string) (s Slot, found bool, err error) {
	var plugin, db, walStatus *string
	var pid *int32
	var restart, confirmed *LSN
	var retained *int64
	err = c.conn.QueryRow(ctx, `SELECT slot_name, plugin, slot_type, database, active, active_pid, temporary,
			restart_lsn, confirmed_flush_lsn, wal_status,
			CASE WHEN restart_lsn IS NULL THEN NULL ELSE
				pg_wal_lsn_diff(CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END, restart_lsn)::bigint END
		FROM pg_replication_slots WHERE slot_name = $1`, name).
		Scan(&s.Name, &plugin, &s.Type, &db, &s.Active, &pid, &s.Temporary, &restart, &confirmed, &walStatus, &retained)
	if errors.Is(err, pgx.ErrNoRows) {
		return s, false, nil
	}
	if err != nil {
		return s, false, fmt.Errorf("read slot %q: %w", name, err)
	}
	s.Plugin, s.Database, s.WALStatus = deref(plugin), deref(db), deref(walStatus)
	if pid != nil {
		s.ActivePID = *pid
	}
	if restart != nil {
		s.RestartLSN = *restart
	}
	if confirmed != nil {
		s.ConfirmedLSN = *confirmed
	}
	if retained != nil {
		s.RetainedBytes = *retained
	}
	return s, true, nil
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// CheckSlot verifies an existing slot can serve pgoutbox.
func CheckSlot(s Slot, database string) error {
	switch {
	case s.Type != "logical":
		return setupErr(nil, "replication slot %q is a %s slot; pgoutbox needs a logical slot with plugin pgoutput: name another with --slot", s.Name, s.Type)
	case s.Plugin != "pgoutput":
		return setupErr(nil, "replication slot %q uses plugin %q, pgoutbox needs pgoutput; name another slot with --slot, or drop this one if nothing else uses it", s.Name, s.Plugin)
	case s.Database != database:
		return setupErr(nil, "replication slot %q belongs to database %q, not %q; name another slot with --slot", s.Name, s.Database, database)
	}
	return nil
}

// SlotFailover reports whether a slot is a failover slot (PostgreSQL 17+; false before).
func (c *Conn) SlotFailover(ctx context.Context, name string, serverVersion int) (bool, error) {
	if serverVersion < 170000 {
		return false, nil
	}
	var failover bool
	if err := c.conn.QueryRow(ctx, `SELECT failover FROM pg_replication_slots WHERE slot_name = $1`, name).Scan(&failover); err != nil {
		return false, fmt.Errorf("read slot %q: %w", name, err)
	}
	return failover, nil
}

// WalSenderTimeout returns the server's wal_sender_timeout (0: disabled).
func (c *Conn) WalSenderTimeout(ctx context.Context) (time.Duration, error) {
	var ms int64
	if err := c.conn.QueryRow(ctx, `SELECT setting::bigint FROM pg_settings WHERE name = 'wal_sender_timeout'`).Scan(&ms); err != nil {
		return 0, fmt.Errorf("read wal_sender_timeout: %w", err)
	}
	return time.Duration(ms) * time.Millisecond, nil
}
