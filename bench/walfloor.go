package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
)

// floorLoad is the live-5k case's load: more than the live case's, where
// pgoutbox's CPU per event shows as latency, with four times the connections so
// the commits' fsyncs keep the pace on two busy cores.
var floorLoad = load{5000, 16}

// floorResult is one run of the live-5k case: the walsender's own latency
// floor under floorLoad, then pgoutbox under the same load on the same cluster.
type floorResult struct {
	exactlyOnce bool
	floor       walFloor
	pgoutbox    liveResult
}

// walFloor is what pg_recvlogical with test_decoding saw under a live load: the
// latency from INSERT to the decoded line on its standard output, which is the
// walsender's own (decoding, sending) plus a pipe. No publisher can beat it.
type walFloor struct {
	rate, events int
	planned      time.Duration
	wrote        time.Duration
	latency      []time.Duration // sorted
	commit       []time.Duration // INSERT+COMMIT round trips, sorted
	missing      int             // written but never decoded
	bad          int             // INSERT lines without an id or insert time
	cpu          time.Duration   // pg_recvlogical's user+sys
	walsender    time.Duration   // its walsender's CPU
	stopErr      error
}

// runLiveFloor runs the live-5k case in cfg's mode: the floor first, then
// pgoutbox, each alone on one fresh cluster.
func runLiveFloor(ctx context.Context, cfg config, duration time.Duration, say func(string, ...any)) (floorResult, error) {
	res := floorResult{exactlyOnce: cfg.exactlyOnce}
	pg, err := startPostgres(ctx, cfg.sqlDir)
	if err != nil {
		return res, err
	}
	defer pg.Close()
	url := pg.SuperURL(db)
	admin, err := pgx.Connect(ctx, url)
	if err != nil {
		return res, err
	}
	defer admin.Close(context.Background())
	res.floor, err = measureFloor(ctx, url, admin, duration, floorLoad, say)
	if err != nil {
		return res, fmt.Errorf("walsender floor: %w", err)
	}
	res.pgoutbox, _, err = liveOn(ctx, cfg, pg, duration, floorLoad, say)
	return res, err
}

// decodedLines collects test_decoding's output of outbox inserts as
// pg_recvlogical writes it, stamping each line when it arrives.
type decodedLines struct {
	mu      sync.Mutex
	partial []byte
	seen    map[string]bool
	latency []time.Duration
	bad     int
	warm    int // warm-up events seen
}

var (
	decodedID       = regexp.MustCompile(`\bid\[uuid\]:'([^']+)'`)
	decodedAggID    = regexp.MustCompile(`\baggregateid\[text\]:'([^']*)'`)
	decodedInserted = regexp.MustCompile(`"insertedAtUs": (\d+)`)
)

// Write takes pg_recvlogical's standard output.
func (d *decodedLines) Write(p []byte) (int, error) {
	at := time.Now()
	d.mu.Lock()
	defer d.mu.Unlock()
	d.partial = append(d.partial, p...)
	for {
		i := bytes.IndexByte(d.partial, '\n')
		if i < 0 {
			break
		}
		d.line(d.partial[:i], at)
		d.partial = d.partial[i+1:]
	}
	d.partial = slices.Clip(d.partial) // let consumed lines be collected
	return len(p), nil
}

func (d *decodedLines) line(l []byte, at time.Time) {
	if !bytes.HasPrefix(l, []byte("table public.outbox: INSERT:")) {
		return // BEGIN, COMMIT
	}
	id, agg := decodedID.FindSubmatch(l), decodedAggID.FindSubmatch(l)
	if id == nil || agg == nil {
		d.bad++
		return
	}
	d.seen[string(id[1])] = true
	if string(agg[1]) == warmupKey {
		d.warm++
		return
	}
	ins := decodedInserted.FindSubmatch(l)
	if ins == nil {
		d.bad++
		return
	}
	us, err := strconv.ParseInt(string(ins[1]), 10, 64)
	if err != nil {
		d.bad++
		return
	}
	d.latency = append(d.latency, at.Sub(time.UnixMicro(us)))
}

// waitFor waits until cond holds over d, polling.
func (d *decodedLines) waitFor(ctx context.Context, p *proc, timeout time.Duration, what string, cond func() bool) error {
	deadline := time.Now().Add(timeout)
	for {
		d.mu.Lock()
		ok := cond()
		d.mu.Unlock()
		if ok {
			return nil
		}
		if !p.running() {
			return fmt.Errorf("pg_recvlogical exited waiting for %s: %v; output tail:\n%s", what, p.err, p.out.tail(20))
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not decoded after %v", what, timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// measureFloor streams a test_decoding slot with pg_recvlogical while ld is
// written, and measures each event's latency from its INSERT to its line.
func measureFloor(ctx context.Context, url string, admin *pgx.Conn, duration time.Duration, ld load, say func(string, ...any)) (res walFloor, err error) {
	res.rate, res.planned = ld.rate, duration
	const slot = "floor"
	if _, err := admin.Exec(ctx, `SELECT pg_create_logical_replication_slot($1, 'test_decoding')`, slot); err != nil {
		return res, fmt.Errorf("create slot: %w", err)
	}
	defer func() {
		if _, derr := admin.Exec(context.Background(), `SELECT pg_drop_replication_slot($1)`, slot); derr != nil && err == nil {
			err = fmt.Errorf("drop slot: %w", derr)
		}
	}()
	out := &decodedLines{seen: map[string]bool{}}
	p, err := startProcOut("pg_recvlogical", out, "-d", url, "--slot", slot, "--start",
		"-o", "include-xids=0", "-o", "skip-empty-xacts=1", "-f", "-")
	if err != nil {
		return res, err
	}
	defer p.kill()
	pid, err := waitActive(ctx, admin, slot, p, time.Minute)
	if err != nil {
		return res, err
	}
	walsender := sampleCPU(pid, 10*time.Millisecond)
	defer walsender.stop()
	for i, agg := range aggregateTypes {
		if _, err := admin.Exec(ctx, liveInsert, agg, warmupKey, eventTypes[i], i); err != nil {
			return res, fmt.Errorf("warm-up insert: %w", err)
		}
	}
	if err := out.waitFor(ctx, p, time.Minute, "warm-up events", func() bool { return out.warm == len(aggregateTypes) }); err != nil {
		return res, err
	}
	say("walsender floor: pg_recvlogical (test_decoding), %d events/s for %v from %d connections", ld.rate, duration, ld.writers)
	ids, commit, wrote, err := writeLive(ctx, url, duration, ld)
	if err != nil {
		return res, err
	}
	res.events, res.commit, res.wrote = len(ids), commit, wrote
	all := func() bool {
		for id := range ids {
			if !out.seen[id] {
				return false
			}
		}
		return true
	}
	waitErr := out.waitFor(ctx, p, time.Minute, "every event", all)
	res.walsender = time.Duration(walsender.stop())
	// pg_recvlogical ends cleanly on SIGINT (SIGTERM would kill it).
	_ = p.cmd.Process.Signal(os.Interrupt)
	select {
	case <-p.exited:
	case <-time.After(10 * time.Second):
	}
	res.stopErr = p.stop(time.Second)
	_, res.cpu = p.usage()
	out.mu.Lock()
	defer out.mu.Unlock()
	for id := range ids {
		if !out.seen[id] {
			res.missing++
		}
	}
	res.bad = out.bad
	res.latency = slices.Clone(out.latency)
	slices.Sort(res.latency)
	if waitErr != nil {
		return res, waitErr
	}
	return res, nil
}

// floorMarkdown is the live-5k section of the report.
func (r *report) floorMarkdown() string {
	if len(r.floor) == 0 {
		return ""
	}
	var b bytes.Buffer
	p := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	x0 := r.floor[0]
	p("## Live at %s ev/s beside the walsender's own floor", thousands(x0.floor.rate))
	p("")
	p("Each run: a fresh cluster; first `pg_recvlogical --slot floor -o include-xids=0 -o skip-empty-xacts=1 -f -` on a `test_decoding` slot alone, its output parsed as it arrives (the INSERT's insertedAtUs → the moment the decoded line reached this process through a pipe), then pgoutbox alone on the same cluster under the same load (insert → independent consumer, as in the live case). The floor is what the walsender itself costs; a publisher can only add to it.")
	p("")
	p("| mode | run | events | p50 | p90 | p99 | max | p99 ÷ floor's | client CPU µs/event |")
	p("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
	for _, x := range r.floor {
		f, o := x.floor, x.pgoutbox
		p("| %s | walsender floor (pg_recvlogical, test_decoding) | %d | %s | %s | %s | %s | 1.00 | %.1f |", modeName(x.exactlyOnce),
			f.events, ms(percentile(f.latency, 0.50)), ms(percentile(f.latency, 0.90)), ms(percentile(f.latency, 0.99)), ms(percentile(f.latency, 1)),
			float64(f.cpu.Microseconds())/float64(max(1, f.events)))
		ratio := "—"
		if fp := percentile(f.latency, 0.99); fp > 0 {
			ratio = fmt.Sprintf("%.2f", float64(percentile(o.latency, 0.99))/float64(fp))
		}
		p("| %s | pgoutbox | %d | %s | %s | %s | %s | %s | %.1f |", modeName(x.exactlyOnce),
			o.events, ms(percentile(o.latency, 0.50)), ms(percentile(o.latency, 0.90)), ms(percentile(o.latency, 0.99)), ms(percentile(o.latency, 1)),
			ratio, float64(o.cpu.Microseconds())/float64(max(1, o.events)))
	}
	p("")
	for _, x := range r.floor {
		f, o := x.floor, x.pgoutbox
		p("- %s: floor %d events written in %v (INSERT+COMMIT p50 %s, p99 %s), %d missing, %d unparsed lines, walsender CPU %.2f s, %s; pgoutbox %d events written in %v (INSERT+COMMIT p50 %s, p99 %s), pgoutbox CPU %.2f s over its life, %s%s%s.",
			modeName(x.exactlyOnce), f.events, f.wrote.Round(time.Millisecond), ms(percentile(f.commit, 0.5)), ms(percentile(f.commit, 0.99)),
			f.missing, f.bad, f.walsender.Seconds(), recvlogicalExit(f.stopErr),
			o.events, o.wrote.Round(time.Millisecond), ms(percentile(o.commit, 0.5)), ms(percentile(o.commit, 0.99)),
			o.cpu.Seconds(), o.tally, okMark(o.tally), exitNote(o.stopErr))
	}
	p("")
	p("CPU per event is over each client's whole life, idle time included: at a fixed rate it shows the cost of waiting as much as of working.")
	p("")
	return b.String()
}

// recvlogicalExit says how pg_recvlogical ended.
func recvlogicalExit(err error) string {
	if err == nil {
		return "pg_recvlogical exited 0 on SIGINT"
	}
	return "pg_recvlogical stop: " + strings.ReplaceAll(err.Error(), "\n", " ")
}
