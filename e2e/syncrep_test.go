package e2e

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgoutbox/pgoutbox/internal/kafkatest"
	"github.com/pgoutbox/pgoutbox/internal/pgtest"
)

// standbyName is the synchronous standby's application_name.
const standbyName = "standby1"

// syncPair starts a primary whose commits wait for one synchronous standby
// (synchronous_standby_names names it, synchronous_commit on), and that standby,
// made with pg_basebackup and streaming. Design §8: a commit record is flushed, and
// decoded by the walsender, before the standby confirmed it.
func syncPair(t *testing.T) (primary, standby *pgtest.Cluster) {
	t.Helper()
	primary = pgtest.New(t, pgtest.Options{Durable: true, Settings: map[string]string{
		"synchronous_standby_names": standbyName,
		"synchronous_commit":        "on",
	}})
	standby = pgtest.NewStandby(t, primary, pgtest.StandbyOptions{Name: standbyName})
	if err := primary.WaitStreaming(context.Background(), standbyName, "sync"); err != nil {
		t.Fatal(err)
	}
	return primary, standby
}

// pendingCommit is an outbox insert committing on its own connection in the
// background.
type pendingCommit struct {
	id   string
	done chan error // gets the commit's result
}

// commitInBackground inserts ev in its own transaction on a new connection and
// returns at once; with the synchronous standby stopped, the commit waits in
// SyncRepWaitForLSN. The connection closes when the commit returns, or when the test
// ends (the wait is then cancelled, which commits the transaction locally).
func (e *env) commitInBackground(ev event) *pendingCommit {
	e.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	conn, err := pgx.Connect(ctx, e.pg.SuperURL(e.db))
	if err != nil {
		cancel()
		e.t.Fatal(err)
	}
	c := &pendingCommit{id: ev.ID, done: make(chan error, 1)}
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		_, err := conn.Exec(ctx, `INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload) VALUES ($1, $2, $3, $4, $5)`,
			ev.ID, ev.Type, ev.AggID, ev.Kind, ev.Payload)
		c.done <- err
		conn.Close(context.Background())
	}()
	e.t.Cleanup(func() { cancel(); <-finished })
	return c
}

// waitSyncRepWaiters waits until n backends wait for the synchronous standby.
func (e *env) waitSyncRepWaiters(n int) {
	e.t.Helper()
	waitFor(e.t, 20*time.Second, "commits to wait for the synchronous standby", func() bool {
		var waiting int
		err := e.admin.QueryRow(context.Background(), `SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'SyncRep'`).Scan(&waiting)
		return err == nil && waiting == n
	})
}

// commitLocal commits ev with synchronous_commit = local: it does not wait for the
// standby.
func (e *env) commitLocal(ev event) {
	e.t.Helper()
	ctx := context.Background()
	tx, err := e.admin.Begin(ctx)
	if err != nil {
		e.t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	for _, sql := range []string{`SET LOCAL synchronous_commit = local`,
		`INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload) VALUES ($1, $2, $3, $4, $5)`} {
		var args []any
		if strings.HasPrefix(sql, "INSERT") {
			args = []any{ev.ID, ev.Type, ev.AggID, ev.Kind, ev.Payload}
		}
		if _, err := tx.Exec(ctx, sql, args...); err != nil {
			e.t.Fatal(err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		e.t.Fatal(err)
	}
}

// idsIn returns the event ids of recs in offset order (one partition).
func idsIn(recs []kafkatest.Record) []string {
	var ids []string
	for _, r := range recs {
		ids = append(ids, string(r.Headers["id"]))
	}
	return ids
}

// absentFor consumes for d and returns what arrived, failing the test if one of ids
// did.
func (e *env) absentFor(d time.Duration, why string, ids ...string) []string {
	e.t.Helper()
	got := idsIn(e.consume(d, hasIDs(ids...)))
	for _, id := range ids {
		if slices.Contains(got, id) {
			e.t.Errorf("event %s reached Kafka %s", id, why)
		}
	}
	return got
}

func syncEvent(i int) event {
	return event{ID: uuidFor(i), Type: "order", AggID: "k", Kind: "T", Payload: `{"n": 1}`}
}

// TestSyncGuardHoldsUnconfirmedCommit: with a synchronous standby stopped, a commit
// on the primary waits for it; its event, already flushed and decoded, must not
// reach Kafka while the walsender and pgoutbox stay alive. A transaction committed
// afterwards with synchronous_commit = local is held behind it: events go out in
// commit order. Once the standby is back, the commit returns and both arrive, in
// order.
func TestSyncGuardHoldsUnconfirmedCommit(t *testing.T) {
	p, s := syncPair(t)
	e := newEnv(t, envOptions{cluster: p, kafka: kafkatest.Options{Partitions: 1}})
	e.exec(fmt.Sprintf(`ALTER ROLE %s IN DATABASE %s SET log_statement = 'all'`, role, e.db))
	run := e.start() // --sync-guard auto
	run.waitLog("sync guard on", 30*time.Second)
	run.waitLog(`"streaming"`, 30*time.Second)
	e.insertTx(syncEvent(1))
	e.waitIDs([]string{uuidFor(1)}, 30*time.Second)

	if err := s.Stop("fast"); err != nil {
		t.Fatal(err)
	}
	blocked := e.commitInBackground(syncEvent(2))
	e.waitSyncRepWaiters(1)
	held, queries := time.Now(), snapshotQueries(t, p)
	e.commitLocal(syncEvent(3))
	got := e.absentFor(4*time.Second, "while its commit waited for the synchronous standby", uuidFor(2))
	// The guard asks again and again while the commit waits, but it must not
	// poll the primary in a busy loop (every millisecond it made ~600 queries/s).
	asked, heldFor := snapshotQueries(t, p)-queries, time.Since(held)
	t.Logf("%d snapshot queries while holding the event back for %s", asked, heldFor.Round(time.Millisecond))
	if most := int(heldFor/(50*time.Millisecond)) + 20; asked > most {
		t.Errorf("%d snapshot queries in %s: the guard polls the primary in a busy loop", asked, heldFor.Round(time.Millisecond))
	}
	if slices.Contains(got, uuidFor(3)) {
		t.Logf("the synchronous_commit=local event arrived while the earlier commit waited")
	} else {
		t.Logf("the synchronous_commit=local event, committed after the waiting one, is held behind it (commit order)")
	}
	select {
	case err := <-blocked.done:
		t.Fatalf("the commit returned with its synchronous standby stopped: %v", err)
	default:
	}
	if _, active := e.slotConfirmed(); !active {
		t.Errorf("the walsender is gone while pgoutbox held the transaction back")
	}
	run.mustBeRunning("while holding a transaction back")

	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	restarted := time.Now()
	select {
	case err := <-blocked.done:
		if err != nil {
			t.Fatalf("the waiting commit failed once the standby was back: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the waiting commit did not return within 30s of the standby's start")
	}
	committed := time.Now()
	e.waitIDs([]string{uuidFor(2), uuidFor(3)}, 30*time.Second)
	arrived := time.Now()
	order := idsIn(e.consumeN(3, 30*time.Second))
	want := []string{uuidFor(1), uuidFor(2), uuidFor(3)}
	if !slices.Equal(order, want) {
		t.Errorf("Kafka has %v, want %v (once each, in commit order)", order, want)
	}
	t.Logf("held %s while the standby was stopped; commit returned %s after the standby's start, event in Kafka %s after that",
		restarted.Sub(held).Round(time.Millisecond), committed.Sub(restarted).Round(time.Millisecond), arrived.Sub(committed).Round(time.Millisecond))
}

// TestSyncGuardOffShowsPhantom: the same with --sync-guard off. The waiting
// commit's event reaches Kafka although the standby never confirmed it: what the
// guard prevents, and proof that the test above can see it.
func TestSyncGuardOffShowsPhantom(t *testing.T) {
	p, s := syncPair(t)
	e := newEnv(t, envOptions{cluster: p, kafka: kafkatest.Options{Partitions: 1}})
	run := e.start("--sync-guard", "off")
	run.waitLog(`"streaming"`, 30*time.Second)
	if strings.Contains(run.out.String(), "sync guard on") {
		t.Fatalf("--sync-guard off logged the guard on")
	}
	if err := s.Stop("fast"); err != nil {
		t.Fatal(err)
	}
	blocked := e.commitInBackground(syncEvent(1))
	e.waitSyncRepWaiters(1)
	waiting := time.Now()
	e.waitIDs([]string{uuidFor(1)}, 30*time.Second)
	select {
	case err := <-blocked.done:
		t.Fatalf("the commit returned (%v) before its event was seen: the test proves nothing", err)
	default:
	}
	t.Logf("without the guard the event of a commit still waiting for its standby was in Kafka after %s", time.Since(waiting).Round(time.Millisecond))
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := <-blocked.done; err != nil {
		t.Fatalf("commit: %v", err)
	}
}

// TestSyncGuardFailover: a commit waits for the stopped synchronous standby, the
// primary crashes (-m immediate), and the standby, which never received the commit,
// is promoted. The transaction does not exist on the new primary; its event never
// reached Kafka. pgoutbox pointed at the promoted standby refuses with a gap error:
// PostgreSQL 15 has no failover slots, so the slot is missing there while the
// checkpoint says events were published from it.
func TestSyncGuardFailover(t *testing.T) {
	p, s := syncPair(t)
	e := newEnv(t, envOptions{cluster: p, kafka: kafkatest.Options{Partitions: 1}})
	run := e.start()
	run.waitLog("sync guard on", 30*time.Second)
	run.waitLog(`"streaming"`, 30*time.Second)
	e.insertTx(syncEvent(1))
	e.waitIDs([]string{uuidFor(1)}, 30*time.Second)

	if err := s.Stop("fast"); err != nil {
		t.Fatal(err)
	}
	blocked := e.commitInBackground(syncEvent(2))
	e.waitSyncRepWaiters(1)
	e.absentFor(3*time.Second, "while its commit waited for the synchronous standby", uuidFor(2))
	if err := p.Stop("immediate"); err != nil {
		t.Fatal(err)
	}
	if err := <-blocked.done; err == nil {
		t.Fatal("the waiting commit returned success although the primary crashed")
	}
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := s.Promote(context.Background()); err != nil {
		t.Fatal(err)
	}
	conn, err := pgx.Connect(context.Background(), s.SuperURL(e.db))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var rows int
	if err := conn.QueryRow(context.Background(), `SELECT count(*) FROM outbox WHERE id = $1`, uuidFor(2)).Scan(&rows); err != nil {
		t.Fatal(err)
	}
	if rows != 0 {
		t.Fatalf("the promoted standby has the row whose commit it never confirmed: the test proves nothing")
	}
	run.kill()
	got := e.absentFor(3*time.Second, "although its transaction is gone after the failover", uuidFor(2))
	if !slices.Equal(got, []string{uuidFor(1)}) {
		t.Errorf("Kafka has %v, want only %s", got, uuidFor(1))
	}
	// And what is in Kafka exists on the new primary.
	for _, id := range got {
		if err := conn.QueryRow(context.Background(), `SELECT count(*) FROM outbox WHERE id = $1`, id).Scan(&rows); err != nil || rows != 1 {
			t.Errorf("event %s is in Kafka but not on the promoted standby (%d rows, %v)", id, rows, err)
		}
	}

	args := e.args()
	args[slices.Index(args, "--postgres-url")+1] = s.URL(role, e.db)
	after := e.startArgs(nil, args)
	if code := after.wait(60 * time.Second); code != 1 {
		t.Errorf("pgoutbox on the promoted standby exited %d, want 1; output:\n%s", code, tail(after.out.String(), 30))
	}
	out := after.out.String()
	for _, want := range []string{"gap between checkpoint and slot", "does not exist", "--accept-gap"} {
		if !strings.Contains(out, want) {
			t.Errorf("pgoutbox on the promoted standby does not say %q:\n%s", want, tail(out, 30))
		}
	}
	if strings.Contains(out, `"streaming"`) {
		t.Errorf("pgoutbox streamed from the promoted standby despite the gap")
	}
}

// TestSyncGuardCancelledWait: a commit's wait for the stopped standby is cancelled
// (pg_cancel_backend). The transaction is then committed on the primary — the
// client got a warning, not an error — so its event is real and the guard
// publishes it without the standby.
func TestSyncGuardCancelledWait(t *testing.T) {
	p, s := syncPair(t)
	e := newEnv(t, envOptions{cluster: p, kafka: kafkatest.Options{Partitions: 1}})
	run := e.start()
	run.waitLog("sync guard on", 30*time.Second)
	run.waitLog(`"streaming"`, 30*time.Second)
	if err := s.Stop("fast"); err != nil {
		t.Fatal(err)
	}
	blocked := e.commitInBackground(syncEvent(1))
	e.waitSyncRepWaiters(1)
	e.absentFor(2*time.Second, "while its commit waited for the synchronous standby", uuidFor(1))
	e.exec(`SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE wait_event = 'SyncRep'`)
	cancelled := time.Now()
	if err := <-blocked.done; err != nil {
		t.Fatalf("a cancelled wait for the standby should leave the commit done (a warning): %v", err)
	}
	e.waitIDs([]string{uuidFor(1)}, 30*time.Second)
	t.Logf("event of the commit whose wait was cancelled seen by a new consumer %s after the cancel (its start included), standby still stopped", time.Since(cancelled).Round(time.Millisecond))
	run.mustBeRunning("after the cancel")
}

// snapshotQueries counts the guard's snapshot queries in the server log; the test
// has the pgoutbox role log its statements.
func snapshotQueries(t *testing.T, c *pgtest.Cluster) int {
	t.Helper()
	b, err := os.ReadFile(c.LogFile())
	if err != nil {
		t.Fatal(err)
	}
	return strings.Count(string(b), "FROM pg_current_snapshot()")
}
