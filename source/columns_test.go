package source

import (
	"context"
	"testing"
	"time"

	"github.com/pgoutbox/pgoutbox/internal/pgtest"
)

// TestColumnsNotNull: Columns reports attnotnull, which json-envelope schemas need and
// a Relation message does not carry; a primary key column is NOT NULL too.
func TestColumnsNotNull(t *testing.T) {
	pg := pgtest.New(t, pgtest.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := pg.Exec(ctx, "postgres", `CREATE TABLE public.outbox (id uuid PRIMARY KEY, aggregateid varchar(255) NOT NULL, payload jsonb)`); err != nil {
		t.Fatal(err)
	}
	conn, err := Connect(ctx, pg.SuperURL("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	cols, err := conn.Columns(ctx, "public.outbox")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{"id": true, "aggregateid": true, "payload": false}
	if len(cols) != len(want) {
		t.Fatalf("Columns = %+v", cols)
	}
	for _, c := range cols {
		if c.NotNull != want[c.Name] {
			t.Errorf("column %s: NotNull = %v, want %v", c.Name, c.NotNull, want[c.Name])
		}
	}
}
