package source

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
)

// Stream is a replication connection: it creates slots and streams a slot's changes.
// One goroutine owns it: Receive and SendStatus are not safe for concurrent use.
type Stream struct {
	conn *pgconn.PgConn
	msg  Message
	// deadline is the read deadline currently set on the socket, so Receive sets it
	// only when it changes instead of once per message.
	deadline    time.Time
	interrupted atomic.Bool
	// broken is set when receiving failed: pgconn is then closing the connection in
	// the background, and nothing may be written to it any more.
	broken bool
}

// Dial opens a replication connection (replication=database) to the database in connString.
func Dial(ctx context.Context, connString string) (*Stream, error) {
	cfg, err := pgconn.ParseConfig(connString)
	if err != nil {
		return nil, setupErr(nil, "invalid --postgres-url %s: %s", Redact(connString), Redact(err.Error()))
	}
	if cfg.ConnectTimeout == 0 {
		cfg.ConnectTimeout = defaultConnectTimeout
	}
	cfg.RuntimeParams["replication"] = "database"
	if _, ok := cfg.RuntimeParams["application_name"]; !ok {
		cfg.RuntimeParams["application_name"] = "pgoutbox"
	}
	conn, err := pgconn.ConnectConfig(ctx, cfg)
	if err != nil {
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && pgErr.Code == "53300" {
			return nil, setupErr(nil, "PostgreSQL refused the replication connection: %s; raise max_wal_senders (every pgoutbox and standby uses one) or stop an unused consumer", pgErr.Message)
		}
		if errors.As(err, &pgErr) && pgErr.Code == "42501" {
			return nil, setupErr(nil, "role %q may not open a replication connection: %s; run ALTER ROLE %s REPLICATION (see sql/role.sql)", cfg.User, pgErr.Message, pgx.Identifier{cfg.User}.Sanitize())
		}
		return nil, classifyConnect(err, cfg.Host, cfg.Port, cfg.User, cfg.Database)
	}
	return &Stream{conn: conn}, nil
}

// Close closes the connection; the walsender exits and the slot becomes inactive.
func (s *Stream) Close(ctx context.Context) error { return s.conn.Close(ctx) }

// Identity is the result of IDENTIFY_SYSTEM.
type Identity struct {
	SystemID string
	Timeline int32
	XLogPos  LSN
	Database string
}

// Identify runs IDENTIFY_SYSTEM.
func (s *Stream) Identify(ctx context.Context) (Identity, error) {
	r, err := pglogrepl.IdentifySystem(ctx, s.conn)
	if err != nil {
		return Identity{}, fmt.Errorf("identify system: %w", err)
	}
	return Identity{SystemID: r.SystemID, Timeline: r.Timeline, XLogPos: r.XLogPos, Database: r.DBName}, nil
}

// SlotOptions are options of a new slot.
type SlotOptions struct {
	// ExportSnapshot keeps a snapshot of the slot's consistent point open until the next
	// command on this connection, for a backfill that must meet the stream exactly.
	ExportSnapshot bool
	// Failover creates a PostgreSQL 17 failover slot that standbys synchronize.
	Failover bool
}

// CreatedSlot is what CREATE_REPLICATION_SLOT returns.
type CreatedSlot struct {
	ConsistentPoint LSN
	Snapshot        string
}

// CreateSlotCommand builds the CREATE_REPLICATION_SLOT command for a server version.
// PostgreSQL 15 and newer take the parenthesized option list; FAILOVER needs 17.
func CreateSlotCommand(name string, serverVersion int, opts SlotOptions) (string, error) {
	snapshot := "NOEXPORT_SNAPSHOT"
	if opts.ExportSnapshot {
		snapshot = "EXPORT_SNAPSHOT"
	}
	ident := pgx.Identifier{name}.Sanitize()
	if opts.Failover && serverVersion < 170000 {
		return "", setupErr(nil, "--slot-failover needs PostgreSQL 17 or newer (server is %s); without it a promoted standby has no slot and pgoutbox stops with a gap error rather than skip events", versionString(serverVersion))
	}
	if serverVersion < 150000 {
		return fmt.Sprintf("CREATE_REPLICATION_SLOT %s LOGICAL pgoutput %s", ident, snapshot), nil
	}
	snap := "nothing"
	if opts.ExportSnapshot {
		snap = "export"
	}
	opt := []string{"SNAPSHOT '" + snap + "'"}
	if opts.Failover {
		opt = append(opt, "FAILOVER true")
	}
	return fmt.Sprintf("CREATE_REPLICATION_SLOT %s LOGICAL pgoutput (%s)", ident, strings.Join(opt, ", ")), nil
}

// AlterSlotFailoverCommand builds the PostgreSQL 17 command that makes an existing
// slot a failover slot.
func AlterSlotFailoverCommand(name string) string {
	return fmt.Sprintf("ALTER_REPLICATION_SLOT %s (FAILOVER true)", pgx.Identifier{name}.Sanitize())
}

// AlterSlotFailover makes an existing slot a failover slot (PostgreSQL 17+).
func (s *Stream) AlterSlotFailover(ctx context.Context, name string) error {
	if _, err := s.conn.Exec(ctx, AlterSlotFailoverCommand(name)).ReadAll(); err != nil {
		return fmt.Errorf("make slot %q a failover slot: %w", name, err)
	}
	return nil
}

// CreateSlot creates a logical pgoutput slot.
func (s *Stream) CreateSlot(ctx context.Context, name string, serverVersion int, opts SlotOptions) (CreatedSlot, error) {
	cmd, err := CreateSlotCommand(name, serverVersion, opts)
	if err != nil {
		return CreatedSlot{}, err
	}
	res, err := pglogrepl.ParseCreateReplicationSlot(s.conn.Exec(ctx, cmd))
	if err != nil {
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) {
			switch pgErr.Code {
			case "53400":
				return CreatedSlot{}, setupErr(nil, "cannot create replication slot %q: %s; raise max_replication_slots or drop an unused slot", name, pgErr.Message)
			case "42710":
				return CreatedSlot{}, fmt.Errorf("create replication slot %q: it was created concurrently: %w", name, err)
			case "42501":
				return CreatedSlot{}, setupErr(nil, "role may not create replication slot %q: %s", name, pgErr.Message)
			}
		}
		return CreatedSlot{}, fmt.Errorf("create replication slot %q: %w", name, err)
	}
	lsn, err := pglogrepl.ParseLSN(res.ConsistentPoint)
	if err != nil {
		return CreatedSlot{}, fmt.Errorf("create replication slot %q: consistent point %q: %w", name, res.ConsistentPoint, err)
	}
	return CreatedSlot{ConsistentPoint: lsn, Snapshot: res.SnapshotName}, nil
}

// DropSlot drops a slot (used by tests and by --accept-gap recovery of a lost slot).
func (s *Stream) DropSlot(ctx context.Context, name string) error {
	return pglogrepl.DropReplicationSlot(ctx, s.conn, pgx.Identifier{name}.Sanitize(), pglogrepl.DropReplicationSlotOptions{})
}

// StartOptions are pgoutput options.
type StartOptions struct {
	Publication string
	Messages    bool // logical decoding messages (pg_logical_emit_message), PostgreSQL 14+
}

// ErrSlotActive is returned by Start when another process streams from the slot.
type ErrSlotActive struct{ Msg string }

func (e *ErrSlotActive) Error() string { return e.Msg }

// Start issues START_REPLICATION from lsn with pgoutput protocol version 1. Version 1
// never streams uncommitted transactions, so every change that arrives is committed.
func (s *Stream) Start(ctx context.Context, slot string, lsn LSN, opts StartOptions) error {
	args := []string{
		"proto_version '1'",
		"publication_names '" + strings.ReplaceAll(opts.Publication, "'", "''") + "'",
	}
	if opts.Messages {
		args = append(args, "messages 'true'")
	}
	err := pglogrepl.StartReplication(ctx, s.conn, pgx.Identifier{slot}.Sanitize(), lsn,
		pglogrepl.StartReplicationOptions{Mode: pglogrepl.LogicalReplication, PluginArgs: args})
	if err != nil {
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) {
			switch pgErr.Code {
			case "55006":
				return &ErrSlotActive{Msg: pgErr.Message}
			case "42704":
				return setupErr(nil, "replication slot %q does not exist: %s", slot, pgErr.Message)
			}
		}
		return fmt.Errorf("start replication: %w", err)
	}
	return nil
}

// Message is one message of the replication stream. It is reused by Receive, and
// Data aliases the connection's buffer: both are valid until the next Receive.
type Message struct {
	Keepalive      bool
	WALStart       LSN // XLogData: where this change's record starts
	ServerWALEnd   LSN // how far the server has sent WAL
	ServerTime     time.Time
	ReplyRequested bool   // keepalive: the server wants a status update now
	Data           []byte // XLogData: one pgoutput message
}

// ErrTimeout is returned by Receive when the deadline passes with no message.
var ErrTimeout = errors.New("no replication message before the deadline")

// ErrInterrupted is returned by Receive after Interrupt.
var ErrInterrupted = errors.New("replication stream interrupted")

// Receive waits until deadline for the next message.
func (s *Stream) Receive(deadline time.Time) (*Message, error) {
	if !deadline.Equal(s.deadline) {
		if err := s.conn.Conn().SetReadDeadline(deadline); err != nil {
			return nil, fmt.Errorf("set read deadline: %w", err)
		}
		s.deadline = deadline
	}
	if s.interrupted.Load() {
		return nil, ErrInterrupted
	}
	raw, err := s.conn.ReceiveMessage(context.Background())
	if err != nil {
		if pgconn.Timeout(err) {
			if s.interrupted.Load() {
				return nil, ErrInterrupted
			}
			return nil, ErrTimeout
		}
		s.broken = true
		return nil, fmt.Errorf("receive replication message: %w", err)
	}
	switch m := raw.(type) {
	case *pgproto3.CopyData:
		return s.parse(m.Data)
	case *pgproto3.ErrorResponse:
		s.broken = true
		return nil, streamError(pgconn.ErrorResponseToPgError(m))
	case *pgproto3.CopyDone:
		s.broken = true
		return nil, errors.New("server ended the replication stream")
	default:
		return nil, fmt.Errorf("unexpected replication message %T", raw)
	}
}

// streamError explains errors the walsender raises while decoding.
func streamError(pgErr *pgconn.PgError) error {
	if pgErr.Code == "42704" && strings.Contains(pgErr.Message, "publication") {
		return setupErr(pgErr, "the walsender cannot see the publication; a publication created after the slot's start point is invisible to it: drop and re-create the slot (events in between are not published), or create the publication before the slot")
	}
	return fmt.Errorf("replication stream: %w", pgErr)
}

func (s *Stream) parse(data []byte) (*Message, error) {
	if len(data) == 0 {
		return nil, errors.New("empty replication message")
	}
	m := &s.msg
	switch data[0] {
	case pglogrepl.XLogDataByteID:
		x, err := pglogrepl.ParseXLogData(data[1:])
		if err != nil {
			return nil, fmt.Errorf("parse XLogData: %w", err)
		}
		*m = Message{WALStart: x.WALStart, ServerWALEnd: x.ServerWALEnd, ServerTime: x.ServerTime, Data: x.WALData}
	case pglogrepl.PrimaryKeepaliveMessageByteID:
		k, err := pglogrepl.ParsePrimaryKeepaliveMessage(data[1:])
		if err != nil {
			return nil, fmt.Errorf("parse keepalive: %w", err)
		}
		*m = Message{Keepalive: true, ServerWALEnd: k.ServerWALEnd, ServerTime: k.ServerTime, ReplyRequested: k.ReplyRequested}
	default:
		return nil, fmt.Errorf("unknown replication message type %q", data[0])
	}
	return m, nil
}

// SendStatus confirms lsn: the server may discard WAL before it and will not send
// transactions that commit before it again. Write, flush and apply are all set, as
// pglogrepl would otherwise copy the write position into them.
func (s *Stream) SendStatus(lsn LSN, replyRequested bool) error {
	if s.broken {
		return errors.New("send standby status update: the replication connection is broken")
	}
	err := pglogrepl.SendStandbyStatusUpdate(context.Background(), s.conn, pglogrepl.StandbyStatusUpdate{
		WALWritePosition: lsn,
		WALFlushPosition: lsn,
		WALApplyPosition: lsn,
		ClientTime:       time.Now(),
		ReplyRequested:   replyRequested,
	})
	if err != nil {
		return fmt.Errorf("send standby status update: %w", err)
	}
	return nil
}

// Interrupt makes a blocked Receive, and every later one, return ErrInterrupted.
// It is the one method safe to call from another goroutine.
func (s *Stream) Interrupt() {
	s.interrupted.Store(true)
	_ = s.conn.Conn().SetReadDeadline(time.Now())
}

// versionString formats server_version_num: major*10000+minor since PostgreSQL 10,
// major*10000+minor*100+patch before.
func versionString(v int) string {
	if v >= 100000 {
		return fmt.Sprintf("%d.%d", v/10000, v%10000)
	}
	return fmt.Sprintf("%d.%d", v/10000, v/100%100)
}
