package main

import (
	"context"
	"fmt"
	"os"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgoutbox/pgoutbox/internal/kafkatest"
	"github.com/pgoutbox/pgoutbox/internal/pgtest"
)

// backlogCase is a backlog shape: events written in transactions of perTx.
type backlogCase struct {
	name   string
	label  string
	events int
	perTx  int
}

// backlogResult is one row of the backlog table plus what explains it.
type backlogResult struct {
	c           backlogCase
	exactlyOnce bool
	server      string // PostgreSQL version()

	// recvlogical is the faster of two pg_recvlogical runs, on slot twin
	// before pgoutbox and on slot twin2 after it, so the order of the runs
	// cannot favour pgoutbox.
	recvlogical  time.Duration
	recvRuns     [2]recvRun
	pgoutbox     time.Duration // pgoutbox start → consumer holds every id
	firstEvent   time.Duration // pgoutbox start → first record consumed
	rssKiB       int64         // peak RSS: VmHWM, sampled until exit
	rusageRSSKiB int64         // ru_maxrss, inflated by this process's own peak (see procHWM)
	cpu          time.Duration // pgoutbox user+sys
	walsender    time.Duration // CPU of the walsender serving pgoutbox
	benchCPU     time.Duration // this process (kfake + consumer) during the pgoutbox run
	busy         time.Duration // machine-wide CPU busy time during the pgoutbox run
	produced     produceCount  // what pgoutbox sent until every event arrived
	payloadBytes float64       // average payload size as text
	walBytes     int64         // WAL written by the backlog
	tally        tally
	stopErr      error // pgoutbox's exit on SIGTERM, if not clean
}

// drainTimeout bounds each timed drain; a healthy run takes seconds.
const drainTimeout = 5 * time.Minute

// runBacklog builds c's backlog in a fresh cluster with pgoutbox stopped, then
// times pg_recvlogical on a twin slot and pgoutbox on its own slot, one after
// the other so they do not compete for the CPUs.
func runBacklog(ctx context.Context, cfg config, c backlogCase, say func(string, ...any)) (res backlogResult, err error) {
	res.c, res.exactlyOnce = c, cfg.exactlyOnce
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

	if err := admin.QueryRow(ctx, `SELECT version()`).Scan(&res.server); err != nil {
		return res, err
	}
	// Every slot starts at the same point, before the backlog.
	for _, slot := range []string{"pgoutbox", "twin", "twin2"} {
		if _, err := admin.Exec(ctx, `SELECT pg_create_logical_replication_slot($1, 'pgoutput')`, slot); err != nil {
			return res, fmt.Errorf("create slot %s: %w", slot, err)
		}
	}
	var startLSN int64
	if err := admin.QueryRow(ctx, `SELECT pg_current_wal_insert_lsn() - '0/0'`).Scan(&startLSN); err != nil {
		return res, err
	}
	say("%s: writing %d events in transactions of %d", c.name, c.events, c.perTx)
	t0 := time.Now()
	// The backlog is setup, not measured: skip the per-commit fsync.
	if _, err := admin.Exec(ctx, `SET synchronous_commit = off`); err != nil {
		return res, err
	}
	if _, err := admin.Exec(ctx, `CALL bench_fill($1, $2)`, c.events, c.perTx); err != nil {
		return res, fmt.Errorf("write backlog: %w", err)
	}
	var endpos string
	if err := admin.QueryRow(ctx, `SELECT pg_current_wal_insert_lsn()::text, pg_current_wal_insert_lsn() - '0/0'`).Scan(&endpos, &res.walBytes); err != nil {
		return res, err
	}
	res.walBytes -= startLSN
	// Flush WAL and dirty pages now rather than during a timed drain.
	if _, err := admin.Exec(ctx, `CHECKPOINT`); err != nil {
		return res, err
	}
	expect, err := eventIDs(ctx, admin)
	if err != nil {
		return res, err
	}
	if len(expect) != c.events {
		return res, fmt.Errorf("backlog holds %d events, want %d", len(expect), c.events)
	}
	if err := admin.QueryRow(ctx, `SELECT avg(octet_length(payload::text)) FROM outbox`).Scan(&res.payloadBytes); err != nil {
		return res, err
	}
	say("%s: backlog written in %v (%.0f MiB of WAL, end %s)", c.name, time.Since(t0).Round(time.Millisecond), float64(res.walBytes)/(1<<20), endpos)

	if res.recvRuns[0], err = timeRecvlogical(ctx, pg.URL(role, db), "twin", endpos, admin); err != nil {
		return res, err
	}
	say("%s: pg_recvlogical (slot twin) %v", c.name, res.recvRuns[0].wall.Round(time.Millisecond))
	if err := timePgoutbox(ctx, cfg, c, expect, pg, admin, &res); err != nil {
		return res, err
	}
	say("%s: pgoutbox %v (%s)", c.name, res.pgoutbox.Round(time.Millisecond), res.tally)
	if res.recvRuns[1], err = timeRecvlogical(ctx, pg.URL(role, db), "twin2", endpos, admin); err != nil {
		return res, err
	}
	say("%s: pg_recvlogical (slot twin2) %v", c.name, res.recvRuns[1].wall.Round(time.Millisecond))
	res.recvlogical = min(res.recvRuns[0].wall, res.recvRuns[1].wall)
	return res, nil
}

// recvRun is one timed pg_recvlogical drain.
type recvRun struct {
	wall      time.Duration // start → exit at endpos
	walsender time.Duration // CPU of the walsender serving it
	cpu       time.Duration // pg_recvlogical's own user+sys
	busy      time.Duration // machine-wide CPU busy time during the run
}

// eventIDs returns the ids of every event in the outbox table.
func eventIDs(ctx context.Context, conn *pgx.Conn) (map[string]bool, error) {
	rows, err := conn.Query(ctx, `SELECT id::text FROM outbox`)
	if err != nil {
		return nil, fmt.Errorf("read event ids: %w", err)
	}
	ids := make(map[string]bool)
	var id string
	_, err = pgx.ForEachRow(rows, []any{&id}, func() error {
		ids[id] = true
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read event ids: %w", err)
	}
	return ids, nil
}

// timeRecvlogical times pg_recvlogical on slot from start until it exits at
// endpos: it has then received everything up to the backlog's end.
func timeRecvlogical(ctx context.Context, url, slot, endpos string, admin *pgx.Conn) (recvRun, error) {
	var run recvRun
	busy0, _ := machineCPU()
	p, err := startProc("pg_recvlogical", "-d", url, "--slot", slot, "--start",
		"-o", "proto_version=1", "-o", "publication_names=pgoutbox",
		"-f", "/dev/null", "--no-loop", "--endpos", endpos)
	if err != nil {
		return run, err
	}
	defer p.kill()
	var sampler *sampler
	if pid, err := waitActive(ctx, admin, slot, p, time.Minute); err == nil {
		sampler = sampleCPU(pid, 10*time.Millisecond)
	} else if p.running() {
		return run, err
	} // else it finished before we saw the walsender: no CPU reading
	select {
	case <-p.exited:
	case <-ctx.Done():
		return run, ctx.Err()
	case <-time.After(drainTimeout):
		return run, fmt.Errorf("pg_recvlogical did not reach %s within %v; output tail:\n%s", endpos, drainTimeout, p.out.tail(20))
	}
	run.wall = time.Since(p.started)
	busy1, _ := machineCPU()
	run.busy = busy1 - busy0
	if sampler != nil {
		run.walsender = time.Duration(sampler.stop())
	}
	if p.err != nil {
		return run, fmt.Errorf("pg_recvlogical: %w; output tail:\n%s", p.err, p.out.tail(20))
	}
	_, run.cpu = p.usage()
	return run, nil
}

// timePgoutbox times pgoutbox from process start until the independent
// consumer holds every expected id, then stops it with SIGTERM and reads its
// rusage.
func timePgoutbox(ctx context.Context, cfg config, c backlogCase, expect map[string]bool, pg *pgtest.Cluster, admin *pgx.Conn, res *backlogResult) error {
	kafka, produced, err := startKafka()
	if err != nil {
		return err
	}
	defer kafka.Close()
	col, err := startCollector(kafkatest.Brokers(kafka), cfg.exactlyOnce, nil)
	if err != nil {
		return err
	}
	defer col.close()
	col.expectIDs(expect)
	dir, err := os.MkdirTemp("", "pgoutbox-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)

	var before syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &before)
	busy0, _ := machineCPU()
	p, err := startPgoutbox(cfg, pg, kafka, dir)
	if err != nil {
		return err
	}
	defer p.kill()
	hwm := sampleHWM(p.cmd.Process.Pid, 10*time.Millisecond)
	defer hwm.stop()
	pid, err := waitActive(ctx, admin, "pgoutbox", p, time.Minute)
	if err != nil {
		return err
	}
	walsender := sampleCPU(pid, 10*time.Millisecond)
	defer walsender.stop()
	if err := col.wait(ctx, p, drainTimeout); err != nil {
		return err
	}
	res.pgoutbox = col.completeAt.Sub(p.started)
	res.firstEvent = col.first.Sub(p.started)
	res.produced = produced.snapshot()
	busy1, _ := machineCPU()
	res.busy = busy1 - busy0
	var after syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &after)
	res.benchCPU = time.Duration(after.Utime.Nano() + after.Stime.Nano() - before.Utime.Nano() - before.Stime.Nano())
	res.walsender = time.Duration(walsender.stop())

	res.stopErr = p.stop(40 * time.Second)
	res.rssKiB = hwm.wait()
	res.rusageRSSKiB, res.cpu = p.usage()
	// Records that arrive after the last expected one (duplicates) count
	// too: give the consumer a moment to read what a shutdown flushed.
	time.Sleep(500 * time.Millisecond)
	res.tally = col.tally()
	return nil
}
