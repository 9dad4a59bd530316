package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pgoutbox/pgoutbox/internal/kafkatest"
)

// relayTable turns the outbox into what a polling relay uses: a status column and
// a creation time to publish in order.
func (e *env) relayTable() {
	e.t.Helper()
	e.exec(`ALTER TABLE outbox ADD COLUMN status text NOT NULL DEFAULT 'PENDING'`)
}

// TestBackfill: rows a polling relay never published are published on first start
// with --backfill=CONDITION, in the order of the named column, and rows committed
// while the backfill runs come from the stream: every row exactly once.
func TestBackfill(t *testing.T) {
	e := newEnv(t, envOptions{kafka: kafkatest.Options{Partitions: 3}})
	e.relayTable()
	const pending, sent = 3000, 200
	e.exec(`INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload, status, created_at)
		SELECT ('00000000-0000-4000-8000-' || lpad(i::text, 12, '0'))::uuid, 'order', 'k' || (i % 7), 'T',
		       jsonb_build_object('n', i), 'PENDING', now() - interval '1 hour' + i * interval '1 ms'
		FROM generate_series(1, $1) i`, pending)
	e.exec(`INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload, status)
		SELECT gen_random_uuid(), 'order', 'sent', 'T', '{}', 'SENT' FROM generate_series(1, $1)`, sent)

	// Writers keep committing while the backfill runs.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	var live []string
	var mu sync.Mutex
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ctx.Err() == nil && i < 400; i++ {
			id := fmt.Sprintf("10000000-0000-4000-8000-%012d", i)
			if _, err := e.admin.Exec(ctx, `INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload) VALUES ($1, 'order', 'live', 'T', '{}')`, id); err != nil {
				return
			}
			mu.Lock()
			live = append(live, id)
			mu.Unlock()
			time.Sleep(2 * time.Millisecond)
		}
	}()
	p := e.start(`--backfill=status = 'PENDING'`, "--backfill-order", "created_at", "--max-in-flight", "200")
	p.waitLog("backfill done", 60*time.Second)
	wg.Wait()
	mu.Lock()
	want := pending + len(live)
	mu.Unlock()
	e.consumeN(want, 60*time.Second)
	time.Sleep(500 * time.Millisecond) // late duplicates would arrive now
	recs := e.consume(3*time.Second, nil)
	ids := map[string]int{}
	for _, r := range recs {
		ids[string(r.Headers["id"])]++
		if string(r.Key) == "sent" {
			t.Fatalf("a row not matching the backfill condition was published: %s", r.Headers["id"])
		}
	}
	for i := 1; i <= pending; i++ {
		if id := fmt.Sprintf("00000000-0000-4000-8000-%012d", i); ids[id] != 1 {
			t.Errorf("backfilled row %s published %d times", id, ids[id])
		}
	}
	for _, id := range live {
		if ids[id] != 1 {
			t.Errorf("row %s committed during the backfill published %d times", id, ids[id])
		}
	}
	// Backfilled rows of one key arrive in created_at order.
	last := map[string]int{}
	for _, r := range recs {
		var p struct{ N int }
		if string(r.Key) == "live" || json.Unmarshal(r.Value, &p) != nil || p.N == 0 {
			continue
		}
		if p.N < last[string(r.Key)] {
			t.Errorf("key %s: backfilled row %d after %d", r.Key, p.N, last[string(r.Key)])
		}
		last[string(r.Key)] = p.N
	}
	t.Logf("backfilled %d rows with %d committed concurrently; %d records", pending, len(live), len(recs))

	// A restart does not backfill again.
	p.signal(syscall.SIGTERM)
	if code := p.wait(30 * time.Second); code != 0 {
		t.Fatalf("exit code %d", code)
	}
	e.waitInactive(10 * time.Second)
	p = e.start(`--backfill=status = 'PENDING'`, "--backfill-order", "created_at")
	p.waitLog(`"streaming"`, 30*time.Second)
	time.Sleep(time.Second)
	if again := e.consume(3*time.Second, nil); len(again) != len(recs) {
		t.Errorf("after a restart Kafka holds %d records, want %d (backfilled twice?)", len(again), len(recs))
	}
}

// TestBackfillCrash: a kill during the backfill and a restart with --backfill
// publish every row (the backfill starts over; rows may repeat, none is lost).
func TestBackfillCrash(t *testing.T) {
	e := newEnv(t, envOptions{})
	const n = 20000
	e.exec(`INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload)
		SELECT gen_random_uuid(), 'order', 'k' || (i % 10), 'T', jsonb_build_object('n', i) FROM generate_series(1, $1) i`, n)
	p := e.start("--backfill", "--max-in-flight", "100")
	p.waitLog("backfill started", 30*time.Second)
	time.Sleep(300 * time.Millisecond)
	p.kill()
	e.waitInactive(10 * time.Second)
	// Without --backfill pgoutbox refuses rather than stream past unpublished rows.
	if code, out := e.run(30*time.Second, "--max-in-flight", "100"); code != 1 || !strings.Contains(out, "did not finish") {
		t.Fatalf("restart without --backfill: exit %d, output:\n%s", code, tail(out, 5))
	}
	p = e.start("--backfill")
	p.waitLog("backfill done", 120*time.Second)
	e.exec(`INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload) VALUES (gen_random_uuid(), 'order', 'after', 'T', '{}')`)
	recs := e.consumeN(n+1, 60*time.Second)
	t.Logf("%d rows, 1 kill during the backfill: %d records", n, len(recs))
}

// TestTablelessOutbox: with --messages-prefix and no table, transactional
// pg_logical_emit_message() events are published with the same mapping; messages of
// an aborted transaction, non-transactional messages and other prefixes are not.
func TestTablelessOutbox(t *testing.T) {
	e := newEnv(t, envOptions{})
	// A publication of no table: pgoutput sends logical messages whatever it publishes.
	e.exec(`CREATE PUBLICATION pgoutbox_messages`)
	p := e.start("--messages-prefix", "outbox", "--table", "", "--publication", "pgoutbox_messages")
	p.waitLog(`"streaming"`, 30*time.Second)
	emit := func(id, key string, n int) string {
		return fmt.Sprintf(`SELECT pg_logical_emit_message(true, 'outbox', '{"id":"%s","aggregatetype":"invoice","aggregateid":"%s","type":"Issued","payload":{"n":%d}}')`, id, key, n)
	}
	ctx := context.Background()
	tx, _ := e.admin.Begin(ctx)
	for i := 1; i <= 5; i++ {
		if _, err := tx.Exec(ctx, emit(uuidFor(i), "inv-1", i)); err != nil {
			t.Fatal(err)
		}
	}
	tx.Commit(ctx)
	tx, _ = e.admin.Begin(ctx)
	tx.Exec(ctx, emit(uuidFor(99), "inv-1", 99))
	tx.Rollback(ctx)
	e.exec(`SELECT pg_logical_emit_message(false, 'outbox', '{"id":"x","aggregatetype":"invoice","aggregateid":"nt","payload":{}}')`)
	e.exec(`SELECT pg_logical_emit_message(true, 'other', '{"id":"y","aggregatetype":"invoice","aggregateid":"other","payload":{}}')`)
	e.exec(emit(uuidFor(6), "inv-1", 6))
	e.consumeN(6, 30*time.Second)
	time.Sleep(500 * time.Millisecond) // anything published wrongly would arrive now
	recs := e.consume(2*time.Second, nil)
	if len(recs) != 6 {
		t.Fatalf("got %d records, want 6 (aborted, non-transactional or foreign messages published?)", len(recs))
	}
	for i, r := range recs {
		if r.Topic != "outbox.event.invoice" || string(r.Key) != "inv-1" || string(r.Headers["id"]) != uuidFor(i+1) {
			t.Errorf("record %d: topic %s key %s id %s", i, r.Topic, r.Key, r.Headers["id"])
		}
		if want := fmt.Sprintf(`{"n":%d}`, i+1); string(r.Value) != want {
			t.Errorf("record %d: value %s, want %s", i, r.Value, want)
		}
	}
}

// TestMessagesWithTable: table inserts and messages in one transaction keep their
// order on one key.
func TestMessagesWithTable(t *testing.T) {
	e := newEnv(t, envOptions{})
	p := e.start("--messages-prefix", "outbox")
	p.waitLog(`"streaming"`, 30*time.Second)
	ctx := context.Background()
	tx, _ := e.admin.Begin(ctx)
	for i := 1; i <= 6; i++ {
		var err error
		if i%2 == 0 {
			_, err = tx.Exec(ctx, fmt.Sprintf(`SELECT pg_logical_emit_message(true, 'outbox', '{"id":"%s","aggregatetype":"order","aggregateid":"o1","payload":{"seq":%d}}')`, uuidFor(i), i))
		} else {
			_, err = tx.Exec(ctx, `INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload) VALUES ($1, 'order', 'o1', 'T', $2)`, uuidFor(i), fmt.Sprintf(`{"seq": %d}`, i))
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	tx.Commit(ctx)
	recs := e.consumeN(6, 30*time.Second)
	for i, r := range recs {
		var v struct{ Seq int }
		json.Unmarshal(r.Value, &v)
		if v.Seq != i+1 {
			t.Errorf("record %d has seq %d: table rows and messages out of order", i, v.Seq)
		}
	}
}

// TestSlotFailoverNeedsPG17: on PostgreSQL before 17, --slot-failover is refused
// with a sentence that says what a promotion does without it.
func TestSlotFailoverNeedsPG17(t *testing.T) {
	e := newEnv(t, envOptions{})
	code, out := e.run(30*time.Second, "--slot-failover")
	if code != 1 || !strings.Contains(out, "PostgreSQL 17") || !strings.Contains(out, "gap error") {
		t.Fatalf("exit %d, output:\n%s", code, tail(out, 5))
	}
}

// TestOutboxTableRecreated: dropping and re-creating the outbox table removes it
// from the publication, after which PostgreSQL sends nothing of it; pgoutbox notices
// and stops with a sentence that says so, instead of waiting forever.
func TestOutboxTableRecreated(t *testing.T) {
	e := newEnv(t, envOptions{})
	p := e.start()
	p.waitLog(`"streaming"`, 30*time.Second)
	e.exec(`DROP TABLE outbox`)
	sql, _ := os.ReadFile("../sql/outbox.sql")
	e.exec(string(sql))
	if code := p.wait(30 * time.Second); code != 1 || !strings.Contains(p.out.String(), "does not include table public.outbox") {
		t.Fatalf("exit %d; output:\n%s", code, tail(p.out.String(), 5))
	}
}

// TestPublicationCreatedAfterSlot: a publication created after the slot's start
// point is invisible to the walsender; pgoutbox says what happened and how to fix it.
func TestPublicationCreatedAfterSlot(t *testing.T) {
	e := newEnv(t, envOptions{})
	e.exec(`DROP PUBLICATION pgoutbox`)
	e.exec(`SELECT pg_create_logical_replication_slot($1, 'pgoutput')`, e.slot)
	// A change decoded with a catalog snapshot from before the publication existed.
	e.insertTx(event{ID: uuidFor(1), Type: "order", AggID: "a", Kind: "T", Payload: `{}`})
	e.exec(`CREATE PUBLICATION pgoutbox FOR TABLE outbox WITH (publish = 'insert')`)
	p := e.start()
	if code := p.wait(30 * time.Second); code != 1 || !strings.Contains(p.out.String(), "created after the slot") {
		t.Fatalf("exit %d; output:\n%s", code, tail(p.out.String(), 5))
	}
}

// TestBackfillExactlyOnce: with --exactly-once the backfill is one Kafka
// transaction. A read_committed consumer sees every backfilled and every streamed
// row once, whether pgoutbox crashes before the backfill's Kafka commit (the
// transaction is aborted and the backfill starts over) or between that commit and
// the local checkpoint (the checkpoint record says the backfill is done).
func TestBackfillExactlyOnce(t *testing.T) {
	for _, c := range []struct {
		name  string
		crash func(e *env) *proc // starts pgoutbox and makes it die during the backfill
	}{
		{"no crash", nil},
		{"crash before the Kafka commit", func(e *env) *proc {
			p := e.startEnv([]string{"PGOUTBOX_FAILPOINT=before-kafka-commit"}, "--backfill", "--exactly-once")
			p.wait(60 * time.Second)
			return p
		}},
		{"SIGTERM during the backfill", func(e *env) *proc {
			// A small window keeps the backfill busy long enough to be interrupted.
			p := e.start("--backfill", "--exactly-once", "--max-in-flight", "20")
			p.waitLog("backfill started", 30*time.Second)
			p.signal(syscall.SIGTERM)
			if code := p.wait(60 * time.Second); code != 0 {
				e.t.Fatalf("exit %d after SIGTERM during the backfill, want 0:\n%s", code, tail(p.out.String(), 10))
			}
			p.waitLog("backfill interrupted", time.Second)
			return p
		}},
		{"crash after the Kafka commit", func(e *env) *proc {
			p := e.startEnv([]string{"PGOUTBOX_FAILPOINT=after-kafka-commit"}, "--backfill", "--exactly-once")
			p.wait(60 * time.Second)
			return p
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			e := newEnv(t, envOptions{kafka: kafkatest.Options{Partitions: 3}})
			e.readCommitted = true
			const n = 20000
			e.exec(`INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload)
				SELECT ('00000000-0000-4000-8000-' || lpad(i::text, 12, '0'))::uuid, 'order', 'k' || (i % 10), 'T', jsonb_build_object('n', i)
				FROM generate_series(1, $1) i`, n)
			if c.crash != nil {
				p := c.crash(e)
				if code := p.exitCode(); code == 0 && !strings.HasPrefix(c.name, "SIGTERM") {
					t.Fatalf("pgoutbox exited 0; it should have been killed during the backfill")
				}
				e.waitInactive(10 * time.Second)
			}
			p := e.start("--backfill", "--exactly-once")
			p.waitLog(`"streaming"`, 120*time.Second)
			e.exec(`INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload) VALUES ($1, 'order', 'after', 'T', '{}')`, uuidFor(n+1))
			e.consumeN(n+1, 60*time.Second)
			time.Sleep(500 * time.Millisecond) // late duplicates would arrive now
			recs := e.consume(3*time.Second, nil)
			seen := map[string]int{}
			for _, r := range recs {
				seen[string(r.Headers["id"])]++
			}
			for i := 1; i <= n+1; i++ {
				if k := seen[uuidFor(i)]; k != 1 {
					t.Fatalf("row %d read %d times with read_committed (%d records for %d rows)", i, k, len(recs), n+1)
				}
			}
			if len(recs) != n+1 {
				t.Errorf("%d records for %d rows", len(recs), n+1)
			}
			out := p.out.String()
			switch c.name {
			case "crash before the Kafka commit", "SIGTERM during the backfill":
				if !strings.Contains(out, "Kafka holds none of it") {
					t.Errorf("the restart did not start the backfill over:\n%s", tail(out, 10))
				}
			case "crash after the Kafka commit":
				if !strings.Contains(out, "the backfill had committed in Kafka") || strings.Contains(out, "backfill started") {
					t.Errorf("the restart did not take the backfill as done:\n%s", tail(out, 10))
				}
			}
			t.Logf("%d rows backfilled, 1 streamed, %s: %d records", n, c.name, len(recs))
			e.stopClean(p)
		})
	}
}
