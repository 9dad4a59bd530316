// Package source owns everything PostgreSQL: the checks that a server, role, table,
// publication and slot are fit for pgoutbox, their creation, and the replication
// stream itself.
package source

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"strings"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// LSN is a PostgreSQL WAL position.
type LSN = pglogrepl.LSN

// SetupError is a mistake in the PostgreSQL setup or in pgoutbox's flags that no retry
// can fix: it names the problem and the fix in one sentence. Everything else this
// package returns (a lost connection, a restarting server) may pass on retry.
type SetupError struct {
	Msg string
	Err error
}

func (e *SetupError) Error() string {
	if e.Err != nil {
		return e.Msg + ": " + Redact(e.Err.Error())
	}
	return e.Msg
}

func (e *SetupError) Unwrap() error { return e.Err }

func setupErr(err error, format string, args ...any) error {
	return &SetupError{Msg: fmt.Sprintf(format, args...), Err: err}
}

// IsSetup reports whether err is a SetupError.
func IsSetup(err error) bool {
	var se *SetupError
	return errors.As(err, &se)
}

// Conn is a regular (non-replication) connection for checks and setup.
type Conn struct {
	conn *pgx.Conn
}

// Connect opens a regular connection. A wrong password, an unknown database or role
// is a SetupError; a refused or unreachable server is returned as it is, because a
// server that is restarting will be back.
func Connect(ctx context.Context, connString string) (*Conn, error) {
	cfg, err := pgx.ParseConfig(connString)
	if err != nil {
		return nil, setupErr(nil, "invalid --postgres-url %s: %s", Redact(connString), Redact(err.Error()))
	}
	if cfg.ConnectTimeout == 0 {
		cfg.ConnectTimeout = defaultConnectTimeout
	}
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, classifyConnect(err, cfg.Host, cfg.Port, cfg.User, cfg.Database)
	}
	return &Conn{conn: conn}, nil
}

// PgxConn exposes the connection for stores that keep state in PostgreSQL.
func (c *Conn) PgxConn() *pgx.Conn { return c.conn }

// Close closes the connection.
func (c *Conn) Close(ctx context.Context) error { return c.conn.Close(ctx) }

// classifyConnect turns connection failures a person must fix into SetupErrors.
func classifyConnect(err error, host string, port uint16, user, database string) error {
	where := fmt.Sprintf("%s:%d", host, port)
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch pgErr.Code {
		case "28P01", "28000":
			return setupErr(nil, "PostgreSQL at %s rejected role %q: %s; check the user and password in --postgres-url and pg_hba.conf", where, user, pgErr.Message)
		case "3D000":
			return setupErr(nil, "database %q does not exist on %s; check --postgres-url", database, where)
		case "53300":
			return setupErr(nil, "PostgreSQL at %s has no free connection slots (%s); raise max_connections or max_wal_senders", where, pgErr.Message)
		case "42501":
			return setupErr(nil, "role %q may not connect to %s: %s", user, where, pgErr.Message)
		}
	}
	msg := Redact(err.Error())
	if strings.Contains(msg, "no pg_hba.conf entry") {
		return setupErr(nil, "PostgreSQL at %s has no pg_hba.conf entry for role %q (for replication connections the database column must say \"replication\" or the rule must cover it)", where, user)
	}
	if strings.Contains(msg, "password authentication failed") || strings.Contains(msg, "server requested a password") {
		return setupErr(nil, "PostgreSQL at %s rejected the password for role %q; check --postgres-url", where, user)
	}
	if strings.Contains(msg, "x509:") || strings.Contains(msg, "tls:") {
		return setupErr(nil, "TLS to PostgreSQL at %s failed: %s; check sslmode, sslrootcert and the server certificate", where, msg)
	}
	if strings.Contains(msg, "server refused TLS") {
		return setupErr(nil, "PostgreSQL at %s does not accept TLS but --postgres-url requires it (sslmode)", where)
	}
	return &ConnectError{Where: where, Err: err}
}

// ConnectError is a server that could not be reached; retrying may help.
type ConnectError struct {
	Where string
	Err   error
}

func (e *ConnectError) Error() string {
	return fmt.Sprintf("cannot reach PostgreSQL at %s: %s", e.Where, Redact(e.Err.Error()))
}

func (e *ConnectError) Unwrap() error { return e.Err }

var (
	passwordKV   = regexp.MustCompile(`(?i)(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)`)
	urlUserinfo  = regexp.MustCompile(`([a-zA-Z][a-zA-Z0-9+.-]*://[^:/@\s]*:)[^@\s]*@`)
	passwordPair = regexp.MustCompile(`(?i)([?&]password=)[^&\s]*`)
)

// Redact removes passwords from a connection URL, a DSN, or a message that quotes one.
func Redact(s string) string {
	s = urlUserinfo.ReplaceAllString(s, "${1}xxxxx@")
	s = passwordPair.ReplaceAllString(s, "${1}xxxxx")
	return passwordKV.ReplaceAllString(s, "${1}xxxxx")
}

// Describe names the server of a connection string without secrets, for logs.
func Describe(connString string) string {
	cfg, err := pgconn.ParseConfig(connString)
	if err != nil {
		return Redact(connString)
	}
	u := url.URL{Scheme: "postgres", User: url.User(cfg.User), Host: fmt.Sprintf("%s:%d", cfg.Host, cfg.Port), Path: "/" + cfg.Database}
	return u.String()
}
