package e2e

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgoutbox/pgoutbox/internal/kafkatest"
)

// bigID is the event id of row i of a generated transaction; the number is its
// last 12 digits, so a consumer can tell rows apart without keeping their ids.
const bigIDSQL = `('00000000-0000-4000-8000-' || lpad(i::text, 12, '0'))::uuid`

func bigRow(id string) (int, bool) {
	if len(id) != 36 {
		return 0, false
	}
	n, err := strconv.Atoi(id[24:])
	return n, err == nil
}

// TestBigTransaction: one transaction of a million rows (200,000 with -short)
// streams through: every row arrives exactly once, each key's rows in commit
// order, and pgoutbox's memory stays bounded. It never holds a transaction in
// memory: reading pauses while --max-in-flight events are unacknowledged, and the
// open transaction streams through bounded by acks alone.
func TestBigTransaction(t *testing.T) {
	n := 1_000_000
	if testing.Short() {
		n = 200_000
	}
	e := newEnv(t, envOptions{kafka: kafkatest.Options{Partitions: 4}})
	p := e.start("--log-level", "info") // no debug line per librdkafka event
	p.waitLog(`"streaming"`, 30*time.Second)
	start := time.Now()
	e.exec(`INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload)
		SELECT `+bigIDSQL+`, 'big', 'k' || (i % 64), 'Big', jsonb_build_object('i', i)
		FROM generate_series(1, $1::int) i`, n)
	committed := time.Since(start)

	c, err := kafkatest.NewConsumer(e.brokers, kafkatest.ConsumeOptions{TopicRegex: `^outbox\.event\.`})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	seen := make([]bool, n+1)
	last := map[string]int{}
	distinct, records := 0, 0
	for distinct < n && ctx.Err() == nil {
		recs, err := c.Poll(ctx)
		if err != nil && ctx.Err() == nil {
			t.Fatalf("consume: %v", err)
		}
		for _, r := range recs {
			records++
			i, ok := bigRow(string(r.Headers["id"]))
			if !ok || i < 1 || i > n {
				t.Fatalf("unexpected record id %q", r.Headers["id"])
			}
			if seen[i] {
				continue
			}
			seen[i] = true
			distinct++
			if key := string(r.Key); i <= last[key] {
				t.Errorf("key %s: row %d after row %d (order broken)", key, i, last[key])
			} else {
				last[key] = i
			}
		}
	}
	if distinct < n {
		t.Fatalf("%d of %d rows arrived within the timeout", distinct, n)
	}
	hwm := vmHWM(t, p.cmd.Process.Pid)
	t.Logf("%d rows in one transaction: committed in %s, all in Kafka %s after the commit; %d records; pgoutbox peak RSS (VmHWM) %d MiB",
		n, committed.Round(time.Millisecond), (time.Since(start) - committed).Round(time.Millisecond), records, hwm>>20)
	if records != n {
		t.Errorf("%d records for %d rows: %d duplicates without any restart", records, n, records-n)
	}
	// A generous bound: the producer queue and the in-flight window are tens of
	// MiB; buffering the whole transaction would take several hundred.
	if hwm > 512<<20 {
		t.Errorf("pgoutbox peak RSS %d MiB; it seems to buffer the transaction", hwm>>20)
	}
	if strings.Contains(p.out.String(), "pipeline stopped") {
		t.Errorf("the pipeline restarted during the transaction:\n%s", tail(p.out.String(), 20))
	}
	e.stopClean(p)
	if k := e.pendingChanges(); k != 0 {
		t.Errorf("slot would re-send %d inserts after a clean stop", k)
	}
}

// vmHWM reads a process's peak resident set size in bytes.
func vmHWM(t *testing.T, pid int) int64 {
	t.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				t.Fatalf("VmHWM %q: %v", v, err)
			}
			return kb << 10
		}
	}
	t.Fatalf("no VmHWM in /proc/%d/status", pid)
	return 0
}

// TestAbortedTransactions: rolled-back work publishes nothing — a small aborted
// transaction, a large one that the walsender spills to disk, and savepoints
// rolled back inside committed transactions — while everything committed around
// it arrives exactly once.
func TestAbortedTransactions(t *testing.T) {
	big := 200_000
	if testing.Short() {
		big = 50_000
	}
	e := newEnv(t, envOptions{})
	// Make the walsender spill large transactions to disk, as a big one would in
	// production, so the spilled changes of the abort are discarded too.
	e.exec(fmt.Sprintf(`ALTER ROLE %s IN DATABASE %s SET logical_decoding_work_mem = '64kB'`, role, e.db))
	p := e.start()
	p.waitLog(`"streaming"`, 30*time.Second)

	ctx := context.Background()
	insert := `INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload) VALUES ($1, 'abort', $2, 'T', '{}')`
	var want []string
	inTx := func(f func(tx pgx.Tx), commit bool) {
		t.Helper()
		tx, err := e.admin.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		f(tx)
		if commit {
			err = tx.Commit(ctx)
		} else {
			err = tx.Rollback(ctx)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	exec := func(tx pgx.Tx, sql string, args ...any) {
		t.Helper()
		if _, err := tx.Exec(ctx, sql, args...); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	add := func(tx pgx.Tx, i int, keep bool) {
		t.Helper()
		exec(tx, insert, uuidFor(i), fmt.Sprintf("a%d", i%3))
		if keep {
			want = append(want, uuidFor(i))
		}
	}

	want = append(want, e.insertRange(0, 5)...)
	inTx(func(tx pgx.Tx) { // a small abort
		for i := 1000; i < 1010; i++ {
			add(tx, i, false)
		}
	}, false)
	inTx(func(tx pgx.Tx) { // a large abort, ids 1,000,001 and up
		exec(tx, `INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload)
			SELECT `+bigIDSQL+`, 'abort', 'big', 'T', jsonb_build_object('i', i)
			FROM generate_series(1000001, 1000000 + $1::int) i`, big)
	}, false)
	want = append(want, e.insertRange(10, 5)...)
	inTx(func(tx pgx.Tx) { // savepoints inside a committed transaction
		add(tx, 2000, true)
		exec(tx, `SAVEPOINT a`)
		for i := 2001; i < 2006; i++ {
			add(tx, i, false)
		}
		exec(tx, `ROLLBACK TO SAVEPOINT a`)
		add(tx, 2006, true)
		exec(tx, `SAVEPOINT b`)
		add(tx, 2007, true)
		exec(tx, `RELEASE SAVEPOINT b`)
		exec(tx, `SAVEPOINT c`)
		exec(tx, `INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload)
			SELECT `+bigIDSQL+`, 'abort', 'sub', 'T', '{}' FROM generate_series(3000, 5999) i`)
		exec(tx, `ROLLBACK TO SAVEPOINT c`)
		add(tx, 2008, true)
	}, true)
	want = append(want, e.insertRange(20, 5)...)

	e.waitIDs(want, 60*time.Second)
	// After a clean stop every event pgoutbox produced is acknowledged, so one more
	// read sees all of them.
	e.stopClean(p)
	recs := e.consume(30*time.Second, nil)
	wanted := map[string]int{}
	for _, id := range want {
		wanted[id] = 0
	}
	for _, r := range recs {
		id := string(r.Headers["id"])
		if _, ok := wanted[id]; !ok {
			t.Errorf("published %s from an aborted transaction or savepoint", id)
			continue
		}
		wanted[id]++
	}
	for id, c := range wanted {
		if c != 1 {
			t.Errorf("committed event %s published %d times, want once", id, c)
		}
	}
	var spilled int64
	_ = e.admin.QueryRow(ctx, `SELECT coalesce(sum(spill_txns), 0) FROM pg_stat_replication_slots WHERE slot_name = $1`, e.slot).Scan(&spilled)
	t.Logf("%d committed events, %d records; aborted: 10 rows, %d rows, savepoints of 5 and 3000 rows; walsender spilled %d transactions to disk",
		len(want), len(recs), big, spilled)
	if k := e.pendingChanges(); k != 0 {
		t.Errorf("slot would re-send %d inserts after a clean stop", k)
	}
}
