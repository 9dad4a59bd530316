package source

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgoutbox/pgoutbox/decoder"
)

// Republish is a read of outbox rows that match a condition, in pages ordered by
// (Order, ID): a total order even when Order repeats, so that a page can start
// right after the last row of the one before (keyset pagination) whatever was
// inserted meanwhile. Each page is a statement of its own: a long republish holds
// no snapshot back from vacuum.
type Republish struct {
	Table string // schema.table
	Where string // SQL condition
	Order string // column to publish in
	ID    string // the id column, the tie-breaker
	Batch int    // rows per page
}

// Position is where a page ended: the text form of the last row's Order and ID
// values. The zero Position is the start.
type Position struct {
	Order string `json:"order"`
	ID    string `json:"id"`
	Set   bool   `json:"set"`
}

func (r Republish) table() string {
	schema, rel, _ := strings.Cut(r.Table, ".")
	return pgx.Identifier{schema, rel}.Sanitize()
}

// keys are the order and id columns, quoted; the same column twice when ordering by id.
func (r Republish) keys() (order, id string) {
	return pgx.Identifier{r.Order}.Sanitize(), pgx.Identifier{r.ID}.Sanitize()
}

// condition is the WHERE clause of a page after pos.
func (r Republish) condition(pos Position) string {
	w := "(" + r.Where + ")"
	if pos.Set {
		order, id := r.keys()
		w += " AND (" + order + ", " + id + ") > ($1, $2)"
	}
	return w
}

// PageQuery is the statement of a page after pos.
func (r Republish) PageQuery(pos Position) string {
	order, id := r.keys()
	return "SELECT * FROM " + r.table() + " WHERE " + r.condition(pos) +
		" ORDER BY " + order + ", " + id + " LIMIT " + strconv.Itoa(r.Batch)
}

func (r Republish) params(pos Position) [][]byte {
	if !pos.Set {
		return nil
	}
	return [][]byte{[]byte(pos.Order), []byte(pos.ID)}
}

// CountRepublish counts the rows after pos that match, for progress.
func (c *Conn) CountRepublish(ctx context.Context, r Republish, pos Position) (int64, error) {
	var n int64
	q := "SELECT count(*) FROM " + r.table() + " WHERE " + r.condition(pos)
	var args []any
	if pos.Set {
		args = []any{pos.Order, pos.ID}
	}
	if err := c.conn.QueryRow(ctx, q, args...).Scan(&n); err != nil {
		return 0, r.queryErr(q, err)
	}
	return n, nil
}

// ReadPage reads the next page after pos, calling row for each row with the table's
// relation and the values in pgoutput's text form (valid only during the call). It
// returns the position after the page and the rows read; fewer than Batch rows
// means it was the last page.
func (c *Conn) ReadPage(ctx context.Context, r Republish, pos Position, row func(*decoder.Relation, []decoder.Value) error) (Position, int, error) {
	q := r.PageQuery(pos)
	next := pos
	n := 0
	var keyErr error
	rowErr, err := c.readRows(ctx, r.Table, q, r.params(pos), func(rel *decoder.Relation, values []decoder.Value) error {
		oi, ii := rel.Column(r.Order), rel.Column(r.ID)
		if oi < 0 || ii < 0 {
			keyErr = setupErr(nil, "table %s has no column %q or %q to page by", r.Table, r.Order, r.ID)
			return keyErr
		}
		if values[oi].Kind == decoder.KindNull || values[ii].Kind == decoder.KindNull {
			keyErr = setupErr(nil, "row %s=%s has a NULL %s: republish pages by (%s, %s), which must not be NULL; order by another column",
				r.ID, string(values[ii].Data), r.Order, r.Order, r.ID)
			return keyErr
		}
		if err := row(rel, values); err != nil {
			return err
		}
		next = Position{Order: string(values[oi].Data), ID: string(values[ii].Data), Set: true}
		n++
		return nil
	})
	if rowErr != nil {
		return pos, n, rowErr
	}
	if err != nil {
		return pos, n, r.queryErr(q, err)
	}
	return next, n, nil
}

func (r Republish) queryErr(q string, err error) error {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && invalidQuery(pgErr) {
		return setupErr(nil, "republish query %q is invalid: %s", q, pgErr.Message)
	}
	return fmt.Errorf("republish: %w", err)
}
