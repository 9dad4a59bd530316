package e2e

import (
	"context"
	"math/rand/v2"
	"syscall"
	"testing"
	"time"

	"github.com/pgoutbox/pgoutbox/internal/kafkatest"
)

// TestConcurrentWriters: many writers on many keys; every event arrives exactly once
// (no restart, so no duplicates) and each key's events keep their commit order.
func TestConcurrentWriters(t *testing.T) {
	e := newEnv(t, envOptions{kafka: kafkatest.Options{Partitions: 6}})
	p := e.start()
	p.waitLog(`"streaming"`, 30*time.Second)
	w := newWriters()
	w.run(context.Background(), t, e.pg.SuperURL(e.db), 8, 150, 12, 20)
	total := w.total()
	recs := e.consumeAll(w, 60*time.Second)
	v := w.check(t, recs)
	if v.duplicates != 0 {
		t.Errorf("%d duplicates without any restart", v.duplicates)
	}
	t.Logf("%d events from 8 writers, %d records", total, v.records)
	p.signal(syscall.SIGTERM)
	if code := p.wait(30 * time.Second); code != 0 {
		t.Fatalf("exit code %d after SIGTERM", code)
	}
	e.waitInactive(10 * time.Second)
	if n := e.pendingChanges(); n != 0 {
		t.Errorf("slot would re-send %d inserts after a clean stop; the confirm is behind", n)
	}
}

// TestTransactionSpanningRestart: a transaction that began before, and commits after,
// a transaction pgoutbox confirmed while pgoutbox is stopped is delivered after restart.
// Confirming a commit end LSN must not skip a transaction that started earlier.
func TestTransactionSpanningRestart(t *testing.T) {
	e := newEnv(t, envOptions{})
	p := e.start()
	p.waitLog(`"streaming"`, 30*time.Second)

	ctx := context.Background()
	long, err := e.admin.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer long.Rollback(ctx)
	if _, err := long.Exec(ctx, `INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload) VALUES ($1, 'long', 'L', 'T', '{"part":1}')`, uuidFor(1)); err != nil {
		t.Fatal(err)
	}
	e.insertTx(event{ID: uuidFor(2), Type: "short", AggID: "S", Kind: "T", Payload: `{}`})
	e.consumeN(1, 30*time.Second)
	// Wait until the short transaction is confirmed, then stop.
	time.Sleep(time.Second)
	p.signal(syscall.SIGTERM)
	if code := p.wait(30 * time.Second); code != 0 {
		t.Fatalf("exit code %d", code)
	}
	if _, err := long.Exec(ctx, `INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload) VALUES ($1, 'long', 'L', 'T', '{"part":2}')`, uuidFor(3)); err != nil {
		t.Fatal(err)
	}
	if err := long.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	e.waitInactive(10 * time.Second)
	p2 := e.start()
	recs := e.consumeN(3, 30*time.Second)
	ids := map[string]int{}
	for _, r := range recs {
		ids[string(r.Headers["id"])]++
	}
	for _, id := range []string{uuidFor(1), uuidFor(2), uuidFor(3)} {
		if ids[id] != 1 {
			t.Errorf("event %s delivered %d times, want once", id, ids[id])
		}
	}
	p2.signal(syscall.SIGTERM)
	if code := p2.wait(30 * time.Second); code != 0 {
		t.Fatalf("exit code %d", code)
	}
}

// TestKill9Restart: pgoutbox is killed with SIGKILL mid-stream several times while
// writers keep committing; after the last restart every committed event is in Kafka,
// per-key order of first occurrences holds, and duplicates stay within the in-flight
// window of each kill.
func TestKill9Restart(t *testing.T) {
	e := newEnv(t, envOptions{kafka: kafkatest.Options{Partitions: 4}})
	const window = 500
	args := []string{"--max-in-flight", "500"}
	p := e.start(args...)
	p.waitLog(`"streaming"`, 30*time.Second)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	w := newWriters()
	done := make(chan struct{})
	go func() {
		defer close(done)
		w.run(ctx, t, e.pg.SuperURL(e.db), 4, 1<<30, 8, 10)
	}()
	rng := rand.New(rand.NewPCG(1, 2))
	kills := 0
	for kills < 4 {
		time.Sleep(time.Duration(200+rng.IntN(600)) * time.Millisecond)
		p.kill()
		kills++
		e.waitInactive(10 * time.Second)
		p = e.start(args...)
		p.waitLog(`"streaming"`, 30*time.Second)
	}
	time.Sleep(300 * time.Millisecond)
	cancel()
	<-done
	e.settle(w)
	total := w.total()
	recs := e.consumeAll(w, 60*time.Second)
	// Let the final run confirm, then read again so late duplicates are counted.
	v := w.check(t, recs)
	t.Logf("%d events, %d kills, %d records, %d duplicates", total, kills, v.records, v.duplicates)
	if v.duplicates > kills*window {
		t.Errorf("%d duplicates exceed %d kills x %d in flight", v.duplicates, kills, window)
	}
	p.signal(syscall.SIGTERM)
	if code := p.wait(30 * time.Second); code != 0 {
		t.Fatalf("exit code %d", code)
	}
	e.waitInactive(10 * time.Second)
	if n := e.pendingChanges(); n != 0 {
		t.Errorf("slot would re-send %d inserts after a clean stop", n)
	}
}

// TestSIGTERMConfirmsEverything: after SIGTERM pgoutbox exits 0 and the slot holds
// nothing unconfirmed, and a restart publishes nothing again.
func TestSIGTERMConfirmsEverything(t *testing.T) {
	e := newEnv(t, envOptions{})
	p := e.start()
	p.waitLog(`"streaming"`, 30*time.Second)
	for i := 0; i < 50; i++ {
		e.insertTx(event{ID: uuidFor(i), Type: "order", AggID: "a", Kind: "T", Payload: `{}`})
	}
	e.consumeN(50, 30*time.Second)
	p.signal(syscall.SIGTERM)
	if code := p.wait(30 * time.Second); code != 0 {
		t.Fatalf("exit code %d after SIGTERM", code)
	}
	e.waitInactive(10 * time.Second)
	if n := e.pendingChanges(); n != 0 {
		t.Errorf("slot would re-send %d inserts after SIGTERM", n)
	}
	// A restart publishes nothing new.
	p2 := e.start()
	p2.waitLog(`"streaming"`, 30*time.Second)
	time.Sleep(time.Second)
	recs := e.consume(3*time.Second, nil)
	if len(recs) != 50 {
		t.Errorf("after restart Kafka holds %d records, want 50", len(recs))
	}
}
