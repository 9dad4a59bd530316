package e2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/pgoutbox/pgoutbox/internal/kafkatest"
)

// TestSoak runs pgoutbox under live writers that mix one-event transactions,
// 100-event transactions and long transactions that write many rows of another
// table between their outbox rows, while faults come at random: kill -9, PostgreSQL
// restarts, a paused broker, and pgoutbox frozen with SIGSTOP past
// wal_sender_timeout. An independent consumer then checks that no committed event is
// missing, that per key the first occurrences keep commit order, that exactly-once
// shows a read_committed consumer no duplicate, and that the slot is confirmed past
// the end.
//
// SOAK_DURATION sets how long each mode runs (make soak: minutes); the default is
// the short version CI runs.
func TestSoak(t *testing.T) {
	d := 20 * time.Second
	if v := os.Getenv("SOAK_DURATION"); v != "" {
		var err error
		if d, err = time.ParseDuration(v); err != nil {
			t.Fatalf("SOAK_DURATION: %v", err)
		}
	}
	for _, mode := range []string{"at-least-once", "exactly-once"} {
		t.Run(mode, func(t *testing.T) { soak(t, d, mode == "exactly-once") })
	}
}

// soakFaults are the faults the soak injects, by name.
var soakFaults = []string{"kill -9", "postgres restart", "broker paused", "frozen past wal_sender_timeout"}

func soak(t *testing.T, d time.Duration, exactlyOnce bool) {
	c := ownCluster(t, map[string]string{"wal_sender_timeout": "4s"})
	e := newEnv(t, envOptions{cluster: c, kafka: kafkatest.Options{Partitions: 3}})
	e.exec(`CREATE TABLE filler (i int, pad text)`) // not in the publication
	args := []string{"--max-in-flight", "500"}
	if exactlyOnce {
		e.readCommitted = true
		args = append(args, "--exactly-once", "--txn-max-events", "200")
	}
	var paused atomic.Bool
	e.kafka.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
		if paused.Load() {
			e.kafka.SleepControl(func() {
				for paused.Load() {
					time.Sleep(50 * time.Millisecond)
				}
			})
		}
		return nil, nil, false
	})
	t.Cleanup(func() { paused.Store(false) })

	p := e.start(args...)
	p.waitLog(`"streaming"`, 30*time.Second)
	w := newWriters()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for wi, shape := range []soakShape{{events: 1}, {events: 1}, {events: 100, pause: 20 * time.Millisecond}, {events: 3, filler: 30000, pause: 200 * time.Millisecond}} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w.soakWriter(ctx, e.pg.SuperURL(e.db), wi, shape)
		}()
	}
	stopWriters := func() { cancel(); wg.Wait() }
	t.Cleanup(stopWriters)

	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 11))
	faults := map[string]int{}
	for end := time.Now().Add(d); time.Now().Before(end); {
		time.Sleep(time.Duration(1500+rng.IntN(2500)) * time.Millisecond)
		fault := soakFaults[rng.IntN(len(soakFaults))]
		faults[fault]++
		switch fault {
		case "kill -9":
			p.kill()
			p = e.start(args...)
		case "postgres restart":
			mode := []string{"fast", "immediate"}[rng.IntN(2)]
			if err := c.Restart(context.Background(), mode); err != nil {
				t.Fatalf("restart -m %s: %v", mode, err)
			}
		case "broker paused":
			paused.Store(true)
			time.Sleep(time.Duration(2000+rng.IntN(3000)) * time.Millisecond)
			paused.Store(false)
		case "frozen past wal_sender_timeout":
			p.signal(syscall.SIGSTOP)
			time.Sleep(6 * time.Second)
			p.signal(syscall.SIGCONT)
		}
		p.mustBeRunning("after " + fault)
	}
	time.Sleep(time.Second)
	stopWriters()
	e.reconnectAdmin() // the server restarts broke its connection
	// A writer stopped mid-COMMIT may see it commit a moment later.
	time.Sleep(time.Second)
	e.settle(w)
	recs := e.consumeAll(w, 120*time.Second)
	v := w.check(t, recs)
	e.settle(w)
	w.mu.Lock()
	phantoms := 0
	for _, r := range recs {
		if _, ok := w.committed[string(r.Headers["id"])]; !ok {
			phantoms++
		}
	}
	w.mu.Unlock()
	if phantoms > 0 {
		t.Errorf("%d records in Kafka of events the outbox table does not have", phantoms)
	}
	var list []string
	for _, f := range soakFaults {
		list = append(list, fmt.Sprintf("%s ×%d", f, faults[f]))
	}
	t.Logf("soak %s, %s: %d events committed, %d records, %d duplicates, %d missing; faults: %s",
		map[bool]string{false: "at-least-once", true: "exactly-once"}[exactlyOnce], d, w.total(), v.records, v.duplicates, len(v.missing), strings.Join(list, ", "))
	if exactlyOnce && v.duplicates != 0 {
		t.Errorf("%d duplicates for a read_committed consumer in exactly-once mode", v.duplicates)
	}
	waitFor(t, 60*time.Second, "pgoutbox streaming at the end", func() bool {
		_, active := e.slotConfirmedTolerant()
		return active
	})
	e.stopClean(p)
	if n := e.pendingChanges(); n != 0 {
		t.Errorf("slot would re-send %d inserts after a clean stop: not confirmed past the end", n)
	}
}

// soakShape is one writer's kind of transaction: events outbox rows, with filler
// rows of another table written between each two of them, then a pause.
type soakShape struct {
	events, filler int
	pause          time.Duration
}

// soakWriter commits transactions of shape until ctx ends, surviving server
// restarts like runTolerant.
func (w *writers) soakWriter(ctx context.Context, url string, wi int, shape soakShape) {
	var conn *pgx.Conn
	defer func() {
		if conn != nil {
			conn.Close(context.Background())
		}
	}()
	seq := map[string]int{}
	const keys = 8
	for n := 0; ctx.Err() == nil; n++ {
		if conn == nil {
			c, err := pgx.Connect(ctx, url)
			if err != nil {
				time.Sleep(100 * time.Millisecond)
				continue
			}
			conn = c
		}
		tx := newTxn(100+wi, n, shape.events, keys, seq)
		if shape.filler > 0 {
			// BEGIN, then an outbox row, filler, an outbox row, filler, …, COMMIT.
			q := tx.batch.QueuedQueries
			var out []*pgx.QueuedQuery
			for i, qq := range q {
				out = append(out, qq)
				if i > 0 && i < len(q)-2 {
					out = append(out, &pgx.QueuedQuery{SQL: `INSERT INTO filler SELECT i, repeat('x', 40) FROM generate_series(1, $1) i`, Arguments: []any{shape.filler}})
				}
			}
			tx.batch.QueuedQueries = out
		}
		if err := conn.SendBatch(ctx, &tx.batch).Close(); err != nil {
			conn.Close(context.Background())
			conn = nil
			// Not committed, or committed unseen (settle finds it): its seq
			// numbers are used up either way, so order stays checkable.
			continue
		}
		w.record(tx)
		if shape.pause > 0 {
			select {
			case <-ctx.Done():
			case <-time.After(shape.pause):
			}
		}
	}
}

// reconnectAdmin replaces the test's superuser connection, after server restarts.
func (e *env) reconnectAdmin() {
	e.t.Helper()
	admin, err := pgx.Connect(context.Background(), e.pg.SuperURL(e.db))
	if err != nil {
		e.t.Fatal(err)
	}
	e.admin.Close(context.Background())
	e.admin = admin
	e.t.Cleanup(func() { admin.Close(context.Background()) })
}
