package e2e

import (
	"context"
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pgoutbox/pgoutbox/internal/kafkatest"
	"github.com/pgoutbox/pgoutbox/internal/pgtest"
)

// ownCluster starts a PostgreSQL server for a test that restarts or kills it.
func ownCluster(t *testing.T, settings map[string]string) *pgtest.Cluster {
	t.Helper()
	if settings == nil {
		settings = map[string]string{}
	}
	return pgtest.New(t, pgtest.Options{Durable: true, Settings: settings})
}

// background runs writers until stop is called, then waits for them.
func (e *env) background(t *testing.T, n, keys int) (w *writers, stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	w = newWriters()
	done := make(chan struct{})
	go func() {
		defer close(done)
		w.runTolerant(ctx, t, e.pg.SuperURL(e.db), n, keys)
	}()
	return w, func() { cancel(); <-done }
}

// TestPostgresRestart: PostgreSQL restarts with -m immediate (a crash) and -m fast
// while writers commit; pgoutbox stays up, reconnects, and nothing is lost.
func TestPostgresRestart(t *testing.T) {
	c := ownCluster(t, nil)
	e := newEnv(t, envOptions{cluster: c, kafka: kafkatest.Options{Partitions: 3}})
	p := e.start("--max-in-flight", "1000")
	p.waitLog(`"streaming"`, 30*time.Second)
	w, stop := e.background(t, 3, 10)
	for _, mode := range []string{"immediate", "fast", "immediate"} {
		time.Sleep(700 * time.Millisecond)
		if err := c.Restart(context.Background(), mode); err != nil {
			t.Fatalf("restart -m %s: %v", mode, err)
		}
		// pgoutbox reconnects by itself.
		waitFor(t, 60*time.Second, "pgoutbox streaming again", func() bool {
			_, active := e.slotConfirmedTolerant()
			return active
		})
	}
	time.Sleep(500 * time.Millisecond)
	stop()
	e.settle(w)
	total := w.total()
	recs := e.consumeAll(w, 60*time.Second)
	v := w.check(t, recs)
	t.Logf("%d events across 3 server restarts: %d records, %d duplicates", total, v.records, v.duplicates)
	if !strings.Contains(p.out.String(), "reconnecting") {
		t.Errorf("no reconnect logged")
	}
	p.mustBeRunning("across server restarts")
}

// TestWalsenderTerminated: the walsender is killed with pg_terminate_backend;
// pgoutbox reconnects and publishes everything.
func TestWalsenderTerminated(t *testing.T) {
	e := newEnv(t, envOptions{})
	p := e.start()
	p.waitLog(`"streaming"`, 30*time.Second)
	w, stop := e.background(t, 2, 5)
	for i := 0; i < 3; i++ {
		time.Sleep(400 * time.Millisecond)
		e.exec(`SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = $1 AND active`, e.slot)
		waitFor(t, 30*time.Second, "streaming again", func() bool {
			_, active := e.slotConfirmed()
			return active
		})
	}
	stop()
	e.settle(w)
	total := w.total()
	recs := e.consumeAll(w, 60*time.Second)
	v := w.check(t, recs)
	t.Logf("%d events, 3 walsender kills: %d duplicates", total, v.duplicates)
}

// TestBrokerDown: the broker goes away for longer than wal_sender_timeout and comes
// back on the same port with its data. pgoutbox stays up, does not confirm past
// unacknowledged events, keeps the walsender alive, and resumes.
func TestBrokerDown(t *testing.T) {
	for _, mode := range []string{"at-least-once", "exactly-once"} {
		t.Run(mode, func(t *testing.T) { brokerDown(t, mode == "exactly-once") })
	}
}

func brokerDown(t *testing.T, exactlyOnce bool) {
	c := ownCluster(t, map[string]string{"wal_sender_timeout": "3s"})
	dataDir := t.TempDir()
	e := newEnv(t, envOptions{cluster: c, kafka: kafkatest.Options{DataDir: dataDir, Partitions: 3}})
	ports := kafkatest.Ports(e.kafka)
	args := []string{"--max-in-flight", "200"}
	if exactlyOnce {
		e.readCommitted = true
		args = append(args, "--exactly-once", "--txn-max-events", "100")
	}
	p := e.start(args...)
	p.waitLog(`"streaming"`, 30*time.Second)
	w, stop := e.background(t, 2, 5)
	time.Sleep(500 * time.Millisecond)
	e.kafka.Close() // graceful: persists to dataDir
	downAt, _ := e.slotConfirmed()
	time.Sleep(8 * time.Second) // well past wal_sender_timeout
	confirmedDown, active := e.slotConfirmed()
	if !active {
		t.Errorf("walsender timed out while Kafka was down: pgoutbox stopped answering")
	}
	stop()
	e.settle(w)
	total := w.total()
	k, err := kafkatest.Start(kafkatest.Options{Ports: ports, DataDir: dataDir, Partitions: 3})
	if err != nil {
		t.Fatalf("restart broker: %v", err)
	}
	t.Cleanup(k.Close)
	recs := e.consumeAll(w, 90*time.Second)
	v := w.check(t, recs)
	t.Logf("%d events, broker down 8s (confirmed %s at outage, %s during): %d duplicates", total, downAt, confirmedDown, v.duplicates)
	if exactlyOnce && v.duplicates != 0 {
		t.Errorf("%d duplicates seen by a read_committed consumer in exactly-once mode", v.duplicates)
	}
	p.mustBeRunning("while the broker was down")
}

// TestTwoInstances: a second pgoutbox on the same slot stands by while the first
// streams, and takes over when the first dies.
func TestTwoInstances(t *testing.T) {
	e := newEnv(t, envOptions{})
	store := []string{"--checkpoint-store", "postgres", "--standby-retry", "300ms"}
	e.exec(`CREATE TABLE public.pgoutbox_checkpoint (slot text PRIMARY KEY, lsn pg_lsn NOT NULL, system_id text NOT NULL,
		database text NOT NULL, updated_at timestamptz NOT NULL DEFAULT now());
		GRANT SELECT, INSERT, UPDATE ON public.pgoutbox_checkpoint TO pgoutbox`)
	a := e.start(store...)
	a.waitLog(`"streaming"`, 30*time.Second)
	b := e.start(store...)
	b.waitLog("standing by", 30*time.Second)
	w, stop := e.background(t, 2, 5)
	time.Sleep(time.Second)
	a.kill()
	b.waitLog(`"streaming"`, 30*time.Second)
	time.Sleep(500 * time.Millisecond)
	stop()
	e.settle(w)
	total := w.total()
	recs := e.consumeAll(w, 60*time.Second)
	v := w.check(t, recs)
	t.Logf("%d events, failover from A to B: %d duplicates", total, v.duplicates)
	b.signal(syscall.SIGTERM)
	if code := b.wait(30 * time.Second); code != 0 {
		t.Fatalf("standby exit code %d", code)
	}
}

// TestIdleOutboxBusyDatabase: with no outbox events but a busy database, the slot's
// confirmed position follows the server's WAL so retained WAL stays bounded.
func TestIdleOutboxBusyDatabase(t *testing.T) {
	e := newEnv(t, envOptions{})
	p := e.start()
	p.waitLog(`"streaming"`, 30*time.Second)
	e.exec(`CREATE TABLE busy (id serial primary key, filler text)`)
	start, _ := e.slotConfirmed()
	for i := 0; i < 20; i++ {
		e.exec(`INSERT INTO busy (filler) SELECT repeat('x', 500) FROM generate_series(1, 2000)`)
		time.Sleep(100 * time.Millisecond)
	}
	var retained int64
	waitFor(t, 30*time.Second, "slot to follow the WAL", func() bool {
		err := e.admin.QueryRow(context.Background(), `SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint
			FROM pg_replication_slots WHERE slot_name = $1`, e.slot).Scan(&retained)
		return err == nil && retained < 1<<20
	})
	end, _ := e.slotConfirmed()
	t.Logf("confirmed moved from %s to %s with an idle outbox; %d bytes behind", start, end, retained)
}

// waitFor polls cond until it holds or timeout.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if cond() {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("timed out after %s waiting for %s", timeout, what)
}

// TestFrozenProcess: pgoutbox is stopped (SIGSTOP) for longer than
// wal_sender_timeout, so the walsender gives up on it, then continued. It notices
// the dead connection, reconnects from the checkpoint, and delivers every event.
func TestFrozenProcess(t *testing.T) {
	e := newEnv(t, envOptions{kafka: kafkatest.Options{Partitions: 3}})
	e.exec(fmt.Sprintf(`ALTER ROLE %s IN DATABASE %s SET wal_sender_timeout = '2s'`, role, e.db))
	p := e.start()
	p.waitLog(`"streaming"`, 30*time.Second)
	w, stop := e.startWriters(2, 6)
	e.consume(30*time.Second, func(r []kafkatest.Record) bool { return len(r) > 0 })

	p.signal(syscall.SIGSTOP)
	waitFor(t, 20*time.Second, "the walsender to time out", func() bool {
		_, active := e.slotConfirmed()
		return !active
	})
	time.Sleep(time.Second)
	p.signal(syscall.SIGCONT)
	p.waitLog("pipeline stopped; reconnecting", 30*time.Second)
	waitFor(t, 30*time.Second, "pgoutbox to stream again", func() bool {
		_, active := e.slotConfirmed()
		return active
	})
	time.Sleep(time.Second)
	stop()
	e.settle(w)
	v := w.check(t, e.consumeAll(w, 60*time.Second))
	t.Logf("frozen past wal_sender_timeout: %d events, %d duplicates", w.total(), v.duplicates)
	p.mustBeRunning("after being continued")
	e.stopClean(p)
	if n := e.pendingChanges(); n != 0 {
		t.Errorf("slot would re-send %d inserts after a clean stop", n)
	}
}
