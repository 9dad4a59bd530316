package source

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgoutbox/pgoutbox/decoder"
)

// Backfill is a read of the rows that exist when a slot is created, in the slot's
// exported snapshot: the read and the stream that follows meet exactly, so no row
// is missed and none is read twice.
type Backfill struct {
	Table string // schema.table
	Where string // SQL condition; empty means every row
	Order string // column to order by
}

// Query is the statement Backfill runs.
func (b Backfill) Query() string {
	schema, rel, _ := strings.Cut(b.Table, ".")
	q := "SELECT * FROM " + pgx.Identifier{schema, rel}.Sanitize()
	if w := strings.TrimSpace(b.Where); w != "" {
		q += " WHERE " + w
	}
	if b.Order != "" {
		q += " ORDER BY " + pgx.Identifier{b.Order}.Sanitize()
	}
	return q
}

// ReadBackfill reads the rows in snapshot, calling row for each with the table's
// relation and the values in the text form pgoutput uses, so the same mapping
// applies. Values are valid only during the call. It runs in a repeatable-read,
// read-only transaction that imports the snapshot.
func (c *Conn) ReadBackfill(ctx context.Context, snapshot string, b Backfill, row func(*decoder.Relation, []decoder.Value) error) error {
	tx, err := c.conn.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return fmt.Errorf("backfill: begin: %w", err)
	}
	defer tx.Rollback(context.Background())
	if _, err := tx.Exec(ctx, "SET TRANSACTION SNAPSHOT '"+strings.ReplaceAll(snapshot, "'", "''")+"'"); err != nil {
		return fmt.Errorf("backfill: import snapshot %s: %w", snapshot, err)
	}
	rowErr, err := c.readRows(ctx, b.Table, b.Query(), nil, row)
	if rowErr != nil {
		return rowErr
	}
	if err != nil {
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && invalidQuery(pgErr) {
			return setupErr(nil, "--backfill query %q is invalid: %s", b.Query(), pgErr.Message)
		}
		return fmt.Errorf("backfill: %w", err)
	}
	return tx.Commit(ctx)
}

// invalidQuery reports whether the server rejected a statement built from the
// user's condition or column names: a syntax error, an unknown column, function or
// table.
func invalidQuery(pgErr *pgconn.PgError) bool {
	switch pgErr.Code {
	case "42601", "42703", "42883", "42P01":
		return true
	}
	return false
}

// readRows runs query on table with text results and calls row for each result row,
// with a relation built from the result's columns and the values in the text form
// pgoutput uses: the mapper sees read and streamed rows alike. Values are valid only
// during the call. rowErr is row's error, which stops the read; err is the server's.
func (c *Conn) readRows(ctx context.Context, table, query string, params [][]byte, row func(*decoder.Relation, []decoder.Value) error) (rowErr, err error) {
	rr := c.conn.PgConn().ExecParams(ctx, query, params, nil, nil, []int16{pgx.TextFormatCode})
	fields := rr.FieldDescriptions()
	schema, name, _ := strings.Cut(table, ".")
	rel := &decoder.Relation{Namespace: schema, Name: name}
	for _, f := range fields {
		rel.Columns = append(rel.Columns, decoder.Column{Name: f.Name, TypeOID: f.DataTypeOID, TypeMod: f.TypeModifier})
	}
	values := make([]decoder.Value, len(fields))
	for rr.NextRow() {
		for i, v := range rr.Values() {
			if v == nil {
				values[i] = decoder.Value{Kind: decoder.KindNull}
			} else {
				values[i] = decoder.Value{Kind: decoder.KindText, Data: v}
			}
		}
		if err := row(rel, values); err != nil {
			rr.Close()
			return err, nil
		}
	}
	_, err = rr.Close()
	return nil, err
}
