package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"
)

// TestSchemaChangeWhileStreaming changes the outbox table under a running pgoutbox.
// PostgreSQL re-sends the Relation message after each change: an added column and a
// payload column turned from jsonb into text (a table rewrite) change nothing for
// consumers; dropping a mapped column stops pgoutbox with an error naming it, with
// nothing confirmed past the first row it cannot map.
func TestSchemaChangeWhileStreaming(t *testing.T) {
	e := newEnv(t, envOptions{})
	p := e.start()
	p.waitLog(`"streaming"`, 30*time.Second)

	n := 0
	batch := func() {
		var evs []event
		for i := 0; i < 5; i++ {
			evs = append(evs, event{ID: uuidFor(n), Type: "order", AggID: fmt.Sprintf("agg-%d", n%3), Kind: "Created", Payload: fmt.Sprintf(`{"n":%d}`, n)})
			n++
		}
		e.insertTx(evs...)
	}
	batch()
	e.exec(`ALTER TABLE outbox ADD COLUMN tenant text DEFAULT 'acme'`)
	batch()
	e.exec(`ALTER TABLE outbox ALTER COLUMN payload TYPE text USING payload::text`)
	batch()
	recs := e.consumeN(n, 30*time.Second)
	if len(recs) != n {
		t.Errorf("consumed %d records, want %d", len(recs), n)
	}
	for _, r := range recs {
		var i int
		if _, err := fmt.Sscanf(string(r.Headers["id"])[24:], "%d", &i); err != nil {
			t.Fatalf("record with id %q: %v", r.Headers["id"], err)
		}
		if want := fmt.Sprintf(`{"n":%d}`, i); strings.ReplaceAll(string(r.Value), " ", "") != want {
			t.Errorf("event %d: value %q, want %q", i, r.Value, want)
		}
	}
	p.mustBeRunning("after the schema changes")

	e.exec(`ALTER TABLE outbox DROP COLUMN aggregateid`)
	var bound string
	if err := e.admin.QueryRow(context.Background(), `INSERT INTO outbox (id, aggregatetype, type, payload) VALUES ($1, 'order', 'Created', '{}')
		RETURNING pg_current_wal_insert_lsn()::text`, uuidFor(n)).Scan(&bound); err != nil {
		t.Fatal(err)
	}
	if code := p.wait(30 * time.Second); code != 1 {
		t.Fatalf("exit code %d after dropping the key column, want 1\n%s", code, tail(p.out.String(), 10))
	}
	if out := p.out.String(); !strings.Contains(out, `no key column "aggregateid"`) {
		t.Errorf("the error does not name the dropped column:\n%s", tail(out, 5))
	}
	// A restart refuses to start until the mapping matches the table again.
	code, out := e.run(30 * time.Second)
	if code != 1 || !strings.Contains(out, `no column "aggregateid"`) {
		t.Errorf("restart: exit %d, want 1 naming the column:\n%s", code, tail(out, 5))
	}
	e.notConfirmedPast(bound)
}
