package relay

import (
	"context"
	"fmt"

	"github.com/pgoutbox/pgoutbox/checkpoint"
	"github.com/pgoutbox/pgoutbox/outbox"
	"github.com/pgoutbox/pgoutbox/source"
)

// prepare checks the server, role, tables and publication, creating the publication
// when it is missing. It returns the server and the catalog's columns of each outbox
// table.
func (r *relay) prepare(ctx context.Context, conn *source.Conn) (source.Server, map[string][]source.Column, error) {
	cfg := r.cfg
	tables := cfg.Mapping.Tables
	server, err := conn.Server(ctx)
	if err != nil {
		return server, nil, err
	}
	if err := source.CheckServer(server); err != nil {
		return server, nil, err
	}
	if cfg.SlotFailover && server.Version < 170000 {
		return server, nil, &source.SetupError{Msg: fmt.Sprintf("--slot-failover needs PostgreSQL 17 or newer (server_version_num %d): before 17 a standby does not keep logical slots, so after a promotion the slot is missing and pgoutbox stops with a gap error rather than skip events; run without --slot-failover", server.Version)}
	}
	if cfg.MessagesPrefix != "" && server.Version < 140000 {
		return server, nil, &source.SetupError{Msg: fmt.Sprintf("--messages-prefix needs PostgreSQL 14 or newer (pgoutput's messages option); this server is %d", server.Version)}
	}
	if len(tables) == 0 {
		if err := conn.CheckRole(ctx, ""); err != nil {
			return server, nil, err
		}
		return server, nil, r.preparePublication(ctx, conn, nil)
	}
	mapped, err := cfg.Mapping.Columns()
	if err != nil {
		return server, nil, permanent(err)
	}
	cols := map[string][]source.Column{}
	for _, table := range tables {
		c, err := conn.Columns(ctx, table)
		if err != nil {
			return server, nil, err
		}
		if err := source.CheckColumns(table, c, mapped, cfg.Mapping.PayloadColumn); err != nil {
			return server, nil, err
		}
		if err := conn.CheckRole(ctx, table); err != nil {
			return server, nil, err
		}
		cols[table] = c
	}
	return server, cols, r.preparePublication(ctx, conn, tables)
}

// preparePublication creates the publication when missing, or checks that it
// publishes every table's inserts. With no table (a tableless outbox), any
// publication will do: pgoutput sends logical messages whatever it publishes.
func (r *relay) preparePublication(ctx context.Context, conn *source.Conn, tables []string) error {
	cfg := r.cfg
	first := ""
	if len(tables) > 0 {
		first = tables[0]
	}
	pub, found, err := conn.Publication(ctx, cfg.Publication, first)
	if err != nil {
		return err
	}
	if !found {
		if err := conn.CreatePublication(ctx, cfg.Publication, tables); err != nil {
			return err
		}
		r.log.Info().Str("publication", cfg.Publication).Strs("tables", tables).Msg("publication created")
		return nil
	}
	if len(tables) == 0 {
		return nil
	}
	for _, table := range tables {
		if err := checkPublication(ctx, conn, cfg.Publication, table); err != nil {
			return err
		}
	}
	if pub.AllTables || pub.TableCount > len(tables) || pub.Update || pub.Delete {
		r.log.Info().Str("publication", pub.Name).Bool("all_tables", pub.AllTables).Int("tables", pub.TableCount).
			Bool("update", pub.Update).Bool("delete", pub.Delete).
			Msg("publication sends more than inserts into the outbox tables; pgoutbox decodes and skips the rest (a dedicated publication costs less)")
	}
	return nil
}

// columnInfo is what the mapper needs of the catalog's columns.
func columnInfo(cols []source.Column) []outbox.ColumnInfo {
	info := make([]outbox.ColumnInfo, len(cols))
	for i, c := range cols {
		info[i] = outbox.ColumnInfo{Name: c.Name, NotNull: c.NotNull}
	}
	return info
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
