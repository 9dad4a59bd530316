package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"github.com/jackc/pgx/v5"
	"math/rand/v2"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/pgoutbox/pgoutbox/internal/kafkatest"
)

// crashWindow is --max-in-flight in the crash tests. One crash may publish again
// what was produced but not yet covered by the checkpoint: up to the window, plus
// the open transaction, which cannot be confirmed before its commit and so is not
// held to the window (runTolerant commits at most maxWriterTxn events at once).
const (
	crashWindow  = 300
	maxWriterTxn = 6
)

var crashArgs = []string{"--max-in-flight", strconv.Itoa(crashWindow)}

// killed is the exit code proc reports for a process that died of SIGKILL.
const killed = -int(syscall.SIGKILL)

// finishCrash runs the last pgoutbox p a little longer under load, stops the
// writers, and checks what reached Kafka: nothing committed missing, per-key
// order of first occurrences, at most a window's worth of duplicates per crash.
// Then it stops p with SIGTERM and checks the slot holds nothing unconfirmed.
func (e *env) finishCrash(p *proc, w *writers, stop func(), crashes int) verdict {
	e.t.Helper()
	time.Sleep(500 * time.Millisecond)
	stop()
	e.settle(w)
	recs := e.consumeAll(w, 90*time.Second)
	v := w.check(e.t, recs)
	if limit := crashes * (crashWindow + maxWriterTxn); v.duplicates > limit {
		e.t.Errorf("%d duplicates after %d crashes exceed %d (--max-in-flight %d plus one open transaction per crash)",
			v.duplicates, crashes, limit, crashWindow)
	}
	e.stopClean(p)
	if n := e.pendingChanges(); n != 0 {
		e.t.Errorf("slot would re-send %d inserts after a clean stop", n)
	}
	return v
}

// startWriters starts n background writers and stops them at the latest when the
// test ends.
func (e *env) startWriters(n, keys int) (*writers, func()) {
	w, stop := e.background(e.t, n, keys)
	e.t.Cleanup(stop) // stop waits for the writers, and is safe to call twice
	return w, stop
}

// TestCrashFailpoints kills pgoutbox with SIGKILL at each failpoint of the confirm
// sequence (ack → checkpoint save → status update) while writers commit, then
// restarts it: nothing committed is lost, per-key order holds, duplicates stay
// within the in-flight window, and a clean stop leaves nothing unconfirmed.
func TestCrashFailpoints(t *testing.T) {
	for _, fp := range []string{"before-checkpoint=5", "after-checkpoint=5", "after-confirm=5"} {
		t.Run(fp, func(t *testing.T) {
			e := newEnv(t, envOptions{kafka: kafkatest.Options{Partitions: 4}})
			p := e.startEnv([]string{"PGOUTBOX_FAILPOINT=" + fp}, crashArgs...)
			p.waitLog(`"streaming"`, 30*time.Second)
			w, stop := e.startWriters(4, 10)
			if code := p.wait(30 * time.Second); code != killed {
				t.Fatalf("pgoutbox exited with %d, want death by SIGKILL at %s; output:\n%s", code, fp, tail(p.out.String(), 30))
			}
			before := w.total()
			e.waitInactive(10 * time.Second)
			p = e.start(crashArgs...)
			p.waitLog(`"streaming"`, 30*time.Second)
			v := e.finishCrash(p, w, stop, 1)
			t.Logf("%s: %d events committed before the crash, %d in all; %d records, %d duplicates", fp, before, w.total(), v.records, v.duplicates)
		})
	}
}

// TestCrashFirstStart kills pgoutbox on its very first start, after it created the
// slot and around saving the first checkpoint. The next start must neither see a
// gap nor miss what was committed in between.
func TestCrashFirstStart(t *testing.T) {
	for _, fp := range []string{"before-checkpoint=1", "after-checkpoint=1"} {
		t.Run(fp, func(t *testing.T) {
			e := newEnv(t, envOptions{kafka: kafkatest.Options{Partitions: 4}})
			p := e.startEnv([]string{"PGOUTBOX_FAILPOINT=" + fp}, crashArgs...)
			if code := p.wait(30 * time.Second); code != killed {
				t.Fatalf("pgoutbox exited with %d, want death by SIGKILL at %s; output:\n%s", code, fp, tail(p.out.String(), 30))
			}
			if e.slotSnapshot() == "" {
				t.Fatalf("no slot after the first start died at %s", fp)
			}
			_, err := os.Stat(e.checkpointPath())
			if fp == "before-checkpoint=1" && err == nil {
				t.Errorf("checkpoint file exists although pgoutbox died before saving it")
			}
			if fp == "after-checkpoint=1" && err != nil {
				t.Errorf("checkpoint file missing although pgoutbox died after saving it: %v", err)
			}
			e.waitInactive(10 * time.Second)
			w, stop := e.startWriters(4, 10) // committed while pgoutbox is down
			time.Sleep(300 * time.Millisecond)
			p = e.start(crashArgs...)
			p.waitLog(`"streaming"`, 30*time.Second)
			v := e.finishCrash(p, w, stop, 1)
			t.Logf("%s: %d events, %d duplicates", fp, w.total(), v.duplicates)
		})
	}
}

// TestCrashManyKills kills pgoutbox many times at random points — a plain SIGKILL
// at a random moment (sometimes before it streams), or a failpoint at a random
// confirm — under four concurrent writers.
func TestCrashManyKills(t *testing.T) {
	rounds := 10
	if testing.Short() {
		rounds = 4
	}
	e := newEnv(t, envOptions{kafka: kafkatest.Options{Partitions: 4}})
	p := e.start(crashArgs...)
	p.waitLog(`"streaming"`, 30*time.Second)
	w, stop := e.startWriters(4, 10)
	rng := rand.New(rand.NewPCG(20240601, 7))
	points := []string{"", "before-checkpoint", "after-checkpoint", "after-confirm"}
	kills := map[string]int{}
	for i := 0; i < rounds; i++ {
		point := "" // the first round kills the run that created the slot
		if i > 0 {
			point = points[rng.IntN(len(points))]
			var environ []string
			if point != "" {
				environ = []string{fmt.Sprintf("PGOUTBOX_FAILPOINT=%s=%d", point, 1+rng.IntN(8))}
			}
			p = e.startEnv(environ, crashArgs...)
		}
		if point == "" {
			// Up to a second: sometimes before pgoutbox streams.
			time.Sleep(time.Duration(rng.IntN(1000)) * time.Millisecond)
			p.kill()
		} else {
			p.wait(30 * time.Second)
		}
		if code := p.exitCode(); code != killed {
			t.Fatalf("round %d (%q): pgoutbox exited with %d, want death by SIGKILL; output:\n%s", i, point, code, tail(p.out.String(), 30))
		}
		kills[point]++
		e.waitInactive(10 * time.Second)
	}
	p = e.start(crashArgs...)
	p.waitLog(`"streaming"`, 30*time.Second)
	v := e.finishCrash(p, w, stop, rounds)
	t.Logf("%d events, %d kills (plain %d, before-checkpoint %d, after-checkpoint %d, after-confirm %d), %d records, %d duplicates",
		w.total(), rounds, kills[""], kills["before-checkpoint"], kills["after-checkpoint"], kills["after-confirm"], v.records, v.duplicates)
}

// TestCrashNoConfirmWithoutAck holds every Produce request in the broker, so no
// event is acknowledged, and checks that pgoutbox keeps the slot (and its
// checkpoint) at or before the first unacknowledged transaction while it keeps
// running, and confirms past it once Kafka acknowledges.
func TestCrashNoConfirmWithoutAck(t *testing.T) {
	e := newEnv(t, envOptions{})
	p := e.start()
	p.waitLog(`"streaming"`, 30*time.Second)
	e.waitIDs(e.insertRange(0, 5), 30*time.Second) // the topic exists and the producer has its id

	release := make(chan struct{})
	var once sync.Once
	unblock := func() { once.Do(func() { close(release) }) }
	t.Cleanup(unblock) // before the broker closes
	var held atomic.Int64
	e.kafka.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
		select {
		case <-release:
			return nil, nil, false
		default:
		}
		held.Add(1)
		e.kafka.SleepControl(func() { <-release })
		return nil, nil, false // then the broker handles it as usual
	})

	// The first unacknowledged transaction: its commit record starts at or after
	// bound, the insert position read inside it after its inserts.
	ctx := context.Background()
	tx, err := e.admin.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ids := []string{uuidFor(100), uuidFor(101), uuidFor(102)}
	for _, id := range ids {
		if _, err := tx.Exec(ctx, `INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload) VALUES ($1, 'held', 'h', 'T', '{}')`, id); err != nil {
			t.Fatal(err)
		}
	}
	var bound string
	if err := tx.QueryRow(ctx, `SELECT pg_current_wal_insert_lsn()::text`).Scan(&bound); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 5; i++ {
		ids = append(ids, e.insertRange(200+10*i, 3)...)
	}
	waitFor(t, 30*time.Second, "a Produce request to be held", func() bool { return held.Load() > 0 })

	// Twenty status intervals: pgoutbox confirms all the while, never past bound.
	for end := time.Now().Add(4 * time.Second); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		var confirmed string
		var ok, active bool
		err := e.admin.QueryRow(ctx, `SELECT confirmed_flush_lsn::text, confirmed_flush_lsn <= $2::pg_lsn, active
			FROM pg_replication_slots WHERE slot_name = $1`, e.slot, bound).Scan(&confirmed, &ok, &active)
		if err != nil {
			t.Fatal(err)
		}
		if !ok {
			t.Fatalf("slot confirmed %s, past %s inside the first unacknowledged transaction", confirmed, bound)
		}
		if !active {
			t.Fatalf("slot inactive while Kafka held the events: pgoutbox stopped streaming")
		}
		if cp := e.checkpointLSN(); !e.lsnLE(cp, bound) {
			t.Fatalf("checkpoint saved at %s, past %s inside the first unacknowledged transaction", cp, bound)
		}
		select {
		case <-p.done:
			t.Fatalf("pgoutbox exited while Kafka held the events: %v", p.err)
		default:
		}
	}
	confirmedHeld, _ := e.slotConfirmed()

	unblock()
	e.waitIDs(ids, 60*time.Second)
	waitFor(t, 30*time.Second, "the slot to confirm past the acknowledged transactions", func() bool {
		c, _ := e.slotConfirmed()
		return !e.lsnLE(c, bound)
	})
	confirmedAfter, _ := e.slotConfirmed()
	t.Logf("%d produce requests held; confirmed %s while held (bound %s), %s after the acks", held.Load(), confirmedHeld, bound, confirmedAfter)
	e.stopClean(p)
	if n := e.pendingChanges(); n != 0 {
		t.Errorf("slot would re-send %d inserts after a clean stop", n)
	}
}

// settle adds to w the events whose commit a writer saw fail when it was stopped
// (the connection closed during COMMIT) but that did commit: the outbox table is
// the truth. Call it after the writers stopped.
func (e *env) settle(w *writers) {
	e.t.Helper()
	// A fresh connection: the test may have restarted the server under e.admin.
	conn, err := pgx.Connect(context.Background(), e.pg.SuperURL(e.db))
	if err != nil {
		e.t.Fatal(err)
	}
	defer conn.Close(context.Background())
	rows, err := conn.Query(context.Background(), `SELECT id::text, payload->>'key', (payload->>'seq')::int FROM outbox WHERE payload ? 'seq'`)
	if err != nil {
		e.t.Fatal(err)
	}
	defer rows.Close()
	w.mu.Lock()
	defer w.mu.Unlock()
	for rows.Next() {
		var id, key string
		var seq int
		if err := rows.Scan(&id, &key, &seq); err != nil {
			e.t.Fatal(err)
		}
		if _, ok := w.committed[id]; !ok {
			w.committed[id] = seq
			w.keys[id] = key
			w.count++
		}
	}
	if err := rows.Err(); err != nil {
		e.t.Fatal(err)
	}
}

// checkpointLSN reads the LSN from pgoutbox's checkpoint file.
func (e *env) checkpointLSN() string {
	e.t.Helper()
	b, err := os.ReadFile(e.checkpointPath())
	if err != nil {
		e.t.Fatal(err)
	}
	var cp struct {
		LSN string `json:"lsn"`
	}
	if err := json.Unmarshal(b, &cp); err != nil || cp.LSN == "" {
		e.t.Fatalf("checkpoint file %s: %v", b, err)
	}
	return cp.LSN
}

// lsnLE compares two LSNs the way PostgreSQL does.
// notConfirmedPast fails the test if the slot is confirmed past bound, a WAL
// position before the commit of a row that was not published.
func (e *env) notConfirmedPast(bound string) {
	e.t.Helper()
	if confirmed, _ := e.slotConfirmed(); !e.lsnLE(confirmed, bound) {
		e.t.Errorf("slot confirmed up to %s, past %s before the unpublished row's commit", confirmed, bound)
	}
}

func (e *env) lsnLE(a, b string) bool {
	e.t.Helper()
	var le bool
	if err := e.admin.QueryRow(context.Background(), `SELECT $1::pg_lsn <= $2::pg_lsn`, a, b).Scan(&le); err != nil {
		e.t.Fatal(err)
	}
	return le
}
