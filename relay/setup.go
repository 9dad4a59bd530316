package relay

import (
	"context"
	"fmt"

	"github.com/pgoutbox/pgoutbox/checkpoint"
	"github.com/pgoutbox/pgoutbox/source"
)

// prepare checks the server, role, table and publication, creating the publication
// when it is missing.
func (r *relay) prepare(ctx context.Context, conn *source.Conn) (source.Server, error) {
	cfg := r.cfg
	table := cfg.Mapping.Table
	server, err := conn.Server(ctx)
	if err != nil {
		return server, err
	}
	if err := source.CheckServer(server); err != nil {
		return server, err
	}
	if cfg.SlotFailover && server.Version < 170000 {
		return server, &source.SetupError{Msg: fmt.Sprintf("--slot-failover needs PostgreSQL 17 or newer (server_version_num %d): before 17 a standby does not keep logical slots, so after a promotion the slot is missing and pgoutbox stops with a gap error rather than skip events; run without --slot-failover", server.Version)}
	}
	if cfg.MessagesPrefix != "" && server.Version < 140000 {
		return server, &source.SetupError{Msg: fmt.Sprintf("--messages-prefix needs PostgreSQL 14 or newer (pgoutput's messages option); this server is %d", server.Version)}
	}
	if table == "" {
		return server, r.preparePublication(ctx, conn, "")
	}
	cols, err := conn.Columns(ctx, table)
	if err != nil {
		return server, err
	}
	mapped, err := cfg.Mapping.Columns()
	if err != nil {
		return server, permanent(err)
	}
	if err := source.CheckColumns(table, cols, mapped, cfg.Mapping.PayloadColumn); err != nil {
		return server, err
	}
	if err := conn.CheckRole(ctx, table); err != nil {
		return server, err
	}
	return server, r.preparePublication(ctx, conn, table)
}

// preparePublication creates the publication when missing, or checks it publishes
// the table's inserts. With no table (a tableless outbox), any publication will do:
// pgoutput sends logical messages whatever it publishes.
func (r *relay) preparePublication(ctx context.Context, conn *source.Conn, table string) error {
	cfg := r.cfg
	if table == "" {
		if err := conn.CheckRole(ctx, ""); err != nil {
			return err
		}
	}
	pub, found, err := conn.Publication(ctx, cfg.Publication, table)
	if err != nil {
		return err
	}
	if !found {
		if err := conn.CreatePublication(ctx, cfg.Publication, table); err != nil {
			return err
		}
		r.log.Info().Str("publication", cfg.Publication).Str("table", table).Msg("publication created")
		return nil
	}
	if table == "" {
		return nil
	}
	if err := source.CheckPublication(pub, table); err != nil {
		return err
	}
	if pub.AllTables || pub.TableCount > 1 || pub.Update || pub.Delete {
		r.log.Info().Str("publication", pub.Name).Bool("all_tables", pub.AllTables).Int("tables", pub.TableCount).
			Bool("update", pub.Update).Bool("delete", pub.Delete).
			Msg("publication sends more than inserts into the outbox table; pgoutbox decodes and skips the rest (a dedicated publication costs less)")
	}
	return nil
}

// OpenStore is the one place the checkpoint store is chosen: the file, or the table
// in the source database (created if missing and allowed). pgoutbox status uses it
// too.
func OpenStore(ctx context.Context, cfg Config, conn *source.Conn) (checkpoint.Store, error) {
	if cfg.CheckpointStore == StoreFile {
		return checkpoint.NewFile(cfg.CheckpointFile), nil
	}
	s := checkpoint.NewPostgres(conn.PgxConn(), cfg.CheckpointTable)
	if err := s.Init(ctx); err != nil {
		return nil, err
	}
	return s, nil
}

// publicationChecks: every this many status intervals (30 s by default) a
// streaming session checks that the publication still covers the outbox table.
const publicationChecks = 30

// checkPublication reports the outbox table leaving the publication, or the
// publication dropped, while streaming.
func checkPublication(ctx context.Context, conn *source.Conn, name, table string) error {
	pub, found, err := conn.Publication(ctx, name, table)
	if err != nil {
		return err
	}
	if !found {
		return &source.SetupError{Msg: fmt.Sprintf("publication %q was dropped while pgoutbox streamed; re-create it (sql/publication.sql) — events committed meanwhile are not in the stream", name)}
	}
	return source.CheckPublication(pub, table)
}
