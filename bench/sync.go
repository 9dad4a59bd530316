package main

import (
	"context"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/pgoutbox/pgoutbox/internal/pgtest"
)

// syncStandby is the live-sync case's synchronous standby (application_name and
// physical slot).
const syncStandby = "bench_standby"

// syncWriters is how many connections share liveRate in the live-sync case: a
// commit waits for the standby too (about 2.5 ms here), so the live case's
// liveWriters could not keep the pace.
const syncWriters = 8

// syncResult is one run of the live-sync case: the live case against a primary
// whose commits wait for a synchronous standby on the same machine, with pgoutbox's
// --sync-guard on or off.
type syncResult struct {
	guard string
	liveResult
}

// runLiveSync runs the live case twice against a primary with a synchronous
// standby (a real one, made by pg_basebackup, acknowledging as fast as this machine
// lets it): --sync-guard off, then on. The difference is what the guard costs: each
// transaction waits for pg_current_snapshot() to show it finished.
func runLiveSync(ctx context.Context, cfg config, duration time.Duration, say func(string, ...any)) ([]syncResult, error) {
	var out []syncResult
	for _, guard := range []string{"off", "on"} {
		say("live-sync: --sync-guard %s", guard)
		r, err := runLiveSyncOnce(ctx, cfg, guard, duration, say)
		if err != nil {
			return out, fmt.Errorf("--sync-guard %s: %w", guard, err)
		}
		out = append(out, syncResult{guard: guard, liveResult: r})
	}
	return out, nil
}

// startSyncPostgres starts a durable primary whose commits wait for one
// synchronous standby, the standby, and the schema as startPostgres has it.
func startSyncPostgres(ctx context.Context, sqlDir string) (primary, standby *pgtest.Cluster, err error) {
	settings := maps.Clone(pgSettings)
	settings["synchronous_standby_names"] = syncStandby
	settings["synchronous_commit"] = "on"
	primary, err = pgtest.Start(ctx, pgtest.Options{Durable: true, Settings: settings})
	if err != nil {
		return nil, nil, err
	}
	standby, err = pgtest.StartStandby(ctx, primary, pgtest.StandbyOptions{Name: syncStandby})
	if err != nil {
		primary.Close()
		return nil, nil, err
	}
	fail := func(err error) (*pgtest.Cluster, *pgtest.Cluster, error) {
		standby.Close()
		primary.Close()
		return nil, nil, err
	}
	if err := primary.WaitStreaming(ctx, syncStandby, "sync"); err != nil {
		return fail(err)
	}
	for _, f := range []string{"outbox.sql", "publication.sql", "role.sql"} {
		sql, err := os.ReadFile(filepath.Join(sqlDir, f))
		if err != nil {
			return fail(fmt.Errorf("read schema: %w", err))
		}
		if err := primary.Exec(ctx, db, string(sql)); err != nil {
			return fail(fmt.Errorf("%s: %w", f, err))
		}
	}
	if err := primary.Exec(ctx, db, benchSQL); err != nil {
		return fail(fmt.Errorf("bench helpers: %w", err))
	}
	return primary, standby, nil
}

// runLiveSyncOnce is the live case (liveOn) against startSyncPostgres's primary.
func runLiveSyncOnce(ctx context.Context, cfg config, guard string, duration time.Duration, say func(string, ...any)) (liveResult, error) {
	cfg.extra = append([]string{"--sync-guard", guard}, cfg.extra...)
	pg, standby, err := startSyncPostgres(ctx, cfg.sqlDir)
	if err != nil {
		return liveResult{}, err
	}
	defer pg.Close()
	defer standby.Close()
	say("live-sync: commits wait for the synchronous standby")
	res, log, err := liveOn(ctx, cfg, pg, duration, load{liveRate, syncWriters}, say)
	if err != nil {
		return res, err
	}
	if strings.Contains(log, "sync guard on") != (guard == "on") {
		return res, fmt.Errorf("pgoutbox's log does not match --sync-guard %s:\n%s", guard, log)
	}
	return res, nil
}

// syncMarkdown renders the live-sync runs.
func (r *report) syncMarkdown() string {
	if len(r.liveSync) == 0 {
		return ""
	}
	var b strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	p("## Live latency with a synchronous standby")
	p("")
	p("The live case against a primary with `synchronous_standby_names` naming a real standby on the same machine (pg_basebackup, streaming, durable like the primary) and `synchronous_commit=on`: every commit waits for the standby's flush. With `--sync-guard on` pgoutbox publishes a transaction only once `pg_current_snapshot()` shows it finished, i.e. once the standby confirmed it.")
	p("")
	p("| --sync-guard | mode | rate | events | p50 | p90 | p99 | max | commit p50 | commit p99 | pgoutbox CPU µs/event | correctness |")
	p("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
	for _, x := range r.liveSync {
		p("| %s | %s | %.0f ev/s | %d | %s | %s | %s | %s | %s | %s | %.1f | %s%s |", x.guard, modeName(x.exactlyOnce),
			float64(x.events)/x.wrote.Seconds(), x.events,
			ms(percentile(x.latency, 0.50)), ms(percentile(x.latency, 0.90)), ms(percentile(x.latency, 0.99)), ms(percentile(x.latency, 1)),
			ms(percentile(x.commit, 0.5)), ms(percentile(x.commit, 0.99)),
			float64(x.cpu.Microseconds())/float64(max(1, x.events)), x.tally, okMark(x.tally))
	}
	p("")
	p("The rate column is what the writers achieved (target %d ev/s from %d connections, more than the live case's %d: each commit also waits for the standby). Latency is insert → independent consumer as in the live case; with the guard it includes the wait for the standby, which the committing client waits for too (commit columns: INSERT+COMMIT round trip).", liveRate, syncWriters, liveWriters)
	p("")
	return b.String()
}
