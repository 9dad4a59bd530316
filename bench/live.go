package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"golang.org/x/sync/errgroup"

	"github.com/pgoutbox/pgoutbox/internal/kafkatest"
	"github.com/pgoutbox/pgoutbox/internal/pgtest"
)

const (
	// liveRate is the steady event rate of the live case, in events/s.
	liveRate = 2000
	// liveWriters is how many connections share liveRate; each commit
	// waits for its WAL fsync (synchronous_commit=on), so one connection
	// could not keep the pace.
	liveWriters = 4
	// warmupKey marks the events that warm pgoutbox's producer up before
	// the measured period; they are not counted.
	warmupKey = "warmup"
)

// load is a live write load: rate one-event transactions a second from writers
// connections.
type load struct{ rate, writers int }

// liveLoad is the live case's load.
var liveLoad = load{liveRate, liveWriters}

// liveInsert writes one event in its own transaction. The payload carries
// clock_timestamp() taken in the INSERT, so the measured latency includes
// the commit and its WAL fsync.
const liveInsert = `INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload)
VALUES (gen_random_uuid(), $1, $2, $3,
  bench_payload($4) || jsonb_build_object('insertedAtUs', (extract(epoch FROM clock_timestamp()) * 1000000)::bigint))
RETURNING id::text`

// liveResult is the live latency row.
type liveResult struct {
	exactlyOnce  bool
	server       string // PostgreSQL version()
	rate         int
	planned      time.Duration
	wrote        time.Duration // how long writing actually took
	events       int
	latency      []time.Duration // arrival − insert time, sorted
	commit       []time.Duration // client round trip of each INSERT (autocommit), sorted
	rssKiB       int64           // peak RSS: VmHWM, sampled until exit
	rusageRSSKiB int64           // ru_maxrss, inflated by this process's own peak (see procHWM)
	cpu          time.Duration
	tally        tally
	stopErr      error
	badValue     int           // records whose payload had no insert time
	busy         time.Duration // machine-wide CPU busy time while writing
	produced     produceCount  // what pgoutbox sent, warm-up included
}

// runLive runs pgoutbox against a durable cluster, writes liveRate events/s
// of one-event transactions for duration, and measures each event's latency
// from its INSERT to its arrival at the independent consumer.
func runLive(ctx context.Context, cfg config, duration time.Duration, say func(string, ...any)) (liveResult, error) {
	pg, err := startPostgres(ctx, cfg.sqlDir)
	if err != nil {
		return liveResult{}, err
	}
	defer pg.Close()
	res, _, err := liveOn(ctx, cfg, pg, duration, liveLoad, say)
	return res, err
}

// liveOn runs pgoutbox against pg under the load ld, and returns the result and
// the tail of pgoutbox's log.
func liveOn(ctx context.Context, cfg config, pg *pgtest.Cluster, duration time.Duration, ld load, say func(string, ...any)) (res liveResult, log string, err error) {
	res.rate, res.planned, res.exactlyOnce = ld.rate, duration, cfg.exactlyOnce
	admin, err := pgx.Connect(ctx, pg.SuperURL(db))
	if err != nil {
		return res, "", err
	}
	defer admin.Close(context.Background())
	if err := admin.QueryRow(ctx, `SELECT version()`).Scan(&res.server); err != nil {
		return res, "", err
	}
	kafka, produced, err := startKafka()
	if err != nil {
		return res, "", err
	}
	defer kafka.Close()
	col, lat, err := startLatencyCollector(kafkatest.Brokers(kafka), cfg.exactlyOnce)
	if err != nil {
		return res, "", err
	}
	defer col.close()
	dir, err := os.MkdirTemp("", "pgoutbox-bench-")
	if err != nil {
		return res, "", err
	}
	defer os.RemoveAll(dir)

	p, err := startPgoutbox(cfg, pg, kafka, dir)
	if err != nil {
		return res, "", err
	}
	defer p.kill()
	hwm := sampleHWM(p.cmd.Process.Pid, 10*time.Millisecond)
	defer hwm.stop()
	if _, err := waitActive(ctx, admin, "pgoutbox", p, time.Minute); err != nil {
		return res, "", err
	}
	ids, err := measureLive(ctx, pg.SuperURL(db), admin, col, duration, ld, &res, say)
	if err != nil {
		return res, "", err
	}
	col.expectIDs(ids)
	if err := col.wait(ctx, p, time.Minute); err != nil {
		return res, "", err
	}
	res.produced = produced.snapshot()
	res.stopErr = p.stop(40 * time.Second)
	res.rssKiB = hwm.wait()
	res.rusageRSSKiB, res.cpu = p.usage()
	time.Sleep(500 * time.Millisecond) // let late duplicates arrive
	col.close()
	res.tally = col.tally()
	res.latency, res.badValue = lat.sorted()
	return res, p.out.tail(200), nil
}

// latencies are what a latency collector measured: arrival − insert time of every
// measured record, and how many records had no insert time.
type latencies struct {
	d   []time.Duration // written by the consumer goroutine only
	bad int
}

// sorted returns the latencies in order; call it after the collector closed.
func (l *latencies) sorted() ([]time.Duration, int) {
	slices.Sort(l.d)
	return l.d, l.bad
}

// startLatencyCollector is a collector that measures each record's latency from the
// insert time in its payload; warm-up records are not measured.
func startLatencyCollector(brokers string, readCommitted bool) (*collector, *latencies, error) {
	lat := &latencies{}
	col, err := startCollector(brokers, readCommitted, func(r kafkatest.Record, at time.Time) {
		if string(r.Key) == warmupKey {
			return
		}
		var v struct {
			InsertedAtUs int64 `json:"insertedAtUs"`
		}
		if json.Unmarshal(r.Value, &v) != nil || v.InsertedAtUs == 0 {
			lat.bad++
			return
		}
		lat.d = append(lat.d, at.Sub(time.UnixMicro(v.InsertedAtUs)))
	})
	return col, lat, err
}

// measureLive writes one warm-up event per topic and waits for them, so the
// publisher's first-use costs (topic metadata, producer id) are not in the measured
// period; then it writes the live load and returns every id it wrote (warm-up
// included), filling res's writer side.
func measureLive(ctx context.Context, url string, admin *pgx.Conn, col *collector, duration time.Duration, ld load, res *liveResult, say func(string, ...any)) (map[string]bool, error) {
	warm := make([]string, len(aggregateTypes))
	for i, agg := range aggregateTypes {
		if err := admin.QueryRow(ctx, liveInsert, agg, warmupKey, eventTypes[i], i).Scan(&warm[i]); err != nil {
			return nil, fmt.Errorf("warm-up insert: %w", err)
		}
	}
	if err := col.waitRecords(ctx, len(aggregateTypes), 2*time.Minute); err != nil {
		return nil, fmt.Errorf("warm-up: %w", err)
	}
	say("live: %d events/s for %v from %d connections", ld.rate, duration, ld.writers)
	busy0, _ := machineCPU()
	ids, commit, wrote, err := writeLive(ctx, url, duration, ld)
	if err != nil {
		return nil, err
	}
	busy1, _ := machineCPU()
	res.busy = busy1 - busy0
	res.wrote, res.events, res.commit = wrote, len(ids), commit
	for _, id := range warm {
		ids[id] = true // checked like the others, not in the latency
	}
	return ids, nil
}

// writeLive inserts events at ld's rate for duration from its writers
// connections. Each writer keeps a fixed schedule and catches up when a
// commit was slow, so the average rate holds. It returns the event ids and the
// sorted INSERT round trips.
func writeLive(ctx context.Context, url string, duration time.Duration, ld load) (map[string]bool, []time.Duration, time.Duration, error) {
	var (
		mu     sync.Mutex
		ids    = make(map[string]bool)
		commit []time.Duration
	)
	interval := time.Second / time.Duration(ld.rate)
	writers := ld.writers
	t0 := time.Now().Add(50 * time.Millisecond)
	g, gctx := errgroup.WithContext(ctx)
	for w := range writers {
		g.Go(func() error {
			conn, err := pgx.Connect(gctx, url)
			if err != nil {
				return err
			}
			defer conn.Close(context.Background())
			var mine []string
			var rtts []time.Duration
			for n := w; ; n += writers {
				due := t0.Add(time.Duration(n) * interval)
				if due.Sub(t0) >= duration {
					break
				}
				if d := time.Until(due); d > 0 {
					select {
					case <-gctx.Done():
						return gctx.Err()
					case <-time.After(d):
					}
				}
				i := n % len(aggregateTypes)
				var id string
				start := time.Now()
				err := conn.QueryRow(gctx, liveInsert, aggregateTypes[i], fmt.Sprint((n*7919)%1000), eventTypes[i], n).Scan(&id)
				if err != nil {
					return fmt.Errorf("live insert: %w", err)
				}
				rtts = append(rtts, time.Since(start))
				mine = append(mine, id)
			}
			mu.Lock()
			defer mu.Unlock()
			for _, id := range mine {
				ids[id] = true
			}
			commit = append(commit, rtts...)
			return nil
		})
	}
	err := g.Wait()
	wrote := time.Since(t0)
	slices.Sort(commit)
	return ids, commit, wrote, err
}

// percentile is the nearest-rank q-quantile of sorted ds.
func percentile(ds []time.Duration, q float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	i := int(q*float64(len(ds))+0.5) - 1
	return ds[max(0, min(i, len(ds)-1))]
}
