package main

import (
	"context"
	"fmt"
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
	for _, r := range []struct {
		label, slot string
		worker      map[string]string
	}{
		{"Debezium 3.6.1 (Connect producer defaults)", "dbz_default", nil},
		{"Debezium 3.6.1 (linger.ms=20, batch.size=1 MiB)", "dbz_tuned", debeziumTuned},
		{"pgoutbox " + modeName(cfg.exactlyOnce), "pgoutbox", nil},
	} {
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
	broker, err := kafkareal.Start(ctx, kafkareal.Options{JVMArgs: benchJVM})
	if err != nil {
		return run, err
	}
	defer broker.Close()
	tops := map[string]int{}
	for t, n := range topics() {
		tops[t] = int(n)
	}
	if err := broker.CreateTopics(ctx, tops); err != nil {
		return run, err
	}
	col, err := startCollector(broker.Brokers(), cfg.exactlyOnce, nil) // read_committed for pgoutbox --exactly-once; Debezium has no transactions
	if err != nil {
		return run, err
	}
	defer col.close()
	col.expectIDs(expect)

	var pid int
	var started time.Time
	var exited *proc // pgoutbox, for the collector's wait
	if strings.HasPrefix(slot, "dbz") {
		dir, err := os.MkdirTemp("", "bench-debezium-")
		if err != nil {
			return run, err
		}
		defer os.RemoveAll(dir)
		started = time.Now()
		c, err := debeziumtest.Start(ctx, debeziumtest.Options{
			Brokers: broker.Brokers(), Dir: dir, Converter: debeziumtest.String,
			PGHost: "127.0.0.1", PGPort: pg.Port, PGUser: "postgres", PGDatabase: db,
			Slot: slot, Publication: "pgoutbox",
			// Debezium's own defaults, but for the existing publication.
			Connector: map[string]string{"publication.autocreate.mode": "disabled", "poll.interval.ms": "500"},
			Worker:    worker, JVMArgs: benchJVM,
		})
		if err != nil {
			return run, err
		}
		defer c.Close()
		pid = c.Pid()
	} else {
		dir, err := os.MkdirTemp("", "bench-pgoutbox-")
		if err != nil {
			return run, err
		}
		defer os.RemoveAll(dir)
		p, err := startProc(cfg.binary, append([]string{"--postgres-url", pg.URL(role, db), "--kafka-brokers", broker.Brokers(),
			"--slot", slot, "--publication", "pgoutbox", "--checkpoint-file", filepath.Join(dir, "checkpoint"),
			"--log-format", "json"}, cfg.extra...)...)
		if err != nil {
			return run, err
		}
		defer p.stop(40 * time.Second)
		pid, started, exited = p.cmd.Process.Pid, p.started, p
	}
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
	p("Debezium runs in Kafka Connect 4.3 standalone (StringConverter, SimpleHeaderConverter, the Event Router's defaults, the connector's defaults but `publication.autocreate.mode=disabled` on the existing publication), JVM `%s` (otherwise the JVM's defaults), as is the broker's. CPU is the process's user+sys from /proc until the last event arrived, start-up included; peak RSS is its VmHWM.", strings.Join(benchJVM, " "))
	p("")
	return b.String()
}
