package main

import (
	"context"
	"fmt"
	"github.com/twmb/franz-go/pkg/kgo"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgoutbox/pgoutbox/internal/debeziumtest"
	"github.com/pgoutbox/pgoutbox/internal/jvm"
	"github.com/pgoutbox/pgoutbox/internal/kafkareal"
	"github.com/pgoutbox/pgoutbox/internal/pgtest"
)

// The debezium case drains each backlog case with Debezium's PostgreSQL
// connector and Outbox Event Router in Kafka Connect standalone, twice (Connect's
// producer defaults, then linger.ms and batch.size raised), and with pgoutbox, each
// into a fresh real Kafka broker (internal/kafkareal): the JVM needs a real broker,
// and pgoutbox is measured on the same kind for the comparison. It needs Java 17 and
// Maven (internal/jvm).

// debeziumRun is one drain of the debezium case.
type debeziumRun struct {
	label  string
	wall   time.Duration // process start → consumer holds every id
	first  time.Duration // process start → first record consumed
	rssKiB int64         // peak RSS (VmHWM) of the process
	cpu    time.Duration // its user+sys until the last event arrived
	tally  tally
}

// debeziumResult is the debezium case.
type debeziumResult struct {
	c    backlogCase
	runs []debeziumRun
}

// benchJVM are the JVM options of the broker and of Connect: a 1 GiB heap and
// otherwise the JVM's defaults (G1, both JIT tiers), as a deployment would run them.
var benchJVM = []string{"-Xms256m", "-Xmx1g", "-Djava.awt.headless=true"}

// debeziumTuned are the producer settings of the second Debezium run: batches that
// wait a little and may grow, as a tuned deployment would set them.
var debeziumTuned = map[string]string{"producer.linger.ms": "20", "producer.batch.size": "1048576"}

func runDebezium(ctx context.Context, cfg config, c backlogCase, say func(string, ...any)) (res debeziumResult, err error) {
	res.c = c
	// Before any setup: without Java or the jars the case fails at once, and says why.
	if err := jvm.Available(); err != nil {
		return res, fmt.Errorf("the debezium case needs Java 17+ and the Kafka and Debezium jars (make jvm resolves them from Maven Central): %w", err)
	}
	pg, err := startPostgres(ctx, cfg.sqlDir)
	if err != nil {
		return res, err
	}
	defer pg.Close()
	admin, err := pgx.Connect(ctx, pg.SuperURL(db))
	if err != nil {
		return res, err
	}
	defer admin.Close(context.Background())
	// Every slot starts before the backlog.
	for _, slot := range []string{"dbz_default", "dbz_tuned", "pgoutbox"} {
		if _, err := admin.Exec(ctx, `SELECT pg_create_logical_replication_slot($1, 'pgoutput')`, slot); err != nil {
			return res, fmt.Errorf("create slot %s: %w", slot, err)
		}
	}
	say("debezium: writing %d events in transactions of %d", c.events, c.perTx)
	if _, err := admin.Exec(ctx, `SET synchronous_commit = off`); err != nil {
		return res, err
	}
	if _, err := admin.Exec(ctx, `CALL bench_fill($1, $2)`, c.events, c.perTx); err != nil {
		return res, fmt.Errorf("write backlog: %w", err)
	}
	if _, err := admin.Exec(ctx, `CHECKPOINT`); err != nil {
		return res, err
	}
	expect, err := eventIDs(ctx, admin)
	if err != nil {
		return res, err
	}
	for _, r := range publishers {
		if r.slot == "pgoutbox" {
			r.label += " " + modeName(cfg.exactlyOnce)
		}
		run, err := drainOnRealKafka(ctx, cfg, pg, admin, expect, r.label, r.slot, r.worker, say)
		if err != nil {
			return res, fmt.Errorf("%s: %w", r.label, err)
		}
		say("debezium: %s %v (%s)", r.label, run.wall.Round(time.Millisecond), run.tally)
		res.runs = append(res.runs, run)
	}
	return res, nil
}

// drainOnRealKafka starts a fresh broker with the outbox topics, then Debezium (slot
// dbz_*) or pgoutbox (slot pgoutbox), and times it until every expected id arrived.
func drainOnRealKafka(ctx context.Context, cfg config, pg *pgtest.Cluster, admin *pgx.Conn, expect map[string]bool,
	label, slot string, worker map[string]string, say func(string, ...any)) (run debeziumRun, err error) {
	run.label = label
	broker, err := startRealBroker(ctx)
	if err != nil {
		return run, err
	}
	defer broker.Close()
	col, err := startCollector(broker.Brokers(), cfg.exactlyOnce, nil) // read_committed for pgoutbox --exactly-once; Debezium has no transactions
	if err != nil {
		return run, err
	}
	defer col.close()
	col.expectIDs(expect)

	pid, started, exited, stop, err := startOnRealKafka(ctx, cfg, pg, broker.Brokers(), slot, worker)
	if err != nil {
		return run, err
	}
	defer stop()
	hwm := sampleHWM(pid, 10*time.Millisecond)
	defer hwm.stop()
	if err := col.wait(ctx, exited, drainTimeout); err != nil {
		return run, err
	}
	run.wall = col.completeAt.Sub(started)
	run.first = col.first.Sub(started)
	if run.cpu, err = procCPU(pid); err != nil {
		return run, err
	}
	run.rssKiB = hwm.stop()
	time.Sleep(500 * time.Millisecond) // duplicates, if any, count too
	run.tally = col.tally()
	return run, nil
}

// startRealBroker starts a fresh Apache Kafka broker with the outbox topics, its
// transaction coordinator warmed up.
func startRealBroker(ctx context.Context) (*kafkareal.Broker, error) {
	broker, err := kafkareal.Start(ctx, kafkareal.Options{JVMArgs: benchJVM})
	if err != nil {
		return nil, err
	}
	tops := map[string]int{warmupTopic: 1}
	for t, n := range topics() {
		tops[t] = int(n)
	}
	if err := broker.CreateTopics(ctx, tops); err != nil {
		broker.Close()
		return nil, err
	}
	if err := warmBroker(ctx, broker.Brokers()); err != nil {
		broker.Close()
		return nil, err
	}
	return broker, nil
}

// warmupTopic is where warmBroker writes; no consumer of the bench reads it.
const warmupTopic = "bench.warmup"

// warmBroker has an idempotent producer write one record to a topic of its own, so
// that a fresh broker's transaction coordinator is loaded (on its first producer id
// a KRaft broker answers "coordinator load in progress", and the producer backs off
// for seconds) before the publisher under measurement starts.
func warmBroker(ctx context.Context, brokers string) error {
	cl, err := kgo.NewClient(kgo.SeedBrokers(strings.Split(brokers, ",")...))
	if err != nil {
		return err
	}
	defer cl.Close()
	wctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if err := cl.ProduceSync(wctx, &kgo.Record{Topic: warmupTopic, Value: []byte("warm")}).FirstErr(); err != nil {
		return fmt.Errorf("warm the broker up: %w", err)
	}
	return nil
}

// startOnRealKafka starts Debezium (slot dbz_*) in Kafka Connect, or pgoutbox (slot
// pgoutbox), publishing to brokers. It returns the process's pid and start time,
// pgoutbox's proc (nil for Debezium: the collector's wait watches it), and what
// stops it.
func startOnRealKafka(ctx context.Context, cfg config, pg *pgtest.Cluster, brokers, slot string, worker map[string]string) (int, time.Time, *proc, func(), error) {
	if strings.HasPrefix(slot, "dbz") {
		dir, err := os.MkdirTemp("", "bench-debezium-")
		if err != nil {
			return 0, time.Time{}, nil, nil, err
		}
		started := time.Now()
		c, err := debeziumtest.Start(ctx, debeziumtest.Options{
			Brokers: brokers, Dir: dir, Converter: debeziumtest.String,
			PGHost: "127.0.0.1", PGPort: pg.Port, PGUser: "postgres", PGDatabase: db,
			Slot: slot, Publication: "pgoutbox",
			// Debezium's own defaults, but for the existing publication.
			Connector: map[string]string{"publication.autocreate.mode": "disabled", "poll.interval.ms": "500"},
			Worker:    worker, JVMArgs: benchJVM,
		})
		if err != nil {
			os.RemoveAll(dir)
			return 0, time.Time{}, nil, nil, err
		}
		return c.Pid(), started, nil, func() { c.Close(); os.RemoveAll(dir) }, nil
	}
	dir, err := os.MkdirTemp("", "bench-pgoutbox-")
	if err != nil {
		return 0, time.Time{}, nil, nil, err
	}
	p, err := startProc(cfg.binary, append([]string{"--postgres-url", pg.URL(role, db), "--kafka-brokers", brokers,
		"--slot", slot, "--publication", "pgoutbox", "--checkpoint-file", filepath.Join(dir, "checkpoint"),
		"--log-format", "json"}, cfg.extra...)...)
	if err != nil {
		os.RemoveAll(dir)
		return 0, time.Time{}, nil, nil, err
	}
	return p.cmd.Process.Pid, p.started, p, func() { p.stop(40 * time.Second); os.RemoveAll(dir) }, nil
}

// debeziumLiveRun is one publisher serving the live load on real Kafka.
type debeziumLiveRun struct {
	label  string
	res    liveResult
	rssKiB int64
	cpu    time.Duration
}

// publishers of the debezium case, in the order they run.
var publishers = []struct {
	label, slot string
	worker      map[string]string
}{
	{"Debezium 3.6.1 (Connect producer defaults)", "dbz_default", nil},
	{"Debezium 3.6.1 (linger.ms=20, batch.size=1 MiB)", "dbz_tuned", debeziumTuned},
	{"pgoutbox", "pgoutbox", nil},
}

// runDebeziumLive serves the live load (liveRate one-event transactions a second)
// with each publisher, each in a cluster and on a real broker of its own.
func runDebeziumLive(ctx context.Context, cfg config, duration time.Duration, say func(string, ...any)) ([]debeziumLiveRun, error) {
	if err := jvm.Available(); err != nil {
		return nil, fmt.Errorf("the debezium case needs Java 17+ and the Kafka and Debezium jars (make jvm resolves them from Maven Central): %w", err)
	}
	var runs []debeziumLiveRun
	for _, pub := range publishers {
		label := pub.label
		if pub.slot == "pgoutbox" {
			label += " " + modeName(cfg.exactlyOnce)
		}
		say("debezium live: %s", label)
		run, err := liveOnRealKafka(ctx, cfg, label, pub.slot, pub.worker, duration, say)
		if err != nil {
			return runs, fmt.Errorf("%s: %w", label, err)
		}
		runs = append(runs, run)
	}
	return runs, nil
}

func liveOnRealKafka(ctx context.Context, cfg config, label, slot string, worker map[string]string, duration time.Duration, say func(string, ...any)) (run debeziumLiveRun, err error) {
	run.label = label
	run.res.rate, run.res.planned = liveRate, duration
	pg, err := startPostgres(ctx, cfg.sqlDir)
	if err != nil {
		return run, err
	}
	defer pg.Close()
	admin, err := pgx.Connect(ctx, pg.SuperURL(db))
	if err != nil {
		return run, err
	}
	defer admin.Close(context.Background())
	if _, err := admin.Exec(ctx, `SELECT pg_create_logical_replication_slot($1, 'pgoutput')`, slot); err != nil {
		return run, fmt.Errorf("create slot %s: %w", slot, err)
	}
	broker, err := startRealBroker(ctx)
	if err != nil {
		return run, err
	}
	defer broker.Close()
	col, lat, err := startLatencyCollector(broker.Brokers(), cfg.exactlyOnce && slot == "pgoutbox")
	if err != nil {
		return run, err
	}
	defer col.close()
	pid, _, exited, stop, err := startOnRealKafka(ctx, cfg, pg, broker.Brokers(), slot, worker)
	if err != nil {
		return run, err
	}
	defer stop()
	hwm := sampleHWM(pid, 10*time.Millisecond)
	defer hwm.stop()
	ids, err := measureLive(ctx, pg.SuperURL(db), admin, col, duration, liveLoad, &run.res, say)
	if err != nil {
		return run, err
	}
	col.expectIDs(ids)
	if err := col.wait(ctx, exited, 2*time.Minute); err != nil {
		return run, err
	}
	if run.cpu, err = procCPU(pid); err != nil {
		return run, err
	}
	run.rssKiB = hwm.stop()
	time.Sleep(500 * time.Millisecond) // duplicates, if any, count too
	col.close()
	run.res.tally = col.tally()
	run.res.latency, run.res.badValue = lat.sorted()
	return run, nil
}

// debeziumMarkdown renders the debezium case.
func (r *report) debeziumMarkdown() string {
	if len(r.debezium) == 0 {
		return ""
	}
	var b strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	p("## Debezium on the same backlog (real Kafka)")
	p("")
	p("Each backlog case again, in a cluster of its own: each run drains it from its own slot (all created before the backlog) into a fresh Apache Kafka 4.3 broker (one KRaft node, `internal/kafkareal`) with the same topics; timed from process start (the JVM's, for Debezium) until the independent consumer holds every event id.")
	p("")
	p("| case | run | s | ev/s | first event s | peak RSS MiB | CPU µs/event | consumer |")
	p("| --- | --- | ---: | ---: | ---: | ---: | ---: | --- |")
	for _, x := range r.debezium {
		n := float64(x.c.events)
		for _, run := range x.runs {
			p("| %s | %s | %.3f | %.0f | %.3f | %.1f | %.1f | %s%s |", x.c.label, run.label, run.wall.Seconds(), n/run.wall.Seconds(), run.first.Seconds(),
				float64(run.rssKiB)/1024, float64(run.cpu.Microseconds())/n, run.tally, okMark(run.tally))
		}
	}
	p("")
	if len(r.debeziumLive) > 0 {
		p("Under the live load (%d one-event transactions a second from %d connections, as in the live case), each publisher in a cluster and on a broker of its own:", liveRate, liveWriters)
		p("")
		p("| run | events | p50 | p90 | p99 | max | peak RSS MiB | CPU µs/event | consumer |")
		p("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
		for _, x := range r.debeziumLive {
			l := x.res.latency
			p("| %s | %d | %s | %s | %s | %s | %.1f | %.1f | %s%s |", x.label, x.res.events,
				ms(percentile(l, 0.50)), ms(percentile(l, 0.90)), ms(percentile(l, 0.99)), ms(percentile(l, 1)),
				float64(x.rssKiB)/1024, float64(x.cpu.Microseconds())/float64(max(1, x.res.events)), x.res.tally, okMark(x.res.tally))
		}
		p("")
		p("CPU per event is over the publisher's whole life, idle time and JVM start included.")
		p("")
	}
	p("Debezium runs in Kafka Connect 4.3 standalone (StringConverter, SimpleHeaderConverter, the Event Router's defaults, the connector's defaults but `publication.autocreate.mode=disabled` on the existing publication), JVM `%s` (otherwise the JVM's defaults), as is the broker's. CPU is the process's user+sys from /proc until the last event arrived, start-up included; peak RSS is its VmHWM.", strings.Join(benchJVM, " "))
	p("")
	return b.String()
}
