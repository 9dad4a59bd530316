package e2e

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/pgoutbox/pgoutbox/internal/kafkatest"
	"github.com/pgoutbox/pgoutbox/internal/pgtest"
)

// partitionWalSenderTimeout is the test server's wal_sender_timeout: pgoutbox's
// receive timeout follows it, and the walsender gives up on a silent pgoutbox after
// it.
const partitionWalSenderTimeout = 4 * time.Second

// world is pgoutbox in its own network namespace, with PostgreSQL and the broker on
// the host end of the link, paced writers and a consumer on the host.
type world struct {
	*env
	ns                *netns
	pgPort, kafkaPort int
	run               *proc
	metrics           string // pgoutbox's metrics address, in the namespace
	writers           *writers
	stopWriters       func()
	watch             *watcher
}

// newWorld starts it all and waits until the first events are in Kafka.
func newWorld(t *testing.T) *world {
	t.Helper()
	ns := newNetns(t)
	c := pgtest.New(t, pgtest.Options{Durable: true, Listen: []string{ns.hostIP}, TrustNets: []string{ns.nsIP + "/32"},
		Settings: map[string]string{"wal_sender_timeout": fmt.Sprint(partitionWalSenderTimeout.Milliseconds()) + "ms"}})
	listen := kfake.ListenFn(func(network, addr string) (net.Listener, error) {
		_, port, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, err
		}
		return net.Listen(network, net.JoinHostPort(ns.hostIP, port))
	})
	e := newEnv(t, envOptions{cluster: c, kafka: kafkatest.Options{Partitions: 3, Extra: []kfake.Opt{listen}}})
	w := &world{env: e, ns: ns, pgPort: c.Port}
	_, kp, err := net.SplitHostPort(e.brokers)
	if err != nil || strings.Contains(e.brokers, ",") {
		t.Fatalf("brokers %q: want one on %s", e.brokers, ns.hostIP)
	}
	w.kafkaPort, _ = strconv.Atoi(kp)
	args := e.args("--metrics-addr", net.JoinHostPort(ns.nsIP, "0"))
	args[slices.Index(args, "--postgres-url")+1] = strings.Replace(e.url(), "127.0.0.1", ns.hostIP, 1)
	w.run = e.startIn(ns, args)
	w.run.waitLog(`"streaming"`, 30*time.Second)
	w.metrics = metricsAddr(t, w.run)
	w.watch = e.watch()
	w.writers, w.stopWriters = e.pacedWriters(2, 5, 20*time.Millisecond)
	if _, err := w.watch.waitArrival(time.Now(), 30*time.Second); err != nil {
		t.Fatalf("before any cut: %v", err)
	}
	return w
}

// finish stops the writers, waits until every committed event is in Kafka and
// checks them: none lost, per-key order of first occurrences. It logs the figures.
func (w *world) finish(what string, healed time.Time) verdict {
	w.t.Helper()
	time.Sleep(time.Second)
	w.stopWriters()
	w.settle(w.writers)
	last, err := w.watch.waitAll(w.writers, 90*time.Second)
	if err != nil {
		w.t.Error(err)
	}
	v := w.writers.check(w.t, w.watch.records())
	w.t.Logf("%s: %d events written, %d delivered (%d records), %d lost, %d duplicates; all in Kafka %s after the last heal",
		what, w.writers.total(), v.unique, v.records, len(v.missing), v.duplicates, last.Sub(healed).Round(time.Millisecond))
	w.run.mustBeRunning("after " + what)
	return v
}

// reconnects counts the sessions that ended in pgoutbox's log so far.
func (w *world) reconnects() int {
	return strings.Count(w.run.out.String(), "pipeline stopped; reconnecting")
}

// waitReconnectLogged waits until more than n sessions ended and returns when, and
// the log line.
func (w *world) waitReconnectLogged(n int, timeout time.Duration) (time.Time, string) {
	w.t.Helper()
	var at time.Time
	waitFor(w.t, timeout, "pgoutbox to notice the dead connection", func() bool {
		w.run.mustBeRunning("while the link was cut")
		if w.reconnects() > n {
			at = time.Now()
			return true
		}
		return false
	})
	lines := strings.Split(w.run.out.String(), "\n")
	for _, l := range lines {
		if strings.Contains(l, "pipeline stopped; reconnecting") {
			n--
			if n < 0 {
				return at, l
			}
		}
	}
	return at, ""
}

// readyz returns /readyz's status code, or -1 when it does not answer.
func (w *world) readyz() int {
	c := http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get("http://" + w.metrics + "/readyz")
	if err != nil {
		return -1
	}
	resp.Body.Close()
	return resp.StatusCode
}

// slotActive reads whether a walsender streams from the slot.
func (w *world) slotActive() bool {
	_, active := w.slotConfirmed()
	return active
}

// TestSilentPartitionPostgres: the link to PostgreSQL drops every packet, silently, for
// three times wal_sender_timeout. pgoutbox notices by itself (its receive timeout:
// the server's keepalives stopped), the walsender times out and releases the slot,
// and once the link is back pgoutbox reconnects and publishes everything.
func TestSilentPartitionPostgres(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	before := w.reconnects()
	cutAt := time.Now()
	w.ns.cut(w.pgPort)
	noticed, line := w.waitReconnectLogged(before, 60*time.Second)
	if !strings.Contains(line, "presumed dead") {
		t.Logf("pgoutbox noticed by another way than its receive timeout: %s", line)
	}
	var released time.Time
	waitFor(t, 60*time.Second, "the walsender to release the slot", func() bool {
		if !w.slotActive() {
			released = time.Now()
			return true
		}
		return false
	})
	time.Sleep(time.Until(cutAt.Add(3 * partitionWalSenderTimeout)))
	w.run.mustBeRunning("during the cut")
	if w.slotActive() {
		t.Errorf("the slot is active during the cut")
	}
	healAt := time.Now()
	w.ns.heal(w.pgPort)
	var streaming time.Time
	waitFor(t, 90*time.Second, "pgoutbox to stream again", func() bool {
		if w.slotActive() {
			streaming = time.Now()
			return true
		}
		return false
	})
	resumed, err := w.watch.waitArrival(healAt, 60*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("PostgreSQL cut for %s: pgoutbox noticed after %s, the walsender released the slot after %s; after heal: streaming again %s, first new event in Kafka %s",
		healAt.Sub(cutAt).Round(time.Millisecond), noticed.Sub(cutAt).Round(time.Millisecond), released.Sub(cutAt).Round(time.Millisecond),
		streaming.Sub(healAt).Round(time.Millisecond), resumed.Sub(healAt).Round(time.Millisecond))
	if d := noticed.Sub(cutAt); d < partitionWalSenderTimeout {
		t.Errorf("pgoutbox gave up on the connection after %s, before wal_sender_timeout (%s)", d, partitionWalSenderTimeout)
	}
	w.finish("PostgreSQL partition", healAt)
}

// TestSilentPartitionKafka: the link to the broker drops every packet for a minute.
// pgoutbox stays up with backpressure, keeps the walsender alive (wal_sender_timeout
// is 4s), confirms nothing new and turns not ready; once the link is back delivery
// resumes within seconds, nothing lost or reordered.
func TestSilentPartitionKafka(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	cutAt := time.Now()
	w.ns.cut(w.kafkaPort)
	var notReady time.Time
	var confirmedEarly string
	inactive := 0
	for time.Since(cutAt) < time.Minute {
		time.Sleep(500 * time.Millisecond)
		w.run.mustBeRunning("while Kafka was cut off")
		if notReady.IsZero() && w.readyz() == http.StatusServiceUnavailable {
			notReady = time.Now()
		}
		confirmed, active := w.slotConfirmed()
		if !active {
			inactive++
		}
		if confirmedEarly == "" && time.Since(cutAt) > 2*time.Second {
			confirmedEarly = confirmed
		}
	}
	if inactive > 0 {
		t.Errorf("the slot was inactive in %d samples while Kafka was cut off: the walsender timed out", inactive)
	}
	if notReady.IsZero() {
		t.Errorf("/readyz stayed ready through a minute without Kafka")
	}
	if confirmed, _ := w.slotConfirmed(); confirmed != confirmedEarly {
		t.Errorf("confirmed moved from %s to %s while Kafka was cut off: nothing was acknowledged", confirmedEarly, confirmed)
	}
	healAt := time.Now()
	w.ns.heal(w.kafkaPort)
	resumed, err := w.watch.waitArrival(healAt, 90*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var ready time.Time
	waitFor(t, 90*time.Second, "/readyz to be ready again", func() bool {
		if w.readyz() == http.StatusOK {
			ready = time.Now()
			return true
		}
		return false
	})
	t.Logf("Kafka cut for %s: /readyz not ready after %s, walsender alive throughout; after heal: first event in Kafka %s, ready again %s",
		healAt.Sub(cutAt).Round(time.Millisecond), sinceOrNever(notReady, cutAt), resumed.Sub(healAt).Round(time.Millisecond), ready.Sub(healAt).Round(time.Millisecond))
	w.finish("Kafka partition", healAt)
}

// TestSilentPartitionBoth: both links drop every packet at once for five times
// wal_sender_timeout; pgoutbox survives and delivers everything once they are back.
func TestSilentPartitionBoth(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	before := w.reconnects()
	cutAt := time.Now()
	w.ns.cut(w.pgPort, w.kafkaPort)
	noticed, _ := w.waitReconnectLogged(before, 90*time.Second)
	var notReady time.Time
	waitFor(t, 60*time.Second, "/readyz to turn not ready", func() bool {
		if w.readyz() == http.StatusServiceUnavailable {
			notReady = time.Now()
			return true
		}
		return false
	})
	time.Sleep(time.Until(cutAt.Add(5 * partitionWalSenderTimeout)))
	w.run.mustBeRunning("during the cut")
	healAt := time.Now()
	w.ns.heal(w.pgPort, w.kafkaPort)
	var streaming time.Time
	waitFor(t, 120*time.Second, "pgoutbox to stream again", func() bool {
		if w.slotActive() {
			streaming = time.Now()
			return true
		}
		return false
	})
	resumed, err := w.watch.waitArrival(healAt, 90*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("PostgreSQL and Kafka cut for %s: pgoutbox noticed the dead replication connection after %s, not ready after %s; after heal: streaming again %s, first event in Kafka %s",
		healAt.Sub(cutAt).Round(time.Millisecond), noticed.Sub(cutAt).Round(time.Millisecond), notReady.Sub(cutAt).Round(time.Millisecond),
		streaming.Sub(healAt).Round(time.Millisecond), resumed.Sub(healAt).Round(time.Millisecond))
	w.finish("PostgreSQL and Kafka partition", healAt)
}

// TestSilentPartitionFlapping: for a minute both links go down and up every few seconds,
// some cuts shorter than wal_sender_timeout, some longer.
func TestSilentPartitionFlapping(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	down := []time.Duration{2 * time.Second, 5 * time.Second, 3 * time.Second, 6 * time.Second}
	up := []time.Duration{3 * time.Second, 2 * time.Second, 3 * time.Second, 2 * time.Second}
	start := time.Now()
	cuts := 0
	var healAt time.Time
	for i := 0; time.Since(start) < time.Minute; i++ {
		w.ns.cut(w.pgPort, w.kafkaPort)
		cuts++
		time.Sleep(down[i%len(down)])
		w.ns.heal(w.pgPort, w.kafkaPort)
		healAt = time.Now()
		time.Sleep(up[i%len(up)])
		w.run.mustBeRunning("while the link flapped")
	}
	resumed, err := w.watch.waitArrival(healAt, 90*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("link flapped %d times in %s; pgoutbox ended %d sessions; first event after the last heal %s",
		cuts, time.Since(start).Round(time.Second), w.reconnects(), resumed.Sub(healAt).Round(time.Millisecond))
	w.finish("flapping link", healAt)
}

func sinceOrNever(at, from time.Time) string {
	if at.IsZero() {
		return "never"
	}
	return at.Sub(from).Round(time.Millisecond).String()
}

// pacedWriters runs n writers like background's, each committing a transaction of
// 1 to 6 events every so often, so a minute's backlog stays small; stop waits for
// them, and runs at the latest when the test ends.
func (e *env) pacedWriters(n, keysPer int, every time.Duration) (*writers, func()) {
	ctx, cancel := context.WithCancel(context.Background())
	w := newWriters()
	url := e.pg.SuperURL(e.db)
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
			tick := time.NewTicker(every)
			defer tick.Stop()
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
				select {
				case <-ctx.Done():
				case <-tick.C:
				}
			}
		}(wi)
	}
	var once sync.Once
	stop := func() { once.Do(func() { cancel(); wg.Wait() }) }
	e.t.Cleanup(stop)
	return w, stop
}

// watcher is an independent consumer that keeps every record and when it arrived.
type watcher struct {
	mu      sync.Mutex
	recs    []kafkatest.Record
	arrived []time.Time // of recs[i]
	stop    func()
}

// watch starts a watcher on e's outbox topics; it stops when the test ends.
func (e *env) watch() *watcher {
	e.t.Helper()
	c, err := kafkatest.NewConsumer(e.brokers, kafkatest.ConsumeOptions{TopicRegex: e.topicRegex(), ReadCommitted: e.readCommitted})
	if err != nil {
		e.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	w := &watcher{}
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			recs, err := c.Poll(ctx)
			now := time.Now()
			w.mu.Lock()
			for _, r := range recs {
				w.recs = append(w.recs, r)
				w.arrived = append(w.arrived, now)
			}
			w.mu.Unlock()
			if err != nil && ctx.Err() == nil {
				e.t.Errorf("watcher: %v", err)
				return
			}
		}
	}()
	var once sync.Once
	w.stop = func() { once.Do(func() { cancel(); <-done; c.Close() }) }
	e.t.Cleanup(w.stop)
	return w
}

// records returns a copy of what arrived so far.
func (w *watcher) records() []kafkatest.Record {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.recs)
}

// waitArrival waits for the first record to arrive after t0 and returns when it did.
func (w *watcher) waitArrival(t0 time.Time, timeout time.Duration) (time.Time, error) {
	deadline := time.Now().Add(timeout)
	for {
		w.mu.Lock()
		i, _ := slices.BinarySearchFunc(w.arrived, t0, func(a, t time.Time) int { return a.Compare(t) })
		var at time.Time
		if i < len(w.arrived) {
			at = w.arrived[i]
		}
		w.mu.Unlock()
		if !at.IsZero() {
			return at, nil
		}
		if time.Now().After(deadline) {
			return time.Time{}, fmt.Errorf("no event arrived in Kafka within %s", timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitAll waits until every event the writers committed arrived and returns when
// the last one did.
func (w *watcher) waitAll(ws *writers, timeout time.Duration) (time.Time, error) {
	ws.mu.Lock()
	want := make(map[string]bool, len(ws.committed))
	for id := range ws.committed {
		want[id] = true
	}
	ws.mu.Unlock()
	deadline := time.Now().Add(timeout)
	seen := 0
	var last time.Time
	for {
		w.mu.Lock()
		for ; seen < len(w.recs); seen++ {
			id := string(w.recs[seen].Headers["id"])
			if want[id] {
				delete(want, id)
				last = w.arrived[seen]
			}
		}
		w.mu.Unlock()
		if len(want) == 0 {
			return last, nil
		}
		if time.Now().After(deadline) {
			return last, fmt.Errorf("%d committed events not in Kafka after %s", len(want), timeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
