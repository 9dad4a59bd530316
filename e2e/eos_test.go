package e2e

import (
	"context"
	"math/rand/v2"
	"syscall"
	"testing"
	"time"

	"github.com/pgoutbox/pgoutbox/internal/kafkatest"
)

// TestExactlyOnceKill9: with --exactly-once, pgoutbox is killed with SIGKILL at
// random points many times under concurrent writers; a read_committed consumer sees
// every committed event exactly once, in per-key order.
func TestExactlyOnceKill9(t *testing.T) {
	e := newEnv(t, envOptions{kafka: kafkatest.Options{Partitions: 4}})
	e.readCommitted = true
	args := []string{"--exactly-once", "--txn-max-events", "300", "--txn-interval", "50ms", "--max-in-flight", "1000"}
	p := e.start(args...)
	p.waitLog(`"streaming"`, 30*time.Second)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	w := newWriters()
	done := make(chan struct{})
	go func() {
		defer close(done)
		w.runTolerant(ctx, t, e.pg.SuperURL(e.db), 4, 10)
	}()
	kills := 8
	if testing.Short() {
		kills = 4
	}
	rng := rand.New(rand.NewPCG(3, 4))
	for i := 0; i < kills; i++ {
		time.Sleep(time.Duration(100+rng.IntN(700)) * time.Millisecond)
		p.kill()
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
	v := w.check(t, recs)
	t.Logf("exactly-once: %d events, %d kills, %d records, %d duplicates", total, kills, v.records, v.duplicates)
	if v.duplicates != 0 {
		t.Errorf("%d duplicates seen by a read_committed consumer in exactly-once mode", v.duplicates)
	}
	p.signal(syscall.SIGTERM)
	if code := p.wait(30 * time.Second); code != 0 {
		t.Fatalf("exit code %d", code)
	}
}

// TestExactlyOnceLargeTransaction: a PostgreSQL transaction larger than a Kafka
// transaction is split; a kill in the middle and a restart publish each event once.
func TestExactlyOnceLargeTransaction(t *testing.T) {
	e := newEnv(t, envOptions{kafka: kafkatest.Options{Partitions: 3}})
	e.readCommitted = true
	args := []string{"--exactly-once", "--txn-max-events", "1000"}
	p := e.startEnv([]string{"PGOUTBOX_FAILPOINT=after-kafka-commit=5"}, args...)
	p.waitLog(`"streaming"`, 30*time.Second)
	const n = 20000
	e.exec(`INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload)
		SELECT gen_random_uuid(), 'big', 'k' || (i % 50), 'T', jsonb_build_object('i', i) FROM generate_series(1, $1) i`, n)
	if code := p.wait(60 * time.Second); code != -int(syscall.SIGKILL) {
		t.Fatalf("failpoint did not kill pgoutbox: exit %d", code)
	}
	e.waitInactive(10 * time.Second)
	p = e.start(args...)
	e.consume(60*time.Second, func(r []kafkatest.Record) bool { return len(r) >= n })
	time.Sleep(time.Second) // duplicates would arrive now
	recs := e.consume(5*time.Second, nil)
	ids := map[string]int{}
	for _, r := range recs {
		ids[string(r.Headers["id"])]++
	}
	dups := 0
	for _, c := range ids {
		dups += c - 1
	}
	if len(ids) != n || dups != 0 {
		t.Fatalf("got %d distinct events and %d duplicates, want %d and 0", len(ids), dups, n)
	}
	p.signal(syscall.SIGTERM)
	if code := p.wait(30 * time.Second); code != 0 {
		t.Fatalf("exit code %d", code)
	}
}
