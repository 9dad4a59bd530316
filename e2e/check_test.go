package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgoutbox/pgoutbox/internal/kafkatest"
)

// seqPayload is what the writers put in the payload: the key's sequence number,
// so the consumer side can check per-key order.
type seqPayload struct {
	Key string `json:"key"`
	Seq int    `json:"seq"`
}

// writers inserts events from several concurrent connections. Each writer owns its
// keys, so a key's commit order is its sequence order.
type writers struct {
	mu        sync.Mutex
	committed map[string]int // event id -> seq, only committed events
	keys      map[string]string
	count     int
}

func newWriters() *writers {
	return &writers{committed: map[string]int{}, keys: map[string]string{}}
}

// run starts n writers that each commit txns transactions of 1..maxPer events over
// keysPer keys, until done or ctx ends. It returns when all writers finished.
func (w *writers) run(ctx context.Context, t *testing.T, url string, n, txns, maxPer, keysPer int) {
	var wg sync.WaitGroup
	for wi := 0; wi < n; wi++ {
		wg.Add(1)
		go func(wi int) {
			defer wg.Done()
			conn, err := pgx.Connect(ctx, url)
			if err != nil {
				t.Errorf("writer %d: %v", wi, err)
				return
			}
			defer conn.Close(context.Background())
			seq := map[string]int{}
			for tx := 0; tx < txns && ctx.Err() == nil; tx++ {
				tx := newTxn(wi, tx, 1+(tx*7+wi)%maxPer, keysPer, seq)
				if err := conn.SendBatch(ctx, &tx.batch).Close(); err != nil {
					if ctx.Err() == nil {
						t.Errorf("writer %d: %v", wi, err)
					}
					return
				}
				w.record(tx)
			}
		}(wi)
	}
	wg.Wait()
}

// txn is one writer transaction: its statements and the events it commits.
type txn struct {
	batch pgx.Batch
	ids   []string
	seqs  []int
	keys  []string
}

// newTxn builds writer wi's transaction number n of per events over keysPer keys.
// Each key keeps its topic, and seq numbers each key's events in commit order.
func newTxn(wi, n, per, keysPer int, seq map[string]int) *txn {
	tx := &txn{}
	tx.batch.Queue("BEGIN")
	for i := 0; i < per; i++ {
		k := (n + i) % keysPer
		key := fmt.Sprintf("w%d-k%d", wi, k)
		seq[key]++
		id := fmt.Sprintf("%08d-0000-4000-8000-%012d", wi, n*1000+i)
		p, _ := json.Marshal(seqPayload{Key: key, Seq: seq[key]})
		tx.batch.Queue(`INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload) VALUES ($1, $2, $3, 'Test', $4)`,
			id, fmt.Sprintf("t%d", k%3), key, string(p))
		tx.ids, tx.seqs, tx.keys = append(tx.ids, id), append(tx.seqs, seq[key]), append(tx.keys, key)
	}
	tx.batch.Queue("COMMIT")
	return tx
}

// record counts a committed transaction's events.
func (w *writers) record(tx *txn) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for i, id := range tx.ids {
		w.committed[id] = tx.seqs[i]
		w.keys[id] = tx.keys[i]
	}
	w.count += len(tx.ids)
}

func (w *writers) total() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.count
}

// verdict is what an independent consumer found.
type verdict struct {
	records    int
	unique     int
	duplicates int
	missing    []string
}

// check verifies: every committed event is in Kafka; per key, the first occurrences
// of events come in sequence order; it returns the duplicate count.
func (w *writers) check(t *testing.T, recs []kafkatest.Record) verdict {
	t.Helper()
	w.mu.Lock()
	defer w.mu.Unlock()
	seen := map[string]bool{}
	lastSeq := map[string]int{}
	v := verdict{records: len(recs)}
	// Records are read partition by partition; a key lives in one partition, so
	// the order of a key's records is their offset order.
	for _, r := range recs {
		id := string(r.Headers["id"])
		if seen[id] {
			v.duplicates++
			continue
		}
		seen[id] = true
		var p seqPayload
		if err := json.Unmarshal(r.Value, &p); err != nil {
			t.Fatalf("record %s: payload %q: %v", id, r.Value, err)
		}
		if string(r.Key) != p.Key {
			t.Fatalf("record %s: key %q, payload key %q", id, r.Key, p.Key)
		}
		if p.Seq <= lastSeq[p.Key] {
			t.Errorf("key %s: first occurrence of seq %d after seq %d (order broken)", p.Key, p.Seq, lastSeq[p.Key])
		}
		lastSeq[p.Key] = p.Seq
	}
	for id := range w.committed {
		if !seen[id] {
			v.missing = append(v.missing, id)
		}
	}
	v.unique = len(seen)
	if len(v.missing) > 0 {
		t.Errorf("%d committed events missing from Kafka, e.g. %v", len(v.missing), v.missing[:min(5, len(v.missing))])
	}
	return v
}

// pendingChanges counts outbox changes the slot would still send: everything after
// its confirmed position. It must be called while no pgoutbox streams from the slot.
func (e *env) pendingChanges() int {
	e.t.Helper()
	// The SQL decoding functions read only flushed WAL, and the test servers commit
	// asynchronously. A synchronous commit flushes everything before it — if its
	// transaction wrote WAL: a commit that wrote none is never waited for.
	ctx := context.Background()
	tx, err := e.admin.Begin(ctx)
	if err != nil {
		e.t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	for _, sql := range []string{`SET LOCAL synchronous_commit = on`, `SELECT pg_logical_emit_message(true, 'e2e-flush', '')`} {
		if _, err := tx.Exec(ctx, sql); err != nil {
			e.t.Fatal(err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		e.t.Fatal(err)
	}
	var n int
	err = e.admin.QueryRow(context.Background(),
		`SELECT count(*) FROM pg_logical_slot_peek_binary_changes($1, NULL, NULL, 'proto_version', '1', 'publication_names', 'pgoutbox')
		 WHERE get_byte(data, 0) = ascii('I')`, e.slot).Scan(&n)
	if err != nil {
		e.t.Fatalf("peek slot: %v", err)
	}
	return n
}

// waitInactive waits until no process streams from the slot.
func (e *env) waitInactive(timeout time.Duration) {
	e.t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if _, active := e.slotConfirmed(); !active {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	e.t.Fatalf("slot %s still active after %s", e.slot, timeout)
}

// runTolerant is run for writers that must survive PostgreSQL restarts: a failed
// transaction is retried on a new connection. A commit whose outcome is unknown
// (the connection broke during COMMIT) is not counted as committed, but may appear.
func (w *writers) runTolerant(ctx context.Context, t *testing.T, url string, n, keysPer int) {
	var wg sync.WaitGroup
	for wi := 0; wi < n; wi++ {
		wg.Add(1)
		go func(wi int) {
			defer wg.Done()
			var conn *pgx.Conn
			defer func() {
				if conn != nil {
					conn.Close(context.Background())
				}
			}()
			seq := map[string]int{}
			for tx := 0; ctx.Err() == nil; tx++ {
				if conn == nil {
					c, err := pgx.Connect(ctx, url)
					if err != nil {
						time.Sleep(100 * time.Millisecond)
						continue
					}
					conn = c
				}
				tx := newTxn(wi, tx, 1+(tx*5+wi)%6, keysPer, seq)
				if err := conn.SendBatch(ctx, &tx.batch).Close(); err != nil {
					conn.Close(context.Background())
					conn = nil
					continue
				}
				w.record(tx)
				time.Sleep(2 * time.Millisecond)
			}
		}(wi)
	}
	wg.Wait()
}

// slotConfirmedTolerant reads the slot on a fresh connection, so it works across
// server restarts; it reports inactive when the server cannot be reached.
func (e *env) slotConfirmedTolerant() (string, bool) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, e.pg.SuperURL(e.db))
	if err != nil {
		return "", false
	}
	defer conn.Close(context.Background())
	var confirmed string
	var active bool
	err = conn.QueryRow(ctx, `SELECT coalesce(confirmed_flush_lsn::text, ''), active FROM pg_replication_slots WHERE slot_name = $1`, e.slot).Scan(&confirmed, &active)
	if err != nil {
		return "", false
	}
	return confirmed, active
}

// consumeAll reads until every event the writers committed is in Kafka, or timeout.
func (e *env) consumeAll(w *writers, timeout time.Duration) []kafkatest.Record {
	e.t.Helper()
	w.mu.Lock()
	want := make(map[string]bool, len(w.committed))
	for id := range w.committed {
		want[id] = true
	}
	w.mu.Unlock()
	seen := 0
	return e.consume(timeout, func(r []kafkatest.Record) bool {
		for _, rec := range r[seen:] {
			delete(want, string(rec.Headers["id"]))
		}
		seen = len(r)
		return len(want) == 0
	})
}
